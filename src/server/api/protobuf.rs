//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! as client-go's typed clients send them (`kubectl create deployment|service|job|…`, the
//! DeleteOptions of `kubectl drain`, `kubectl auth can-i`): a `k8s\0` magic, a
//! `runtime.Unknown` envelope, and the object's message, decoded here into the JSON object
//! it stands for. Every message's fields (number, JSON name, type) come from the kube-rs
//! project's generated `k8s-pb` messages, read by build.rs. [`encode`] writes answers the
//! same way, for clients that prefer protobuf ([`respond`] negotiates).

pub mod encode;
pub mod respond;

use base64::Engine as _;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";
/// Messages nest at most this deep (JSONSchemaProps may nest without end).
const MAX_DEPTH: usize = 100;

/// What a field holds.
#[derive(Debug)]
enum Ty {
    Str,
    Bytes,
    Bool,
    /// int32 or int64.
    Int,
    Double,
    /// A message, by its dotted path in k8s-pb (`api.core.v1.PodSpec`).
    Message(&'static str),
    /// A map from strings to this.
    Map(&'static Ty),
}

#[derive(Debug)]
struct Field {
    tag: u64,
    json: &'static str,
    ty: Ty,
    repeated: bool,
    /// A Go struct embedded inline: its fields are the parent's in JSON.
    inline: bool,
}

#[derive(Debug)]
struct Message {
    /// `name`, lower case: what look-ups compare.
    key: &'static str,
    name: &'static str,
    fields: &'static [Field],
}

/// Every message of the API, sorted by key.
static MESSAGES: &[Message] = include!(concat!(env!("OUT_DIR"), "/k8s_messages.rs"));

fn lookup(name: &str) -> Option<&'static Message> {
    let key = name.to_lowercase();
    MESSAGES.binary_search_by(|m| m.key.cmp(key.as_str())).ok().map(|i| &MESSAGES[i])
}

/// The message of a kind in a group-version, as k8s-pb lays the groups out.
fn message_for(api_version: &str, kind: &str) -> Option<&'static Message> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => "api.core".to_string(),
        "apiextensions.k8s.io" => "apiextensions_apiserver.pkg.apis.apiextensions".into(),
        "apiregistration.k8s.io" => "kube_aggregator.pkg.apis.apiregistration".into(),
        "internal.apiserver.k8s.io" => "api.apiserverinternal".into(),
        g => format!("api.{}", g.split('.').next().unwrap_or(g)),
    };
    lookup(&format!("{package}.{version}.{kind}"))
        // DeleteOptions and the other meta kinds come with any group's version.
        .or_else(|| lookup(&format!("apimachinery.pkg.apis.meta.v1.{kind}")))
}

/// A protobuf wire reader.
struct Reader<'a> {
    buf: &'a [u8],
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed64(u64),
    Fixed32,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                if len > self.buf.len() {
                    return Err("truncated field".into());
                }
                let (data, rest) = self.buf.split_at(len);
                self.buf = rest;
                Wire::Bytes(data)
            }
            1 => {
                let (bytes, rest) = self.buf.split_first_chunk::<8>().ok_or("truncated fixed64")?;
                self.buf = rest;
                Wire::Fixed64(u64::from_le_bytes(*bytes))
            }
            5 => {
                self.buf = self.buf.get(4..).ok_or("truncated fixed32")?;
                Wire::Fixed32
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((key >> 3, wire)))
    }
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

/// A map entry message: key = 1, value = 2.
fn entry(b: &[u8]) -> Result<(String, Wire<'_>), String> {
    let mut r = Reader { buf: b };
    let (mut k, mut v) = (String::new(), Wire::Bytes(&[]));
    while let Some((n, w)) = r.next()? {
        match (n, w) {
            (1, Wire::Bytes(x)) => k = text(x)?,
            (2, w) => v = w,
            _ => {}
        }
    }
    Ok((k, v))
}

/// One value of type `ty`; None where JSON leaves it out (an empty string, a zero time).
fn value(ty: &Ty, wire: Wire<'_>, depth: usize) -> Result<Option<Value>, String> {
    Ok(match (ty, wire) {
        // Go's encoder writes every field that is not a pointer; an empty string is what
        // JSON's omitempty leaves out.
        (Ty::Str, Wire::Bytes(&[])) => None,
        (Ty::Str, Wire::Bytes(x)) => Some(json!(text(x)?)),
        (Ty::Bytes, Wire::Bytes(x)) => Some(json!(base64::engine::general_purpose::STANDARD.encode(x))),
        (Ty::Bool, Wire::Varint(v)) => Some(json!(v != 0)),
        // int32 and int64 alike: a negative int32 is sign-extended to ten bytes.
        (Ty::Int, Wire::Varint(v)) => Some(json!(v as i64)),
        (Ty::Double, Wire::Fixed64(v)) => Some(json!(f64::from_bits(v))),
        (Ty::Message(name), Wire::Bytes(x)) => {
            let m = lookup(name).ok_or_else(|| format!("no message {name}"))?;
            match special(m.name, x, depth)? {
                Some(v) => v,
                None => Some(message(x, m, depth + 1)?),
            }
        }
        (ty, _) => return Err(format!("a {ty:?} field has an unexpected wire type")),
    })
}

fn message(b: &[u8], m: &Message, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("messages nest deeper than {MAX_DEPTH}"));
    }
    let mut out = Map::new();
    let mut r = Reader { buf: b };
    while let Some((number, wire)) = r.next()? {
        // Fields this version does not know are skipped, as proto2 does.
        let Some(field) = m.fields.iter().find(|f| f.tag == number) else { continue };
        let name = field.json;
        if field.inline {
            if let Some(Value::Object(fields)) = value(&field.ty, wire, depth)? {
                out.extend(fields);
            }
            continue;
        }
        match (&field.ty, field.repeated) {
            (Ty::Map(of), _) => {
                let Wire::Bytes(x) = wire else { return Err(format!("{}.{name}: not a map entry", m.name)) };
                let (k, v) = entry(x)?;
                let v = value(of, v, depth).map_err(|e| format!("{}.{name}[{k}]: {e}", m.name))?;
                if let Value::Object(map) = out.entry(name).or_insert_with(|| json!({})) {
                    map.insert(k, v.unwrap_or_else(|| json!("")));
                }
            }
            (ty, true) => {
                let items = match (ty, wire) {
                    // Packed scalars: all of them in one length-delimited field.
                    (Ty::Int | Ty::Bool, Wire::Bytes(x)) => {
                        let mut p = Reader { buf: x };
                        let mut all = Vec::new();
                        while !p.buf.is_empty() {
                            all.push(value(ty, Wire::Varint(p.varint()?), depth)?);
                        }
                        all
                    }
                    (ty, w) => vec![value(ty, w, depth).map_err(|e| format!("{}.{name}: {e}", m.name))?],
                };
                if let Value::Array(a) = out.entry(name).or_insert_with(|| json!([])) {
                    // An empty string in a list is a value, not a left-out field.
                    a.extend(items.into_iter().map(|v| v.unwrap_or_else(|| json!(""))));
                }
            }
            (ty, false) => {
                if let Some(v) = value(ty, wire, depth).map_err(|e| format!("{}.{name}: {e}", m.name))? {
                    out.insert(name.into(), v);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// The fields of a message, by number.
fn fields(b: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut r = Reader { buf: b };
    let mut all = Vec::new();
    while let Some(f) = r.next()? {
        all.push(f);
    }
    Ok(all)
}

/// The messages whose JSON is not an object of their fields: Some(the value, or None to
/// leave the field out), or None for an ordinary message.
#[allow(clippy::type_complexity)]
fn special(name: &str, b: &[u8], depth: usize) -> Result<Option<Option<Value>>, String> {
    let short = name.rsplit('.').next().unwrap_or(name);
    let raw_json = |b: &[u8]| -> Result<Option<Value>, String> {
        let raw =
            fields(b)?.into_iter().find_map(|(n, w)| if let (1, Wire::Bytes(x)) = (n, w) { Some(x) } else { None });
        match raw {
            None | Some(&[]) => Ok(None),
            Some(x) => serde_json::from_slice(x).map(Some).map_err(|e| format!("{name}: not JSON: {e}")),
        }
    };
    Ok(Some(match name {
        "apimachinery.pkg.util.intstr.IntOrString" => {
            let (mut ty, mut int, mut string) = (0, 0i64, String::new());
            for (n, w) in fields(b)? {
                match (n, w) {
                    (1, Wire::Varint(v)) => ty = v,
                    (2, Wire::Varint(v)) => int = i64::from(v as i32),
                    (3, Wire::Bytes(x)) => string = text(x)?,
                    _ => {}
                }
            }
            Some(if ty == 1 { json!(string) } else { json!(int) })
        }
        "apimachinery.pkg.api.resource.Quantity" => {
            let s =
                fields(b)?.into_iter().find_map(|(n, w)| if let (1, Wire::Bytes(x)) = (n, w) { Some(x) } else { None });
            Some(json!(text(s.unwrap_or_default())?))
        }
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            let (mut secs, mut nanos) = (None, 0i64);
            for (n, w) in fields(b)? {
                match (n, w) {
                    (1, Wire::Varint(v)) => secs = Some(v as i64),
                    (2, Wire::Varint(v)) => nanos = i64::from(v as i32),
                    _ => {}
                }
            }
            secs.map(|s| {
                let t = chrono::DateTime::from_timestamp(s, u32::try_from(nanos).unwrap_or(0)).unwrap_or_default();
                if short == "MicroTime" {
                    json!(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
                } else {
                    json!(crate::model::time::format_rfc3339(s))
                }
            })
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => {
            let ns = fields(b)?
                .into_iter()
                .find_map(|(n, w)| if let (1, Wire::Varint(v)) = (n, w) { Some(v as i64) } else { None });
            Some(json!(go_duration(ns.unwrap_or(0))))
        }
        "apimachinery.pkg.runtime.RawExtension"
        | "apimachinery.pkg.apis.meta.v1.FieldsV1"
        | "apiextensions_apiserver.pkg.apis.apiextensions.v1.Json" => raw_json(b)?,
        // go-to-protobuf's wrappers of a list or a union: JSON has the list or the member.
        _ if short == "ExtraValue" => {
            let items: Result<Vec<Value>, String> = fields(b)?
                .into_iter()
                .filter_map(
                    |(n, w)| if let (1, Wire::Bytes(x)) = (n, w) { Some(text(x).map(Value::from)) } else { None },
                )
                .collect();
            Some(Value::Array(items?))
        }
        "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrArray"
        | "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrBool"
        | "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrStringArray" => {
            let props = lookup("apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaProps")
                .ok_or("no JSONSchemaProps message")?;
            let (mut schema, mut list, mut allows) = (None, Vec::new(), None);
            for (n, w) in fields(b)? {
                match (short, n, w) {
                    ("JsonSchemaPropsOrBool", 1, Wire::Varint(v)) => allows = Some(v != 0),
                    ("JsonSchemaPropsOrBool", 2, Wire::Bytes(x)) | (_, 1, Wire::Bytes(x)) => {
                        schema = Some(message(x, props, depth + 1)?)
                    }
                    ("JsonSchemaPropsOrArray", 2, Wire::Bytes(x)) => list.push(message(x, props, depth + 1)?),
                    ("JsonSchemaPropsOrStringArray", 2, Wire::Bytes(x)) => list.push(json!(text(x)?)),
                    _ => {}
                }
            }
            Some(match (schema, allows) {
                (Some(s), _) => s,
                (None, Some(a)) => json!(a),
                (None, None) => Value::Array(list),
            })
        }
        _ => return Ok(None),
    }))
}

/// A duration as Go's time.Duration.String writes it (`1h2m3.5s`, `250ms`).
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let n = ns.unsigned_abs();
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", trim(n as f64 / 1e3));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", trim(n as f64 / 1e6));
    }
    let (h, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let s = trim(rest as f64 / 1e9);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Decodes a protobuf request body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body.strip_prefix(MAGIC).ok_or("the body does not start with the k8s protobuf magic")?;
    let mut r = Reader { buf: rest };
    let (mut api_version, mut kind, mut raw): (String, String, &[u8]) = (String::new(), String::new(), &[]);
    while let Some((n, w)) = r.next()? {
        match (n, w) {
            (1, Wire::Bytes(tm)) => {
                let mut t = Reader { buf: tm };
                while let Some((tn, tw)) = t.next()? {
                    match (tn, tw) {
                        (1, Wire::Bytes(x)) => api_version = text(x)?,
                        (2, Wire::Bytes(x)) => kind = text(x)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    let m = message_for(&api_version, &kind)
        .ok_or_else(|| format!("no kind {kind:?} is registered for version {api_version:?}"))?;
    let mut obj = message(raw, m, 0)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_kubectl_create_secret_sends() {
        // Captured from `kubectl create secret generic s --from-literal=a=b -v=9`.
        let body: &[u8] = &[
            0x6b, 0x38, 0x73, 0x00, 0x0a, 0x0c, 0x0a, 0x02, 0x76, 0x31, 0x12, 0x06, 0x53, 0x65, 0x63, 0x72, 0x65, 0x74,
            0x12, 0x1d, 0x0a, 0x11, 0x0a, 0x01, 0x73, 0x12, 0x00, 0x1a, 0x00, 0x22, 0x00, 0x2a, 0x00, 0x32, 0x00, 0x38,
            0x00, 0x42, 0x00, 0x12, 0x06, 0x0a, 0x01, 0x61, 0x12, 0x01, 0x62, 0x1a, 0x00, 0x1a, 0x00, 0x22, 0x00,
        ];
        let obj = decode(body).unwrap();
        assert_eq!(obj["kind"], "Secret");
        assert_eq!(obj["metadata"]["name"], "s");
        assert_eq!(obj["data"]["a"], base64::engine::general_purpose::STANDARD.encode("b"));
    }

    #[test]
    fn decodes_the_delete_options_kubectl_drain_sends() {
        // Captured from `kubectl drain NODE --force --grace-period=0 -v=8`.
        let body: &[u8] = &[
            0x6b, 0x38, 0x73, 0x00, 0x0a, 0x13, 0x0a, 0x02, 0x76, 0x31, 0x12, 0x0d, 0x44, 0x65, 0x6c, 0x65, 0x74, 0x65,
            0x4f, 0x70, 0x74, 0x69, 0x6f, 0x6e, 0x73, 0x12, 0x02, 0x08, 0x00, 0x1a, 0x00, 0x22, 0x00,
        ];
        let obj = decode(body).unwrap();
        assert_eq!(obj, json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}));
        let opts = crate::server::registry::objects::DeleteOptions::parse(obj.to_string().as_bytes(), None).unwrap();
        assert_eq!(opts.grace_period, Some(0));
    }

    /// Every property of every served kind's schema (k8s-openapi's, as `/openapi/v2`
    /// serves it) is a field of the k8s-pb message of that name, under the same JSON name:
    /// build.rs's names and the generated message look-up are right wherever a served kind
    /// can reach.
    #[test]
    fn every_served_schema_property_is_a_field_of_its_message() {
        let doc: Value = serde_json::from_slice(&super::super::openapi::v2()).unwrap();
        let definitions = doc["definitions"].as_object().unwrap();
        let mut checked = 0;
        let mut missing = Vec::new();
        for (def, schema) in definitions {
            let Some(path) = def.strip_prefix("io.k8s.") else { continue };
            let path = path.replace("apiextensions-apiserver", "apiextensions_apiserver");
            // Messages whose JSON is not an object of their fields.
            if special_json(&path) {
                continue;
            }
            let Some(m) = lookup(&path) else {
                missing.push(format!("{def}: no message"));
                continue;
            };
            for prop in schema["properties"].as_object().into_iter().flatten().map(|(k, _)| k) {
                if matches!(prop.as_str(), "apiVersion" | "kind") && m.fields.iter().all(|f| f.json != prop) {
                    continue; // TypeMeta: in the envelope, not the message.
                }
                checked += 1;
                if !has_field(m, prop) {
                    missing.push(format!("{def}.{prop}"));
                }
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");
        assert!(checked > 1000, "only {checked} properties checked");
    }

    /// A field of `m` with that JSON name, or of a message embedded inline in it.
    fn has_field(m: &Message, json: &str) -> bool {
        m.fields.iter().any(|f| match (&f.ty, f.inline) {
            (Ty::Message(inner), true) => lookup(inner).is_some_and(|i| has_field(i, json)),
            _ => f.json == json,
        })
    }

    fn special_json(path: &str) -> bool {
        let short = path.rsplit('.').next().unwrap_or(path);
        matches!(short, "IntOrString" | "Quantity" | "Time" | "MicroTime" | "Duration" | "RawExtension" | "FieldsV1")
            || short.starts_with("JSONSchemaPropsOr")
            || short == "JSON"
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(250_000_000), "250ms");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_723_500_000_000), "1h2m3.5s");
        assert_eq!(go_duration(-1_500), "-1.5µs");
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        assert!(decode(b"not protobuf").is_err());
        assert!(decode(b"k8s\0\x0a\xff\xff\xff").is_err());
        assert!(decode(b"k8s\0\x0a\x04\x12\x02Po").is_err(), "an unknown kind");
        // A message nested without end (JSONSchemaProps.anyOf, field 27, inside itself).
        let mut props: Vec<u8> = Vec::new();
        for _ in 0..200 {
            let mut outer = vec![0xda, 0x01];
            let mut len = props.len();
            while len >= 0x80 {
                outer.push((len as u8) | 0x80);
                len >>= 7;
            }
            outer.push(len as u8);
            outer.extend_from_slice(&props);
            props = outer;
        }
        let m = lookup("apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps").unwrap();
        assert!(message(&props, m, 0).unwrap_err().contains("deeper"));
    }
}
