//! Create, get, list, update and delete of stored objects, in the Kubernetes wire format.
//!
//! Objects are stored without `metadata.resourceVersion`: it is the store revision of the
//! write, filled in on every read, so it can never disagree with the store.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::resources::Resource;
use super::status::ApiError;
use crate::server::store::{Backend, KeyValue};
use crate::server::store::sqlite::Sqlite;

pub type Store = Arc<Sqlite>;

/// Runs a blocking store call off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("store task failed: {e}")))?
}

/// The object stored in `kv`, with its resourceVersion.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    obj["metadata"]["resourceVersion"] = Value::String(kv.mod_revision.to_string());
    Ok(obj)
}

fn encode(obj: &Value) -> Vec<u8> {
    let mut stored = obj.clone();
    if let Some(meta) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("selfLink");
    }
    serde_json::to_vec(&stored).expect("JSON values serialise")
}

/// RFC 1123 DNS subdomain (most names) or label (namespaces), as the API server checks.
fn name_problem(name: &str, label: bool) -> Option<String> {
    let max = if label { 63 } else { 253 };
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    let ok = name.len() <= max && if label { part_ok(name) } else { name.split('.').all(part_ok) };
    (!ok).then(|| {
        if label {
            format!("Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character")
        } else {
            format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")
        }
    })
}

fn now() -> String {
    crate::timefmt::now_rfc3339()
}

/// Parses a request body and checks it is an object of `r`'s kind.
fn parse_body(r: &Resource, body: &[u8]) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !obj.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    let api_version = r.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None => obj["apiVersion"] = json!(api_version),
        Some(v) if v == api_version => {}
        Some(v) => return Err(ApiError::bad_request(format!("the API version in the data ({v}) does not match the expected API version ({api_version})"))),
    }
    match obj.get("kind").and_then(Value::as_str) {
        None => obj["kind"] = json!(r.kind),
        Some(k) if k == r.kind => {}
        Some(k) => return Err(ApiError::bad_request(format!("the kind in the data ({k}) does not match the expected kind ({})", r.kind))),
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    Ok(obj)
}

/// `fieldValidation`: Strict refuses unknown fields; Ignore and Warn (not yet sent back as
/// warnings) accept them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Strict,
    #[default]
    Lenient,
}

/// A Secret's `stringData` is write-only: the API server folds it into `data`.
fn fold_string_data(r: &Resource, obj: &mut Value) {
    use base64::Engine as _;
    if r.kind != "Secret" {
        return;
    }
    if let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        for (k, v) in strings {
            let encoded = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
            obj["data"][k] = json!(encoded);
        }
    }
}

fn check(r: &Resource, obj: &Value, name: &str, validation: FieldValidation) -> Result<(), ApiError> {
    r.check_schema(obj, validation == FieldValidation::Strict).map_err(|(field, message)| {
        if message.starts_with("strict decoding error") {
            ApiError::bad_request(message)
        } else {
            ApiError::invalid(r.kind, name, vec![(field, message)])
        }
    })
}

pub async fn create(store: Store, r: &'static Resource, ns: Option<String>, body: &[u8], validation: FieldValidation) -> Result<(StatusCode, Value), ApiError> {
    let mut obj = parse_body(r, body)?;
    let meta = &mut obj["metadata"];
    let name = match (meta.get("name").and_then(Value::as_str), meta.get("generateName").and_then(Value::as_str)) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(prefix)) => {
            let suffix: String = uuid::Uuid::new_v4().simple().to_string().chars().filter(|c| c.is_ascii_alphanumeric()).take(5).collect();
            format!("{prefix}{suffix}")
        }
        _ => return Err(ApiError::invalid(r.kind, "", vec![("metadata.name".into(), "Required value: name or generateName is required".into())])),
    };
    if let Some(problem) = name_problem(&name, r.kind == "Namespace") {
        return Err(ApiError::invalid(r.kind, &name, vec![("metadata.name".into(), problem)]));
    }
    if r.namespaced {
        let ns = ns.clone().ok_or_else(|| ApiError::bad_request(format!("{} must be created in a namespace", r.plural)))?;
        match meta.get("namespace").and_then(Value::as_str) {
            Some(given) if given != ns => {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
            _ => meta["namespace"] = json!(ns),
        }
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    meta["name"] = json!(name);
    meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
    meta["creationTimestamp"] = json!(now());
    meta["generation"] = json!(1);
    // Defaults the API server sets at creation.
    match r.kind {
        "Namespace" => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        "Pod" if obj.pointer("/status/phase").is_none() => obj["status"]["phase"] = json!("Pending"),
        "Secret" if obj.get("type").is_none_or(|t| t.as_str() == Some("")) => obj["type"] = json!("Opaque"),
        _ => {}
    }
    check(r, &obj, &name, validation)?;
    fold_string_data(r, &mut obj);
    let key = r.key(ns.as_deref(), Some(&name));
    let ns_key = ns.as_ref().map(|n| super::resources::find("", "v1", "namespaces").expect("namespaces").key(None, Some(n)));
    let value = encode(&obj);
    let (plural, n2, ns2) = (r.plural, name.clone(), ns.clone());
    let revision = blocking(move || {
        if let Some(k) = ns_key
            && store.get(&k).map_err(|e| ApiError::internal(e.to_string()))?.is_none() {
                return Err(ApiError::not_found("namespaces", ns2.as_deref().unwrap_or_default()));
            }
        store.create(&key, &value).map_err(|e| ApiError::from_store(e, plural, &n2))
    })
    .await?;
    obj["metadata"]["resourceVersion"] = json!(revision.to_string());
    Ok((StatusCode::CREATED, obj))
}

pub async fn get(store: Store, r: &'static Resource, ns: Option<String>, name: String) -> Result<Value, ApiError> {
    let key = r.key(ns.as_deref(), Some(&name));
    let kv = blocking(move || store.get(&key).map_err(|e| ApiError::internal(e.to_string()))).await?;
    decode(&kv.ok_or_else(|| ApiError::not_found(r.plural, &name))?)
}

pub struct ListOptions {
    pub limit: usize,
    pub continue_after: Option<String>,
    pub resource_version: Option<i64>,
    pub selectors: super::selectors::Selectors,
}

pub async fn list(store: Store, r: &'static Resource, ns: Option<String>, opts: ListOptions) -> Result<Value, ApiError> {
    let prefix = r.key(ns.as_deref(), None);
    let after = opts.continue_after.map(|c| format!("{prefix}{c}"));
    let p = prefix.clone();
    // A continue token pins the revision of the first page, as the API server's does.
    let result = blocking(move || store.list(&p, after.as_deref(), opts.limit, opts.resource_version).map_err(|e| ApiError::from_store(e, r.plural, ""))).await?;
    let mut items = result.items.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    // Pages are cut before filtering, as the API server cuts them: a page may come back
    // short, and the continue token still leads on.
    items.retain(|o| opts.selectors.matches(o));
    let mut meta = json!({"resourceVersion": result.revision.to_string()});
    if result.more {
        let last = result.items.last().map(|kv| kv.key[prefix.len()..].to_string()).unwrap_or_default();
        meta["continue"] = json!(format!("{}:{last}", result.revision));
    }
    Ok(json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": meta, "items": items}))
}

pub async fn update(store: Store, r: &'static Resource, ns: Option<String>, name: String, body: &[u8], validation: FieldValidation) -> Result<Value, ApiError> {
    let mut obj = parse_body(r, body)?;
    if obj["metadata"].get("name").and_then(Value::as_str).is_some_and(|n| n != name) {
        return Err(ApiError::bad_request("the name of the object does not match the name on the URL"));
    }
    obj["metadata"]["name"] = json!(name);
    if r.namespaced {
        obj["metadata"]["namespace"] = json!(ns.clone().unwrap_or_default());
    }
    let expected = match obj["metadata"].get("resourceVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() => Some(v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?),
        _ => None,
    };
    check(r, &obj, &name, validation)?;
    fold_string_data(r, &mut obj);
    let key = r.key(ns.as_deref(), Some(&name));
    let n2 = name.clone();
    let stored = blocking(move || {
        let current = store.get(&key).map_err(|e| ApiError::internal(e.to_string()))?.ok_or_else(|| ApiError::not_found(r.plural, &n2))?;
        let old = decode(&current)?;
        // What the server owns is kept from the stored object.
        for field in ["uid", "creationTimestamp", "generation"] {
            if let Some(v) = old["metadata"].get(field) {
                obj["metadata"][field] = v.clone();
            }
        }
        if old.get("spec") != obj.get("spec") {
            obj["metadata"]["generation"] = json!(old["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
        }
        let expected = Some(expected.unwrap_or(current.mod_revision));
        let revision = store.update(&key, &encode(&obj), expected).map_err(|e| ApiError::from_store(e, r.plural, &n2))?;
        obj["metadata"]["resourceVersion"] = json!(revision.to_string());
        Ok(obj)
    })
    .await?;
    Ok(stored)
}

pub async fn delete(store: Store, r: &'static Resource, ns: Option<String>, name: String) -> Result<Value, ApiError> {
    let key = r.key(ns.as_deref(), Some(&name));
    let n2 = name.clone();
    let (_, old) = blocking(move || store.delete(&key, None).map_err(|e| ApiError::from_store(e, r.plural, &n2))).await?;
    decode(&old)
}

/// The patch formats the API accepts, by request Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Option<PatchKind> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            _ => None,
        }
    }
}

pub async fn patch(store: Store, r: &'static Resource, ns: Option<String>, name: String, kind: PatchKind, body: &[u8], validation: FieldValidation) -> Result<Value, ApiError> {
    let patch: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let key = r.key(ns.as_deref(), Some(&name));
    blocking(move || {
        // A patch without a resourceVersion applies to whatever is current: retry the
        // read-modify-write when a concurrent writer got in between, as the API server does.
        for _ in 0..5 {
            let current = store.get(&key).map_err(|e| ApiError::internal(e.to_string()))?.ok_or_else(|| ApiError::not_found(r.plural, &name))?;
            let old = decode(&current)?;
            let mut obj = old.clone();
            let applied = match kind {
                PatchKind::Merge => {
                    super::patch::merge_patch(&mut obj, &patch);
                    Ok(())
                }
                PatchKind::Json => super::patch::json_patch(&mut obj, &patch),
                PatchKind::Strategic => super::patch::strategic_merge_patch(&mut obj, &patch),
            };
            applied.map_err(|e| ApiError::invalid(r.kind, &name, vec![("patch".into(), e.0)]))?;
            // Identity and server-owned fields cannot be patched away.
            for field in ["name", "namespace", "uid", "creationTimestamp", "generation"] {
                match old["metadata"].get(field) {
                    Some(v) => obj["metadata"][field] = v.clone(),
                    None => {
                        if let Some(m) = obj["metadata"].as_object_mut() {
                            m.remove(field);
                        }
                    }
                }
            }
            let expected = match obj["metadata"].get("resourceVersion").and_then(Value::as_str) {
                Some(v) if v != current.mod_revision.to_string() => {
                    return Err(ApiError::conflict(r.plural, &name));
                }
                _ => current.mod_revision,
            };
            obj["apiVersion"] = json!(r.api_version());
            obj["kind"] = json!(r.kind);
            check(r, &obj, &name, validation)?;
            fold_string_data(r, &mut obj);
            if old.get("spec") != obj.get("spec") {
                obj["metadata"]["generation"] = json!(old["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
            }
            match store.update(&key, &encode(&obj), Some(expected)) {
                Ok(revision) => {
                    obj["metadata"]["resourceVersion"] = json!(revision.to_string());
                    return Ok(obj);
                }
                Err(crate::server::store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, r.plural, &name)),
            }
        }
        Err(ApiError::conflict(r.plural, &name))
    })
    .await
}
