//! `/openapi/v2` in the protobuf encoding client-go asks for first
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`): gnostic's `openapi.v2`
//! messages, which kube-openapi serves next to the JSON. kubectl reads it to validate what
//! it sends (a `kind: List` file, for one) and for the patch metadata of `kubectl apply`.
//!
//! The messages are declared here with prost's derive, with the field numbers of gnostic's
//! `openapiv2/OpenAPIv2.proto`, and only the parts of a document that ours uses (Swagger
//! 2.0 as [`super::openapi`] writes it). The document is converted from that JSON, so the
//! two encodings never disagree. Vendor extensions (`x-kubernetes-…`) are a `NamedAny` whose
//! `yaml` is the value's text: JSON is YAML, and that is where client-go looks.

use prost::Message;
use serde_json::{Map, Value};

#[derive(Clone, PartialEq, Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Paths {
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedPathItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PathItem {
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Operation {
    #[prost(string, tag = "5")]
    pub operation_id: String,
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `ParametersItem{parameter}` → `Parameter{non_body_parameter}` →
/// `NonBodyParameter{query_parameter_sub_schema}`: a query parameter, three oneofs deep.
#[derive(Clone, PartialEq, Message)]
pub struct ParametersItem {
    #[prost(message, optional, tag = "1")]
    pub parameter: Option<Parameter>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Parameter {
    #[prost(message, optional, tag = "2")]
    pub non_body_parameter: Option<NonBodyParameter>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NonBodyParameter {
    #[prost(message, optional, tag = "3")]
    pub query_parameter_sub_schema: Option<QueryParameterSubSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct QueryParameterSubSchema {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "6")]
    pub r#type: String,
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Responses {
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponseValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedResponseValue {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResponseValue {
    #[prost(message, optional, tag = "1")]
    pub response: Option<Response>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Response {
    #[prost(string, tag = "1")]
    pub description: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Schema {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "3")]
    pub title: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(message, optional, tag = "5")]
    pub default: Option<Any>,
    #[prost(double, tag = "7")]
    pub maximum: f64,
    #[prost(double, tag = "9")]
    pub minimum: f64,
    #[prost(int64, tag = "11")]
    pub max_length: i64,
    #[prost(int64, tag = "12")]
    pub min_length: i64,
    #[prost(string, tag = "13")]
    pub pattern: String,
    #[prost(int64, tag = "14")]
    pub max_items: i64,
    #[prost(int64, tag = "15")]
    pub min_items: i64,
    #[prost(bool, tag = "16")]
    pub unique_items: bool,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(bool, tag = "27")]
    pub read_only: bool,
    #[prost(message, optional, tag = "30")]
    pub example: Option<Any>,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AdditionalPropertiesItem {
    #[prost(oneof = "AdditionalProperties", tags = "1, 2")]
    pub oneof: Option<AdditionalProperties>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AdditionalProperties {
    #[prost(message, boxed, tag = "1")]
    Schema(Box<Schema>),
    #[prost(bool, tag = "2")]
    Boolean(bool),
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// The protobuf bytes of the Swagger 2.0 document `doc` (as [`super::openapi`] builds it).
pub fn encode(doc: &Value) -> Vec<u8> {
    document(doc).encode_to_vec()
}

fn document(doc: &Value) -> Document {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Document {
        swagger: text(&doc["swagger"]),
        info: Some(Info { title: text(&doc["info"]["title"]), version: text(&doc["info"]["version"]) }),
        paths: Some(Paths {
            path: object(&doc["paths"])
                .iter()
                .map(|(name, item)| NamedPathItem { name: name.clone(), value: Some(path_item(item)) })
                .collect(),
        }),
        definitions: Some(Definitions { additional_properties: named_schemas(&doc["definitions"]) }),
    }
}

fn object(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn path_item(item: &Value) -> PathItem {
    let op = |verb: &str| item.get(verb).map(operation);
    PathItem { get: op("get"), put: op("put"), post: op("post"), delete: op("delete"), patch: op("patch") }
}

fn operation(op: &Value) -> Operation {
    let parameters = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "query")
        .map(|p| ParametersItem {
            parameter: Some(Parameter {
                non_body_parameter: Some(NonBodyParameter {
                    query_parameter_sub_schema: Some(QueryParameterSubSchema {
                        required: p["required"].as_bool().unwrap_or(false),
                        r#in: "query".into(),
                        description: p["description"].as_str().unwrap_or_default().into(),
                        name: p["name"].as_str().unwrap_or_default().into(),
                        r#type: p["type"].as_str().unwrap_or_default().into(),
                        unique_items: p["uniqueItems"].as_bool().unwrap_or(false),
                    }),
                }),
            }),
        })
        .collect();
    let responses = Responses {
        response_code: object(&op["responses"])
            .iter()
            .map(|(code, r)| NamedResponseValue {
                name: code.clone(),
                value: Some(ResponseValue {
                    response: Some(Response { description: r["description"].as_str().unwrap_or_default().into() }),
                }),
            })
            .collect(),
    };
    Operation {
        operation_id: op["operationId"].as_str().unwrap_or_default().into(),
        parameters,
        responses: Some(responses),
        vendor_extension: extensions(op),
    }
}

fn named_schemas(map: &Value) -> Vec<NamedSchema> {
    object(map).iter().map(|(name, s)| NamedSchema { name: name.clone(), value: Some(schema(s)) }).collect()
}

fn any(v: &Value) -> Any {
    Any { yaml: v.to_string() }
}

/// The `x-…` keys of a JSON object, in order.
fn extensions(v: &Value) -> Vec<NamedAny> {
    object(v)
        .iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| NamedAny { name: k.clone(), value: Some(any(v)) })
        .collect()
}

fn schema(s: &Value) -> Schema {
    let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
    let int = |k: &str| s[k].as_i64().unwrap_or(0);
    let types = match &s["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts.iter().filter_map(|t| t.as_str().map(String::from)).collect(),
        _ => Vec::new(),
    };
    let additional = match &s["additionalProperties"] {
        Value::Bool(b) => Some(AdditionalProperties::Boolean(*b)),
        v @ Value::Object(_) => Some(AdditionalProperties::Schema(Box::new(schema(v)))),
        _ => None,
    };
    let items = match &s["items"] {
        v @ Value::Object(_) => Some(ItemsItem { schema: vec![schema(v)] }),
        Value::Array(all) => Some(ItemsItem { schema: all.iter().map(schema).collect() }),
        _ => None,
    };
    Schema {
        r#ref: text("$ref"),
        format: text("format"),
        title: text("title"),
        description: text("description"),
        default: s.get("default").map(any),
        maximum: s["maximum"].as_f64().unwrap_or(0.0),
        minimum: s["minimum"].as_f64().unwrap_or(0.0),
        max_length: int("maxLength"),
        min_length: int("minLength"),
        pattern: text("pattern"),
        max_items: int("maxItems"),
        min_items: int("minItems"),
        unique_items: s["uniqueItems"].as_bool().unwrap_or(false),
        required: s["required"].as_array().into_iter().flatten().filter_map(|r| r.as_str().map(String::from)).collect(),
        r#enum: s["enum"].as_array().into_iter().flatten().map(any).collect(),
        additional_properties: additional.map(|a| Box::new(AdditionalPropertiesItem { oneof: Some(a) })),
        r#type: (!types.is_empty()).then_some(TypeItem { value: types }),
        items,
        all_of: s["allOf"].as_array().into_iter().flatten().map(schema).collect(),
        properties: s.get("properties").map(|p| Properties { additional_properties: named_schemas(p) }),
        read_only: s["readOnly"].as_bool().unwrap_or(false),
        example: s.get("example").map(any),
        vendor_extension: extensions(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_kinds_schema_survives_the_round_trip_with_its_extensions() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": {"/api/v1/namespaces/{namespace}/pods/{name}": {"patch": {
                "operationId": "patchPod",
                "parameters": [{"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true}],
                "x-kubernetes-action": "patch",
                "responses": {"200": {"description": "OK"}},
            }}},
            "definitions": {"io.k8s.api.core.v1.Pod": {
                "type": "object",
                "required": ["spec"],
                "properties": {
                    "spec": {"$ref": "#/definitions/io.k8s.api.core.v1.PodSpec", "description": "d"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "ports": {"type": "array", "items": {"type": "integer", "format": "int32"}},
                },
                "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Pod"}],
            }},
        });
        let back = Document::decode(encode(&doc).as_slice()).unwrap();
        assert_eq!(back.swagger, "2.0");
        let pod = &back.definitions.unwrap().additional_properties[0];
        assert_eq!(pod.name, "io.k8s.api.core.v1.Pod");
        let pod = pod.value.as_ref().unwrap();
        assert_eq!(pod.r#type.as_ref().unwrap().value, ["object"]);
        assert_eq!(pod.required, ["spec"]);
        let gvk = &pod.vendor_extension[0];
        assert_eq!(gvk.name, "x-kubernetes-group-version-kind");
        let yaml: Value = serde_json::from_str(&gvk.value.as_ref().unwrap().yaml).unwrap();
        assert_eq!(yaml[0]["kind"], "Pod");
        let props = &pod.properties.as_ref().unwrap().additional_properties;
        let find = |n: &str| props.iter().find(|p| p.name == n).unwrap().value.as_ref().unwrap();
        assert_eq!(find("spec").r#ref, "#/definitions/io.k8s.api.core.v1.PodSpec");
        let labels = find("labels").additional_properties.as_ref().unwrap();
        assert!(
            matches!(&labels.oneof, Some(AdditionalProperties::Schema(s)) if s.r#type.as_ref().unwrap().value == ["string"])
        );
        assert_eq!(find("ports").items.as_ref().unwrap().schema[0].format, "int32");
        let path = &back.paths.unwrap().path[0];
        let patch = path.value.as_ref().unwrap().patch.as_ref().unwrap();
        assert_eq!(patch.operation_id, "patchPod");
        let q = patch.parameters[0].parameter.as_ref().unwrap().non_body_parameter.as_ref().unwrap();
        assert_eq!(q.query_parameter_sub_schema.as_ref().unwrap().name, "fieldValidation");
    }
}
