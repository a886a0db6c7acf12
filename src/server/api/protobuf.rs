//! Request bodies in Kubernetes' protobuf encoding, for the kinds kubectl's imperative
//! generators send that way (`kubectl create namespace|configmap|secret`, the DeleteOptions
//! of `kubectl drain`): a `k8s\0` magic,
//! a `runtime.Unknown` envelope, and the object's message. Field numbers are those of the
//! API's generated.proto files. Answers are always JSON (kubectl accepts both).

use base64::Engine as _;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum Field {
    Str(&'static str),
    Int(&'static str),
    /// An int64 behind a Go pointer: written only when set, so 0 means 0 (a grace period).
    OptInt(&'static str),
    Bool(&'static str),
    StrMap(&'static str),
    BytesMap(&'static str),
    StrList(&'static str),
    Msg(&'static str, &'static [(u64, Field)]),
    /// metav1.Time: seconds and nanos, sent as RFC 3339.
    Time(&'static str),
}

const OBJECT_META: &[(u64, Field)] = &[
    (1, Field::Str("name")),
    (2, Field::Str("generateName")),
    (3, Field::Str("namespace")),
    (5, Field::Str("uid")),
    (6, Field::Str("resourceVersion")),
    (7, Field::Int("generation")),
    (8, Field::Time("creationTimestamp")),
    (11, Field::StrMap("labels")),
    (12, Field::StrMap("annotations")),
    (14, Field::StrList("finalizers")),
];

const NAMESPACE_SPEC: &[(u64, Field)] = &[(1, Field::StrList("finalizers"))];

const NAMESPACE: &[(u64, Field)] = &[(1, Field::Msg("metadata", OBJECT_META)), (2, Field::Msg("spec", NAMESPACE_SPEC))];
const CONFIG_MAP: &[(u64, Field)] = &[
    (1, Field::Msg("metadata", OBJECT_META)),
    (2, Field::StrMap("data")),
    (3, Field::BytesMap("binaryData")),
    (4, Field::Bool("immutable")),
];
const SECRET: &[(u64, Field)] = &[
    (1, Field::Msg("metadata", OBJECT_META)),
    (2, Field::BytesMap("data")),
    (3, Field::Str("type")),
    (4, Field::StrMap("stringData")),
    (5, Field::Bool("immutable")),
];

// authorization.k8s.io/v1, which `kubectl auth can-i` sends in protobuf.
const RESOURCE_ATTRIBUTES: &[(u64, Field)] = &[
    (1, Field::Str("namespace")),
    (2, Field::Str("verb")),
    (3, Field::Str("group")),
    (4, Field::Str("version")),
    (5, Field::Str("resource")),
    (6, Field::Str("subresource")),
    (7, Field::Str("name")),
];
const NON_RESOURCE_ATTRIBUTES: &[(u64, Field)] = &[(1, Field::Str("path")), (2, Field::Str("verb"))];
const SELF_SUBJECT_ACCESS_REVIEW_SPEC: &[(u64, Field)] = &[
    (1, Field::Msg("resourceAttributes", RESOURCE_ATTRIBUTES)),
    (2, Field::Msg("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES)),
];
const SUBJECT_ACCESS_REVIEW_SPEC: &[(u64, Field)] = &[
    (1, Field::Msg("resourceAttributes", RESOURCE_ATTRIBUTES)),
    (2, Field::Msg("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES)),
    (3, Field::Str("user")),
    (4, Field::StrList("groups")),
    (6, Field::Str("uid")),
];
const SELF_SUBJECT_ACCESS_REVIEW: &[(u64, Field)] =
    &[(1, Field::Msg("metadata", OBJECT_META)), (2, Field::Msg("spec", SELF_SUBJECT_ACCESS_REVIEW_SPEC))];
const SUBJECT_ACCESS_REVIEW: &[(u64, Field)] =
    &[(1, Field::Msg("metadata", OBJECT_META)), (2, Field::Msg("spec", SUBJECT_ACCESS_REVIEW_SPEC))];
const SELF_SUBJECT_RULES_REVIEW: &[(u64, Field)] =
    &[(1, Field::Msg("metadata", OBJECT_META)), (2, Field::Msg("spec", &[(1, Field::Str("namespace"))]))];

// authentication.k8s.io/v1's TokenRequest, which `kubectl create token` sends.
const BOUND_OBJECT_REFERENCE: &[(u64, Field)] =
    &[(1, Field::Str("kind")), (2, Field::Str("apiVersion")), (3, Field::Str("name")), (4, Field::Str("uid"))];
const TOKEN_REQUEST_SPEC: &[(u64, Field)] = &[
    (1, Field::StrList("audiences")),
    (3, Field::Msg("boundObjectRef", BOUND_OBJECT_REFERENCE)),
    (4, Field::Int("expirationSeconds")),
];
const TOKEN_REQUEST: &[(u64, Field)] =
    &[(1, Field::Msg("metadata", OBJECT_META)), (2, Field::Msg("spec", TOKEN_REQUEST_SPEC))];

// meta/v1's DeleteOptions, which `kubectl delete` and `kubectl drain` send with a delete.
const PRECONDITIONS: &[(u64, Field)] = &[(1, Field::Str("uid")), (2, Field::Str("resourceVersion"))];
const DELETE_OPTIONS: &[(u64, Field)] = &[
    (1, Field::OptInt("gracePeriodSeconds")),
    (2, Field::Msg("preconditions", PRECONDITIONS)),
    (3, Field::Bool("orphanDependents")),
    (4, Field::Str("propagationPolicy")),
    (5, Field::StrList("dryRun")),
];

// policy/v1's Eviction, which `kubectl drain` sends.
const EVICTION: &[(u64, Field)] =
    &[(1, Field::Msg("metadata", OBJECT_META)), (2, Field::Msg("deleteOptions", DELETE_OPTIONS))];

fn schema(kind: &str) -> Option<&'static [(u64, Field)]> {
    Some(match kind {
        "Namespace" => NAMESPACE,
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "SelfSubjectAccessReview" => SELF_SUBJECT_ACCESS_REVIEW,
        "SubjectAccessReview" | "LocalSubjectAccessReview" => SUBJECT_ACCESS_REVIEW,
        "SelfSubjectRulesReview" => SELF_SUBJECT_RULES_REVIEW,
        "TokenRequest" => TOKEN_REQUEST,
        "DeleteOptions" => DELETE_OPTIONS,
        "Eviction" => EVICTION,
        _ => return None,
    })
}

/// A protobuf wire reader.
struct Reader<'a> {
    buf: &'a [u8],
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
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
                self.buf = self.buf.get(8..).ok_or("truncated fixed64")?;
                Wire::Fixed
            }
            5 => {
                self.buf = self.buf.get(4..).ok_or("truncated fixed32")?;
                Wire::Fixed
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
fn entry(b: &[u8]) -> Result<(String, &[u8]), String> {
    let mut r = Reader { buf: b };
    let (mut k, mut v): (String, &[u8]) = (String::new(), &[]);
    while let Some((n, w)) = r.next()? {
        match (n, w) {
            (1, Wire::Bytes(x)) => k = text(x)?,
            (2, Wire::Bytes(x)) => v = x,
            _ => {}
        }
    }
    Ok((k, v))
}

fn message(b: &[u8], fields: &[(u64, Field)]) -> Result<Value, String> {
    let mut out = Map::new();
    let mut r = Reader { buf: b };
    while let Some((number, wire)) = r.next()? {
        let Some((_, field)) = fields.iter().find(|(n, _)| *n == number) else { continue };
        match (*field, wire) {
            // Go's encoder writes every optional field; empty means unset in JSON terms.
            (Field::Str(_), Wire::Bytes(&[])) | (Field::Int(_), Wire::Varint(0)) => {}
            (Field::Str(name), Wire::Bytes(x)) => {
                out.insert(name.into(), json!(text(x)?));
            }
            (Field::Int(name) | Field::OptInt(name), Wire::Varint(v)) => {
                out.insert(name.into(), json!(v as i64));
            }
            (Field::Bool(name), Wire::Varint(v)) => {
                out.insert(name.into(), json!(v != 0));
            }
            (Field::StrMap(name), Wire::Bytes(x)) => {
                let (k, v) = entry(x)?;
                out.entry(name).or_insert_with(|| json!({}))[k] = json!(text(v)?);
            }
            (Field::BytesMap(name), Wire::Bytes(x)) => {
                let (k, v) = entry(x)?;
                out.entry(name).or_insert_with(|| json!({}))[k] =
                    json!(base64::engine::general_purpose::STANDARD.encode(v));
            }
            (Field::StrList(name), Wire::Bytes(x)) => {
                if let Value::Array(a) = out.entry(name).or_insert_with(|| json!([])) {
                    a.push(json!(text(x)?));
                }
            }
            (Field::Msg(name, sub), Wire::Bytes(x)) => {
                out.insert(name.into(), message(x, sub)?);
            }
            (Field::Time(name), Wire::Bytes(x)) => {
                let mut t = Reader { buf: x };
                while let Some((n, w)) = t.next()? {
                    if let (1, Wire::Varint(secs)) = (n, w) {
                        out.insert(name.into(), json!(crate::model::time::format_rfc3339(secs as i64)));
                    }
                }
            }
            _ => return Err(format!("field {number} has an unexpected wire type")),
        }
    }
    Ok(Value::Object(out))
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
    let fields = schema(&kind).ok_or_else(|| {
        format!(
            "protobuf bodies are accepted for Namespace, ConfigMap, Secret, authorization reviews, TokenRequest, DeleteOptions and Eviction, not {kind:?}; send JSON"
        )
    })?;
    let mut obj = message(raw, fields)?;
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

    #[test]
    fn refuses_garbage_without_panicking() {
        assert!(decode(b"not protobuf").is_err());
        assert!(decode(b"k8s\0\x0a\xff\xff\xff").is_err());
        assert!(decode(b"k8s\0\x0a\x04\x12\x02Po").is_err(), "an unsupported kind");
    }
}
