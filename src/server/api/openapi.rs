//! OpenAPI v2 (`/openapi/v2`) and v3 (`/openapi/v3`, one document per group-version) with
//! the schemas of every served kind, for `kubectl explain` and for clients that validate.
//!
//! The schemas are not written here: they are k8s-openapi's, the same types that decode
//! what the API stores (`Resource::check_schema`), through its `schemars` feature. Each top
//! level definition carries `x-kubernetes-group-version-kind`, which is how kubectl finds a
//! kind's schema. PATCH and PUT operations declare the `fieldValidation` query parameter:
//! finding it, kubectl leaves unknown-field checks to the server (`?fieldValidation=Strict`).
//!
//! A document is built on its first request and its bytes kept: the whole v2 document is a
//! few megabytes of JSON that never changes while the binary runs.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::body::Bytes;
use schemars::r#gen::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::server::registry::resources::{self, KindType, RESOURCES, Resource, TypeVisitor};

/// The media type client-go asks `/openapi/v2` for first (gnostic's protobuf encoding).
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// What kube-openapi answers it with, and also accepts: the same name with `.` for `@`,
/// which Go's `mime.ParseMediaType` (kubectl reads the answer's type with it) takes.
pub const V2_PROTOBUF_ANSWER: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

fn gv_path(r: &Resource) -> String {
    if r.group.is_empty() { format!("api/{}", r.version) } else { format!("apis/{}/{}", r.group, r.version) }
}

/// `/openapi/v3`: where each group-version's document is.
pub fn root() -> Value {
    let mut paths = Map::new();
    for r in RESOURCES.iter().chain(resources::all().into_iter().filter(|r| r.custom.is_some())) {
        let gv = gv_path(r);
        // The hash lets clients cache; ours changes only with the binary. No cache headers
        // are sent, so a client revalidates rather than trusting an old binary's document.
        paths.insert(
            gv.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={}", env!("CARGO_PKG_VERSION"))}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/GROUP/VERSION`, built once.
pub fn document(gv: &str) -> Option<Bytes> {
    static DOCS: OnceLock<BTreeMap<String, OnceLock<Bytes>>> = OnceLock::new();
    let docs = DOCS.get_or_init(|| RESOURCES.iter().map(|r| (gv_path(r), OnceLock::new())).collect());
    let Some(slot) = docs.get(gv) else {
        // Custom kinds change with their CRDs: built on each request (they are small).
        return custom_document(gv).map(|d| Bytes::from(d.to_string()));
    };
    Some(slot.get_or_init(|| Bytes::from(v3_document(gv).to_string())).clone())
}

/// `/openapi/v2`, built once: every served kind in one Swagger 2.0 document.
pub fn v2() -> Bytes {
    static DOC: OnceLock<Bytes> = OnceLock::new();
    DOC.get_or_init(|| Bytes::from(v2_document().to_string())).clone()
}

/// `/openapi/v2` in gnostic's protobuf encoding, built once from the same document.
pub fn v2_protobuf() -> Bytes {
    static DOC: OnceLock<Bytes> = OnceLock::new();
    DOC.get_or_init(|| Bytes::from(super::gnostic::encode(&v2_document()))).clone()
}

/// Whether an Accept header takes `/openapi/v2` in gnostic's protobuf, which client-go
/// asks for alone.
pub fn v2_accepts_protobuf(accept: &str) -> bool {
    accept.split(',').any(|t| matches!(t.split(';').next().unwrap_or("").trim(), V2_PROTOBUF | V2_PROTOBUF_ANSWER))
}

/// Whether an Accept header lets `/openapi/v2` answer in JSON, as kube-openapi negotiates
/// it: no header, `*/*`, `application/*` or `application/json` among the types listed.
pub fn v2_accepts_json(accept: &str) -> bool {
    accept.trim().is_empty()
        || accept.split(',').map(|t| t.split(';').next().unwrap_or("").trim()).any(|t| {
            matches!(t, "*/*" | "application/*" | "application/json" | "") || t.starts_with("application/json")
        })
}

fn v3_document(gv: &str) -> Value {
    let resources: Vec<&Resource> = RESOURCES.iter().filter(|r| gv_path(r) == gv).collect();
    let param = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let mut paths = Map::new();
    for r in &resources {
        paths.insert(item_path(r, gv), operations(r, &param));
    }
    let schemas = definitions(SchemaSettings::openapi3(), &resources);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The v3 document of a group-version of custom kinds: each kind's schema from its CRD
/// (named as kube names them, `com.example.stable.v1.CronTab`) with apiVersion, kind and
/// metadata added, and ObjectMeta's schema with what it refers to.
fn custom_document(gv: &str) -> Option<Value> {
    let resources: Vec<&Resource> =
        resources::all().into_iter().filter(|r| r.custom.is_some() && gv_path(r) == gv).collect();
    if resources.is_empty() {
        return None;
    }
    let mut generator = SchemaSettings::openapi3().into_generator();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
    let mut schemas = take(&mut generator);
    let param = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let mut paths = Map::new();
    for r in &resources {
        paths.insert(item_path(r, gv), operations(r, &param));
        let mut schema = r
            .custom
            .and_then(|c| c.schema.clone())
            .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
        let props = &mut schema["properties"];
        props["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"});
        props["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"});
        props["metadata"] = json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"});
        schema["x-kubernetes-group-version-kind"] = json!([gvk(r)]);
        let reversed: Vec<&str> = r.group.split('.').rev().collect();
        schemas.insert(format!("{}.{}.{}", reversed.join("."), r.version, r.kind), schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// The generator's definitions with its visitors run over them, as JSON.
fn take(generator: &mut SchemaGenerator) -> Map<String, Value> {
    let mut defs = generator.take_definitions();
    for visitor in generator.visitors_mut() {
        for schema in defs.values_mut() {
            visitor.visit_schema(schema);
        }
    }
    defs.into_iter().map(|(name, schema)| (name, serde_json::to_value(schema).unwrap_or(Value::Null))).collect()
}

fn v2_document() -> Value {
    let resources: Vec<&Resource> = RESOURCES.iter().collect();
    let param = json!({"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true});
    let mut paths = Map::new();
    for r in &resources {
        paths.insert(item_path(r, &gv_path(r)), operations(r, &param));
    }
    // Swagger 2.0 as kube-apiserver writes it: `$ref` keeps its sibling `description`.
    let settings = SchemaSettings::draft07().with(|s| {
        s.meta_schema = None;
        s.visitors.clear();
    });
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "definitions": definitions(settings, &resources),
    })
}

fn item_path(r: &Resource, gv: &str) -> String {
    if r.namespaced {
        format!("/{gv}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
    } else {
        format!("/{gv}/{}/{{name}}", r.plural)
    }
}

fn gvk(r: &Resource) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

/// PATCH and PUT of one object. No `requestBody` is declared: kubectl 1.32's apply computes
/// strategic merge patches from the v3 schema only when PATCH lists that content type, and
/// these schemas lack kube's `x-kubernetes-patch-merge-key` extensions; without it kubectl
/// keeps using the patch metadata compiled into it.
fn operations(r: &Resource, param: &Value) -> Value {
    let op = |verb: &str| {
        json!({
            "operationId": format!("{verb}{}", r.kind),
            "parameters": [param.clone()],
            "x-kubernetes-action": verb,
            "x-kubernetes-group-version-kind": gvk(r),
            "responses": {"200": {"description": "OK"}},
        })
    };
    json!({"patch": op("patch"), "put": op("put")})
}

/// The schemas of `resources` and of every type they refer to, by kube's definition names
/// (`io.k8s.api.core.v1.Pod`), each kind's tagged with its group, version and kind.
fn definitions(settings: SchemaSettings, resources: &[&Resource]) -> Map<String, Value> {
    let mut generator = settings.into_generator();
    let mut tagged: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in resources {
        if let Some(name) = add_schema(r, &mut generator) {
            tagged.entry(name).or_default().push(gvk(r));
        }
    }
    // The settings' visitors (for v3: `$ref` with siblings wrapped in `allOf`) apply to
    // root schemas only; these are definitions, so `take` runs them.
    let mut out = Map::new();
    for (name, mut value) in take(&mut generator) {
        if let (Some(kinds), Some(obj)) = (tagged.get(&name), value.as_object_mut()) {
            obj.insert("x-kubernetes-group-version-kind".into(), Value::Array(kinds.clone()));
        }
        out.insert(name, value);
    }
    out
}

/// Adds the schema of `r`'s kind to `generator`; its definition name.
fn add_schema(r: &Resource, generator: &mut SchemaGenerator) -> Option<String> {
    struct Add<'a>(&'a mut SchemaGenerator);
    impl TypeVisitor for Add<'_> {
        type Out = String;
        fn visit<T: KindType>(self) -> String {
            self.0.subschema_for::<T>();
            T::schema_name()
        }
    }
    r.with_type(Add(generator))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: Bytes) -> Value {
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn every_served_kind_has_a_tagged_schema_in_its_group_versions_document() {
        for r in RESOURCES {
            let doc = parse(document(&gv_path(r)).unwrap());
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            let found = schemas
                .values()
                .any(|s| s["x-kubernetes-group-version-kind"].as_array().is_some_and(|a| a.contains(&gvk(r))));
            assert!(found, "no schema for {}/{}", r.api_version(), r.kind);
        }
    }

    #[test]
    fn v3_references_point_into_components_and_every_one_resolves() {
        let doc = parse(document("apis/apps/v1").unwrap());
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("\"$ref\":\"").skip(1) {
            let target = &part[..part.find('"').unwrap()];
            let name = target.strip_prefix("#/components/schemas/").unwrap();
            assert!(schemas.contains_key(name), "dangling {target}");
        }
        let spec = &schemas["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"];
        assert_eq!(spec["allOf"][0]["$ref"], "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec");
        assert!(spec["description"].as_str().unwrap().contains("desired behavior"));
    }

    #[test]
    fn v2_is_one_swagger_document_with_every_kind() {
        let doc = parse(v2());
        assert_eq!(doc["swagger"], "2.0");
        let defs = doc["definitions"].as_object().unwrap();
        let pod = &defs["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"], json!([{"group": "", "version": "v1", "kind": "Pod"}]));
        assert_eq!(pod["properties"]["spec"]["$ref"], "#/definitions/io.k8s.api.core.v1.PodSpec");
        for r in RESOURCES {
            assert!(
                defs.values()
                    .any(|s| s["x-kubernetes-group-version-kind"].as_array().is_some_and(|a| a.contains(&gvk(r)))),
                "{} missing",
                r.kind
            );
        }
    }

    #[test]
    fn v2_answers_json_only_to_clients_that_take_it() {
        assert!(v2_accepts_json(""));
        assert!(v2_accepts_json("application/json"));
        assert!(v2_accepts_json("application/json;q=0.9, */*;q=0.8"));
        assert!(!v2_accepts_json(V2_PROTOBUF));
        assert!(v2_accepts_protobuf(V2_PROTOBUF) && v2_accepts_protobuf(V2_PROTOBUF_ANSWER));
        assert!(!v2_accepts_protobuf("application/json"));
    }

    #[test]
    fn v2_in_protobuf_holds_every_definition_of_the_json() {
        use prost::Message;
        let json = parse(v2());
        let pb = super::super::gnostic::Document::decode(v2_protobuf().as_ref()).unwrap();
        let names: Vec<&str> =
            pb.definitions.as_ref().unwrap().additional_properties.iter().map(|d| d.name.as_str()).collect();
        let want: Vec<&str> = json["definitions"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(names, want);
        assert_eq!(pb.paths.unwrap().path.len(), json["paths"].as_object().unwrap().len());
    }
}
