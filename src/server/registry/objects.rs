//! Create, get, list, update and delete of stored objects, in the Kubernetes wire format.
//!
//! Objects are stored without `metadata.resourceVersion`: it is the store revision of the
//! write, filled in on every read, so it can never disagree with the store.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::model::names::{name_problem, path_segment_problem};

use super::error::RegistryError;
use super::kinds::Names;
use super::resources::Resource;
use crate::server::store::{Backend, KeyValue, ListResult};

/// The store behind the API: SQLite or etcd (`nodectl server --etcd`).
pub type Store = Arc<dyn Backend>;

/// A condition a write must meet, given the stored object it replaces (None for a create)
/// and the object it writes (None for a delete): an authorization that depends on them,
/// such as "this pod is bound to the calling node".
pub type Guard = Arc<dyn Fn(Option<&Value>, Option<&Value>) -> Result<(), RegistryError> + Send + Sync>;

/// Runs a blocking store call off the async workers (for the HTTP layer too: any error
/// type a [`RegistryError`] converts into).
pub async fn blocking<T: Send + 'static, E: From<RegistryError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    // A panic in `f` unwinds to the JoinError (a 500), as in the request's own task.
    tokio::task::spawn_blocking(move || crate::sys::unwind::unwinding(f))
        .await
        .map_err(|e| RegistryError::internal(format!("store task failed: {e}")))?
}

/// The object stored in `kv`, with its resourceVersion.
pub fn decode(kv: &KeyValue) -> Result<Value, RegistryError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| RegistryError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    // What etcd holds may have been written by anyone: the assignment below would panic on
    // a value that is not an object, or whose metadata is not one.
    if !obj.is_object() || !matches!(obj["metadata"], Value::Object(_) | Value::Null) {
        return Err(RegistryError::internal(format!("stored object {} is not a Kubernetes object", kv.key)));
    }
    obj["metadata"]["resourceVersion"] = Value::String(kv.mod_revision.to_string());
    Ok(obj)
}

/// The object stored in `kv`, in `r`'s version (the store holds one version of a kind
/// that is served in several).
pub fn decode_as(r: &Resource, kv: &KeyValue) -> Result<Value, RegistryError> {
    decode(kv).map(|obj| super::convert::to_version(r, obj))
}

/// `obj`, of `r`'s version, as the store holds it: itself unless it needs converting.
fn stored_form<'a>(r: &'static Resource, obj: &'a Value) -> Cow<'a, Value> {
    let storage = r.storage();
    if obj.get("apiVersion").and_then(Value::as_str) == Some(storage.api_version().as_str()) {
        Cow::Borrowed(obj)
    } else {
        Cow::Owned(super::convert::to_version(storage, obj.clone()))
    }
}

/// The largest object stored, as etcd's default request limit (1.5 MiB), whichever store
/// holds it: a node stored five 60 MiB Events, and one list answered 360 MiB.
pub const MAX_OBJECT: usize = 3 << 19;

/// [`encode`], refused with 413 over [`MAX_OBJECT`], as kube-apiserver answers etcd's
/// "request is too large".
pub fn encode_limited(obj: &Value) -> Result<Vec<u8>, RegistryError> {
    let value = encode(obj);
    if value.len() > MAX_OBJECT {
        return Err(RegistryError::TooLarge(format!(
            "Request entity too large: etcdserver: request is too large ({} bytes; the limit is {MAX_OBJECT})",
            value.len()
        )));
    }
    Ok(value)
}

/// `obj` in JSON as the store keeps it: without metadata.resourceVersion (the store's
/// revision is that) and selfLink. Written from the object in place: a copy of each
/// object to drop two fields cost as much as writing it.
pub fn encode(obj: &Value) -> Vec<u8> {
    use serde::ser::{Serialize, SerializeMap, Serializer};
    struct Stored<'a>(&'a Value);
    struct Meta<'a>(&'a Map<String, Value>);
    impl Serialize for Stored<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let Value::Object(o) = self.0 else { return self.0.serialize(s) };
            let mut m = s.serialize_map(Some(o.len()))?;
            for (k, v) in o {
                match v {
                    Value::Object(meta) if k == "metadata" => m.serialize_entry(k, &Meta(meta))?,
                    _ => m.serialize_entry(k, v)?,
                }
            }
            m.end()
        }
    }
    impl Serialize for Meta<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            for (k, v) in self.0.iter().filter(|(k, _)| *k != "resourceVersion" && *k != "selfLink") {
                m.serialize_entry(k, v)?;
            }
            m.end()
        }
    }
    // A Value always serialises: its keys are strings and its numbers finite.
    serde_json::to_vec(&Stored(obj)).unwrap_or_else(|_| obj.to_string().into_bytes())
}

fn now() -> String {
    crate::model::time::now_rfc3339()
}

/// The fields the server writes into (`obj["metadata"]["uid"] = …`, `obj["status"]["phase"]
/// = …`, `obj["data"][key] = …`): each must be an object, null or absent, because
/// serde_json's `IndexMut` panics on any other value. Checked on every body and on every
/// patch's result before the server touches them; the schema check comes later.
fn shape_problem(obj: &Value) -> Option<String> {
    let Value::Object(o) = obj else {
        return Some(format!("the object must be a JSON object, not {}", type_name(obj)));
    };
    let nested = o.get("metadata").and_then(Value::as_object);
    let fields = ["metadata", "spec", "status", "data"].into_iter().map(|f| (f.to_string(), o.get(f)));
    let meta = ["labels", "annotations"].into_iter().map(|f| (format!("metadata.{f}"), nested.and_then(|m| m.get(f))));
    fields.chain(meta).find_map(|(field, v)| match v {
        None | Some(Value::Null | Value::Object(_)) => None,
        Some(other) => Some(format!("{field} must be an object, not {}", type_name(other))),
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A body that cannot be handled as `r`'s kind, as the API server words its decoding error.
fn undecodable(r: &Resource, problem: &str) -> RegistryError {
    RegistryError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: {problem}",
        r.kind, r.version, r.kind
    ))
}

/// Parses a request body and checks it is an object of `r`'s kind.
fn parse_body(r: &Resource, body: &[u8]) -> Result<Value, RegistryError> {
    as_body(r, parse_json(body)?)
}

fn parse_json(body: &[u8]) -> Result<Value, RegistryError> {
    serde_json::from_slice(body)
        .map_err(|e| RegistryError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// Checks `obj` is an object of `r`'s kind, as a request body is; its apiVersion and kind
/// are set if it lacks them.
fn as_body(r: &Resource, mut obj: Value) -> Result<Value, RegistryError> {
    if !obj.is_object() {
        return Err(RegistryError::bad_request("the request body must be a JSON object"));
    }
    if let Some(problem) = shape_problem(&obj) {
        return Err(undecodable(r, &problem));
    }
    let api_version = r.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None => obj["apiVersion"] = json!(api_version),
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(RegistryError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None => obj["kind"] = json!(r.kind),
        Some(k) if k == r.kind => {}
        Some(k) => {
            return Err(RegistryError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                r.kind
            )));
        }
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    Ok(obj)
}

/// `fieldValidation`: Strict refuses unknown fields; Ignore and Warn accept them (the API
/// layer sends Warn's warnings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Strict,
    #[default]
    Lenient,
}

/// How a write is checked, and who makes it.
#[derive(Clone, Default)]
pub struct Checks {
    pub validation: FieldValidation,
    pub guard: Option<Guard>,
    /// dryRun=All: everything runs, nothing is stored.
    pub dry_run: bool,
    /// The field manager the write's fields go to (managedFields); None for the server's
    /// own writes, which are not tracked.
    pub manager: Option<String>,
}

impl From<(FieldValidation, Option<Guard>, bool)> for Checks {
    fn from((validation, guard, dry_run): (FieldValidation, Option<Guard>, bool)) -> Checks {
        Checks { validation, guard, dry_run, manager: None }
    }
}

/// How a created object's fields are owned.
enum Ownership {
    /// By the request's manager, as an update of nothing; or by nobody.
    Update(Option<String>),
    /// As the apply that creates it said (its managedFields are set already).
    Applied,
}

/// Gives `writer`'s manager what `obj` changes from `old`. A failure (an object the field
/// tracking cannot read) leaves managedFields as they were, as the API server's
/// UpdateNoErrors does: ownership never fails a write.
fn track(r: &Resource, old: Option<&Value>, obj: &mut Value, manager: Option<&str>, part: Part) {
    let Some(manager) = manager else {
        // The server's own writes keep what the object had.
        if let Some(fields) = old.and_then(|o| o.pointer("/metadata/managedFields"))
            && obj["metadata"].get("managedFields").is_none()
        {
            obj["metadata"]["managedFields"] = fields.clone();
        }
        return;
    };
    let writer = super::managed::Writer {
        manager: manager.to_string(),
        api_version: r.api_version(),
        subresource: match part {
            Part::Status => Some("status"),
            Part::Scale => Some("scale"),
            Part::Main | Part::Finalize => None,
        },
        types: super::managed::shape::Types::of(r.custom.and_then(|c| c.schema.as_ref())),
    };
    if let Err(e) = super::managed::track_update(old, obj, &writer, &now()) {
        tracing::debug!(kind = r.kind, error = %e, "managedFields not updated");
    }
}

/// Where a body is checked against its kind's schema: a create's body is decoded as the
/// kind, and kube-apiserver's create handler says so in a strict decoding error.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Decoded {
    Created,
    Written,
}

fn check(
    r: &Resource,
    obj: &Value,
    name: &str,
    validation: FieldValidation,
    decoded: Decoded,
) -> Result<(), RegistryError> {
    r.check_schema(obj, validation == FieldValidation::Strict).map_err(|(field, message)| {
        if message.starts_with("strict decoding error") {
            match decoded {
                Decoded::Created => RegistryError::bad_request(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: {message}",
                    kind = r.kind,
                    version = r.version
                )),
                Decoded::Written => RegistryError::bad_request(message),
            }
        } else {
            RegistryError::invalid(&r.qualified_kind(), name, vec![(field, message)])
        }
    })
}

/// kube-apiserver's validation of `obj` (defaulted), created or replacing `old`: every
/// problem a cause of one 422.
fn validate(r: &Resource, obj: &Value, old: Option<&Value>, name: &str) -> Result<(), RegistryError> {
    let problems = r.problems(obj, old);
    if problems.is_empty() { Ok(()) } else { Err(RegistryError::invalid(&r.qualified_kind(), name, problems)) }
}

pub async fn create(
    store: Store,
    r: &'static Resource,
    ns: Option<String>,
    body: &[u8],
    checks: impl Into<Checks>,
) -> Result<Value, RegistryError> {
    create_value(store, r, ns, parse_json(body)?, checks).await
}

/// `create` of an object the server made itself (an event, say): as a request body, but
/// not written out and parsed again.
pub async fn create_value(
    store: Store,
    r: &'static Resource,
    ns: Option<String>,
    obj: Value,
    checks: impl Into<Checks>,
) -> Result<Value, RegistryError> {
    let checks = checks.into();
    let manager = checks.manager.clone();
    create_object(store, r, ns, as_body(r, obj)?, checks, Ownership::Update(manager)).await
}

async fn create_object(
    store: Store,
    r: &'static Resource,
    ns: Option<String>,
    mut obj: Value,
    Checks { validation, guard, dry_run, .. }: Checks,
    ownership: Ownership,
) -> Result<Value, RegistryError> {
    let meta = &mut obj["metadata"];
    let name = match (meta.get("name").and_then(Value::as_str), meta.get("generateName").and_then(Value::as_str)) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(prefix)) => format!("{prefix}{}", random_suffix()),
        _ => {
            return Err(RegistryError::invalid(
                r.kind,
                "",
                vec![("metadata.name".into(), "Required value: name or generateName is required".into())],
            ));
        }
    };
    if r.custom.is_some_and(|c| c.terminating) {
        return Err(RegistryError::MethodNotAllowed(
            "create not allowed while custom resource definition is terminating".into(),
        ));
    }
    let strategy = r.strategy();
    let problem = match strategy.names {
        Names::Subdomain => name_problem(&name, false),
        Names::Label => name_problem(&name, true),
        Names::PathSegment => path_segment_problem(&name),
    };
    if let Some(problem) = problem {
        return Err(RegistryError::invalid(&r.qualified_kind(), &name, vec![("metadata.name".into(), problem)]));
    }
    if r.namespaced {
        let ns = ns
            .clone()
            .ok_or_else(|| RegistryError::bad_request(format!("{} must be created in a namespace", r.plural)))?;
        match meta.get("namespace").and_then(Value::as_str) {
            Some(given) if given != ns => {
                return Err(RegistryError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
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
    // What the server sets at creation, then the kind's defaults.
    (strategy.on_create)(&mut obj);
    r.apply_defaults(&mut obj);
    if let Some(g) = &guard {
        g(None, Some(&obj))?;
    }
    check(r, &obj, &name, validation, Decoded::Created)?;
    validate(r, &obj, None, &name)?;
    r.normalize(&mut obj);
    match ownership {
        Ownership::Update(manager) => track(r, None, &mut obj, manager.as_deref(), Part::Main),
        Ownership::Applied => {}
    }
    let key = r.key(ns.as_deref(), Some(&name));
    let namespaces = super::resources::find("", "v1", "namespaces")
        .ok_or_else(|| RegistryError::internal("namespaces are not served"))?;
    let ns_key = ns.as_ref().map(|n| namespaces.key(None, Some(n)));
    let mut value = encode_limited(&stored_form(r, &obj))?;
    let (plural, n2, ns2) = (r.plural, name.clone(), ns.clone());
    let mut allocated = obj.clone();
    let (revision, allocated) = blocking(move || {
        // The namespace must exist, and admit the object (not while it terminates).
        if let Some(k) = ns_key {
            let ns_name = ns2.as_deref().unwrap_or_default();
            let kv = store
                .get(&k)
                .map_err(|e| RegistryError::from_store(e, "namespaces", ns_name))?
                .ok_or_else(|| RegistryError::not_found("namespaces", ns_name))?;
            super::deletion::admit_create(&decode(&kv)?, r, &n2)?;
        }
        // Mutating admission that reads other objects: a pod's ServiceAccount.
        let admitted_pod = r.kind == "Pod" && r.group.is_empty();
        if admitted_pod {
            super::service_account::admit(&*store, &mut allocated, ns2.as_deref().unwrap_or_default(), &n2)?;
            value = encode_limited(&stored_form(r, &allocated))?;
        }
        // dryRun=All: everything above ran (defaulting, validation, admission); nothing is
        // stored, and the answer has no resourceVersion, as the API server's.
        if dry_run {
            return match store.get(&key).map_err(|e| RegistryError::from_store(e, plural, &n2))? {
                Some(_) => Err(RegistryError::already_exists(plural, &n2)),
                None => Ok((None, allocated)),
            };
        }
        // A Service's cluster IP is taken (its record written) before the Service is
        // stored, and given back if the Service cannot be.
        let svc_ns = ns2.clone().unwrap_or_default();
        let takes_ip = r.kind == "Service" && super::clusterip::wants_ip(&allocated["spec"]);
        if takes_ip {
            super::clusterip::allocate(&*store, &mut allocated["spec"], &svc_ns, &n2)?;
        }
        // So are its node ports.
        let ports = if r.kind == "Service" {
            match super::nodeport::allocate(&*store, &mut allocated["spec"], None, &svc_ns, &n2) {
                Ok(ports) => ports,
                Err(e) => {
                    if takes_ip {
                        let _ = super::clusterip::release(&*store, &allocated["spec"], &svc_ns, &n2);
                    }
                    return Err(e);
                }
            }
        } else {
            Vec::new()
        };
        if takes_ip || !ports.is_empty() {
            value = encode_limited(&stored_form(r, &allocated))?;
        }
        match store.create(&key, &value) {
            Ok(rev) => Ok((Some(rev), allocated)),
            Err(e) => {
                // Best effort: the repair loop frees what this misses.
                if takes_ip {
                    let _ = super::clusterip::release(&*store, &allocated["spec"], &svc_ns, &n2);
                }
                super::nodeport::give_back(&*store, &ports, &svc_ns, &n2);
                Err(RegistryError::from_store(e, plural, &n2))
            }
        }
    })
    .await?;
    let mut obj = allocated;
    if let Some(revision) = revision {
        obj["metadata"]["resourceVersion"] = json!(revision.to_string());
    }
    Ok(obj)
}

/// apimachinery's utilrand.String(5): no vowels (no words) and none of 0, 1, 3 (no
/// look-alikes), so generated names read as kube's do.
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5).map(|_| ALPHABET[rand::random::<u32>() as usize % ALPHABET.len()] as char).collect()
}

pub async fn get(store: Store, r: &'static Resource, ns: Option<String>, name: String) -> Result<Value, RegistryError> {
    let key = r.key(ns.as_deref(), Some(&name));
    let name2 = name.clone();
    let kv = blocking(move || store.get(&key).map_err(|e| RegistryError::from_store(e, r.plural, &name2))).await?;
    decode_as(r, &kv.ok_or_else(|| RegistryError::not_found(r.plural, &name))?)
}

pub struct ListOptions {
    pub limit: usize,
    pub continue_after: Option<String>,
    pub resource_version: Option<i64>,
    pub selectors: super::selectors::Selectors,
}

/// One page of a list as the store holds it, with the list's metadata (resourceVersion,
/// and the continue token when more follows).
async fn read_page(
    store: Store,
    r: &'static Resource,
    ns: Option<String>,
    limit: usize,
    continue_after: Option<String>,
    resource_version: Option<i64>,
) -> Result<(ListResult, Value), RegistryError> {
    let prefix = r.key(ns.as_deref(), None);
    let after = continue_after.map(|c| format!("{prefix}{c}"));
    let p = prefix.clone();
    // A continue token pins the revision of the first page, as the API server's does.
    let result = blocking(move || {
        store
            .list(&p, after.as_deref(), limit, resource_version)
            .map_err(|e| RegistryError::from_store(e, r.plural, ""))
    })
    .await?;
    let mut meta = json!({"resourceVersion": result.revision.to_string()});
    if result.more {
        let last = result.items.last().map(|kv| kv.key[prefix.len()..].to_string()).unwrap_or_default();
        meta["continue"] = json!(format!("{}:{last}", result.revision));
    }
    Ok((result, meta))
}

pub async fn list(
    store: Store,
    r: &'static Resource,
    ns: Option<String>,
    opts: ListOptions,
) -> Result<Value, RegistryError> {
    let (page, meta) = read_page(store, r, ns, opts.limit, opts.continue_after, opts.resource_version).await?;
    let mut items = page.items.iter().map(|kv| decode_as(r, kv)).collect::<Result<Vec<_>, _>>()?;
    // Pages are cut before filtering, as the API server cuts them: a page may come back
    // short, and the continue token still leads on.
    items.retain(|o| opts.selectors.matches(o));
    Ok(json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": meta, "items": items}))
}

/// [`list`] as the JSON the API answers, written from the stored bytes (see [`super::raw`]),
/// with the revision it was read at.
pub async fn list_json(
    store: Store,
    r: &'static Resource,
    ns: Option<String>,
    opts: ListOptions,
) -> Result<(i64, Vec<u8>), RegistryError> {
    let (page, meta) = read_page(store, r, ns, opts.limit, opts.continue_after, opts.resource_version).await?;
    let mut out = list_head(r, meta)?;
    let mut started = false;
    write_items(r, &page.items, &opts.selectors, &mut started, &mut out)?;
    out.extend_from_slice(b"]}");
    Ok((page.revision, out))
}

/// A list's JSON up to its first item: `{"kind":…,"metadata":…,"items":[`.
fn list_head(r: &Resource, meta: Value) -> Result<Vec<u8>, RegistryError> {
    let mut head = serde_json::to_vec(&json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(),
        "metadata": meta}))
    .map_err(|e| RegistryError::internal(e.to_string()))?;
    head.pop(); // the closing brace: the items follow
    head.extend_from_slice(b",\"items\":[");
    Ok(head)
}

/// Appends the stored objects the selectors match, each after a comma unless it is the
/// list's first.
fn write_items(
    r: &Resource,
    items: &[KeyValue],
    selectors: &super::selectors::Selectors,
    started: &mut bool,
    out: &mut Vec<u8>,
) -> Result<(), RegistryError> {
    for kv in items {
        if selectors.is_empty() {
            if std::mem::replace(started, true) {
                out.push(b',');
            }
            super::raw::write_object(r, kv, out)?;
            continue;
        }
        let obj = decode_as(r, kv)?;
        if !selectors.matches(&obj) {
            continue;
        }
        if std::mem::replace(started, true) {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, &obj).map_err(|e| RegistryError::internal(e.to_string()))?;
    }
    Ok(())
}

/// How much of the store a streamed list reads at a time: one page of values held, and
/// the page written out, whatever the list's length (pages of 32 objects, however small,
/// cost a store read and a thread hand-off for every 32).
const STREAM_PAGE_BYTES: usize = 1 << 20;

/// A whole list (no `limit`), streamed: read from the store page by page at the revision
/// of the first page and written out as it is read, so that memory stays bounded however
/// large the collection (one list used to answer 360 MiB, built whole in memory).
/// `at_least`: the client's resourceVersion, which the first page's revision must reach.
/// An error after the first page (the revision compacted meanwhile) ends the body early,
/// which the client sees as a broken response and lists again.
pub async fn list_streamed(
    store: Store,
    r: &'static Resource,
    ns: Option<String>,
    resource_version: Option<i64>,
    at_least: Option<i64>,
    selectors: super::selectors::Selectors,
) -> Result<impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static, RegistryError> {
    let prefix = r.key(ns.as_deref(), None);
    let page = move |store: Store, prefix: String, after: Option<String>, revision: Option<i64>| {
        blocking(move || {
            store
                .list_within(&prefix, after.as_deref(), 0, STREAM_PAGE_BYTES, revision)
                .map_err(|e| RegistryError::from_store(e, r.plural, ""))
        })
    };
    let first = page(store.clone(), prefix.clone(), None, resource_version).await?;
    if let Some(rv) = at_least
        && first.revision < rv
    {
        return Err(RegistryError::from_store(
            crate::server::store::StoreError::FutureRevision { requested: rv, current: first.revision },
            r.plural,
            "",
        ));
    }
    let revision = first.revision;
    let selectors = Arc::new(selectors);
    // The items of one page, each after a comma unless it is the list's first.
    let render = move |items: &[KeyValue], selectors: &super::selectors::Selectors, started: &mut bool| {
        let mut out = Vec::new();
        write_items(r, items, selectors, started, &mut out)?;
        Ok::<_, RegistryError>(out)
    };
    let mut started = false;
    let mut head = list_head(r, json!({"resourceVersion": revision.to_string()}))?;
    head.extend(render(&first.items, &selectors, &mut started)?);
    let next = first.more.then(|| first.items.last().map(|kv| kv.key[prefix.len()..].to_string())).flatten();
    let state = (next, started, false);
    let rest = futures_util::stream::unfold(state, move |(after, mut started, ended)| {
        let (store, prefix, selectors) = (store.clone(), prefix.clone(), selectors.clone());
        async move {
            if ended {
                return None;
            }
            let Some(after) = after else {
                return Some((Ok(b"]}".to_vec()), (None, started, true)));
            };
            let result = page(store, prefix.clone(), Some(format!("{prefix}{after}")), Some(revision)).await;
            let page = match result {
                Ok(p) => p,
                Err(e) => return Some((Err(std::io::Error::other(e.to_string())), (None, started, true))),
            };
            let next = page.more.then(|| page.items.last().map(|kv| kv.key[prefix.len()..].to_string())).flatten();
            match render(&page.items, &selectors, &mut started) {
                Ok(bytes) => Some((Ok(bytes), (next, started, false))),
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), (None, started, true))),
            }
        }
    });
    let body =
        futures_util::StreamExt::chain(futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) }), rest);
    Ok(body)
}

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The object; its status stays as it is for kinds with a status subresource.
    Main,
    /// `/status`: only the status changes.
    Status,
    /// `/scale`: only spec.replicas changes (the body is an autoscaling/v1 Scale).
    Scale,
    /// A namespace's `/finalize`: only spec.finalizers changes.
    Finalize,
}

/// The autoscaling/v1 Scale of an object with a scale subresource (a Deployment, a
/// ReplicaSet, a custom kind at the paths its CRD names).
pub fn scale_of(r: &Resource, obj: &Value) -> Value {
    let (spec_path, status_path, selector_path) = r.scale_paths();
    let selector = match selector_path {
        // A custom kind's selector is a string in its status already.
        Some(p) => obj.pointer(p).and_then(Value::as_str).map(str::to_string),
        None => obj.pointer("/spec/selector/matchLabels").and_then(Value::as_object).map(|m| {
            m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(",")
        }),
    };
    let default_replicas = if r.custom.is_some() { 0 } else { 1 };
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"], "uid": obj["metadata"]["uid"],
                     "resourceVersion": obj["metadata"]["resourceVersion"], "creationTimestamp": obj["metadata"]["creationTimestamp"]},
        "spec": {"replicas": obj.pointer(spec_path).and_then(Value::as_i64).unwrap_or(default_replicas)},
        "status": {"replicas": obj.pointer(status_path).and_then(Value::as_i64).unwrap_or(0), "selector": selector.unwrap_or_default()},
    })
}

/// Sets the value at JSON pointer `path` of `obj`, making the objects on the way.
fn set_at(obj: &mut Value, path: &str, value: Value) {
    let mut at = obj;
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !at.is_object() {
            *at = json!({});
        }
        if i == parts.len() - 1 {
            at[*part] = value;
            return;
        }
        at = &mut at[*part];
    }
}

/// Whether `candidate` has a status and is `old` but for it.
fn equal_but_status(old: &Value, candidate: &Value) -> bool {
    let (Some(old), Some(candidate)) = (old.as_object(), candidate.as_object()) else { return false };
    fn rest(m: &Map<String, Value>) -> impl Iterator<Item = (&String, &Value)> {
        m.iter().filter(|(k, _)| *k != "status")
    }
    candidate.contains_key("status") && rest(old).eq(rest(candidate))
}

/// Reads the object, lets `change` compute the new one from it, keeps what the server owns,
/// and writes it back if nobody wrote in between. Without a resourceVersion in the result
/// the write is retried on a concurrent change, as the API server retries patches.
async fn read_modify_write(
    store: Store,
    r: &'static Resource,
    ns: Option<String>,
    name: String,
    (part, applying): (Part, bool),
    Checks { validation, guard, dry_run, manager }: Checks,
    change: impl Fn(&Value) -> Result<Value, RegistryError> + Send + 'static,
) -> Result<Value, RegistryError> {
    let key = r.key(ns.as_deref(), Some(&name));
    blocking(move || {
        for _ in 0..5 {
            let current = store
                .get(&key)
                .map_err(|e| RegistryError::from_store(e, r.plural, &name))?
                .ok_or_else(|| RegistryError::not_found(r.plural, &name))?;
            let old = decode_as(r, &current)?;
            let mut candidate = change(&old)?;
            // A patch may turn the object (or its metadata) into anything: refused before
            // anything below writes into it.
            if let Some(problem) = shape_problem(&candidate) {
                return Err(RegistryError::invalid(&r.qualified_kind(), &name, vec![("patch".into(), problem)]));
            }
            if let Some(v) =
                candidate["metadata"].get("resourceVersion").and_then(Value::as_str).filter(|v| !v.is_empty())
                && v != current.mod_revision.to_string()
            {
                return Err(RegistryError::conflict(r.plural, &name));
            }
            let mut obj = match part {
                Part::Main => {
                    let mut o = candidate;
                    if r.has_status() {
                        match old.get("status") {
                            Some(st) => o["status"] = st.clone(),
                            None => {
                                if let Some(m) = o.as_object_mut() {
                                    m.remove("status");
                                }
                            }
                        }
                    }
                    o
                }
                Part::Finalize => super::deletion::finalized(&old, &candidate),
                // The usual status write changes nothing else: the candidate is kept as it
                // is, not copied (a copy of a pod's spec and metadata was a tenth of the cost).
                Part::Status if equal_but_status(&old, &candidate) => candidate,
                Part::Status => {
                    // All but the status, which the candidate's replaces.
                    let rest = old.as_object().into_iter().flatten().filter(|(k, _)| *k != "status");
                    let mut o = Value::Object(rest.map(|(k, v)| (k.clone(), v.clone())).collect());
                    o["status"] = candidate.as_object_mut().and_then(|c| c.remove("status")).unwrap_or(Value::Null);
                    if applying {
                        o["metadata"]["managedFields"] = candidate["metadata"]["managedFields"].clone();
                    }
                    o
                }
                Part::Scale => {
                    let replicas = candidate.pointer("/spec/replicas").and_then(Value::as_i64).ok_or_else(|| {
                        RegistryError::invalid(
                            "Scale.autoscaling",
                            &name,
                            vec![("spec.replicas".into(), "Required value".into())],
                        )
                    })?;
                    if replicas < 0 {
                        return Err(RegistryError::invalid(
                            "Scale.autoscaling",
                            &name,
                            vec![(
                                "spec.replicas".into(),
                                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                            )],
                        ));
                    }
                    let mut o = old.clone();
                    set_at(&mut o, r.scale_paths().0, json!(replicas));
                    o
                }
            };
            // Identity and what the server owns come from the stored object.
            for field in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match old["metadata"].get(field) {
                    Some(v) => obj["metadata"][field] = v.clone(),
                    None => {
                        if let Some(m) = obj["metadata"].as_object_mut() {
                            m.remove(field);
                        }
                    }
                }
            }
            obj["apiVersion"] = json!(r.api_version());
            obj["kind"] = json!(r.kind);
            // The status and scale subresources change no spec but their own field: only a
            // write of the object is defaulted (what is stored already was).
            // A Service that becomes ExternalName gives its cluster IP up; one that stops
            // being ExternalName gets one (below, once the update is valid).
            let mut ip_change = (false, false);
            if part == Part::Main {
                r.apply_defaults(&mut obj);
                (r.strategy().keep_allocated)(&mut obj, &old);
                if r.kind == "Service" {
                    let had = old["spec"]["type"] != "ExternalName" && !super::clusterip::held(&old["spec"]).is_empty();
                    let wants = super::clusterip::wants_ip(&obj["spec"]);
                    if had && obj["spec"]["type"] == "ExternalName" {
                        if let Some(spec) = obj["spec"].as_object_mut() {
                            spec.remove("clusterIP");
                            spec.remove("clusterIPs");
                        }
                        ip_change.1 = true;
                    } else if old["spec"]["type"] == "ExternalName" && wants {
                        ip_change.0 = true;
                    }
                }
            }
            if let Some(g) = &guard {
                g(Some(&old), Some(&obj))?;
            }
            if part == Part::Status && r.custom.is_none() {
                // Only the status changed: the spec and metadata are the stored ones, checked
                // when they were written, and decoding them again was most of a pod status
                // write's cost. They are set aside for the check, not copied.
                let aside: Vec<(String, Value)> = ["spec", "metadata"]
                    .into_iter()
                    .filter_map(|k| obj.as_object_mut().and_then(|o| o.remove(k)).map(|v| (k.to_string(), v)))
                    .collect();
                let checked = check(r, &obj, &name, validation, Decoded::Written);
                if let Some(o) = obj.as_object_mut() {
                    o.extend(aside);
                }
                checked?;
            } else {
                check(r, &obj, &name, validation, Decoded::Written)?;
            }
            if part == Part::Main {
                validate(r, &obj, Some(&old), &name)?;
            }
            r.normalize(&mut obj);
            // An apply's change set managedFields itself.
            if !applying {
                track(r, Some(&old), &mut obj, manager.as_deref(), part);
            }
            if old.get("spec") != obj.get("spec") {
                obj["metadata"]["generation"] = json!(old["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
            }
            if dry_run {
                obj["metadata"]["resourceVersion"] = json!(current.mod_revision.to_string());
                return Ok(obj);
            }
            let svc_ns = ns.clone().unwrap_or_default();
            if ip_change.0 {
                super::clusterip::allocate(&*store, &mut obj["spec"], &svc_ns, &name)?;
                r.apply_defaults(&mut obj);
            }
            // Node ports the update asks for or needs anew are taken before it is stored.
            let ports = if r.kind == "Service" && part == Part::Main {
                match super::nodeport::allocate(&*store, &mut obj["spec"], Some(&old["spec"]), &svc_ns, &name) {
                    Ok(ports) => ports,
                    Err(e) => {
                        if ip_change.0 {
                            let _ = super::clusterip::release(&*store, &obj["spec"], &svc_ns, &name);
                        }
                        return Err(e);
                    }
                }
            } else {
                Vec::new()
            };
            // An object being deleted goes when its last finalizer does.
            let result = if obj["metadata"]["deletionTimestamp"].is_string()
                && !has_finalizers(&obj)
                && !(r.strategy().awaits_node)(&obj)
            {
                store.delete(&key, Some(current.mod_revision)).map(|(rev, gone)| {
                    if let Ok(gone) = decode_as(r, &gone) {
                        release_allocated(&*store, r, &gone);
                    }
                    rev
                })
            } else {
                store.update(&key, &encode_limited(&stored_form(r, &obj))?, Some(current.mod_revision))
            };
            if result.is_ok() && ip_change.1 {
                let _ = super::clusterip::release(&*store, &old["spec"], &svc_ns, &name);
            }
            if result.is_err() && ip_change.0 {
                let _ = super::clusterip::release(&*store, &obj["spec"], &svc_ns, &name);
            }
            if result.is_err() {
                super::nodeport::give_back(&*store, &ports, &svc_ns, &name);
            } else if r.kind == "Service" && part == Part::Main {
                // Those the update no longer holds (a port removed, a type without them).
                let _ = super::nodeport::release(&*store, &old["spec"], Some(&obj["spec"]), &svc_ns, &name);
            }
            match result {
                Ok(revision) => {
                    obj["metadata"]["resourceVersion"] = json!(revision.to_string());
                    return Ok(obj);
                }
                Err(crate::server::store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(RegistryError::from_store(e, r.plural, &name)),
            }
        }
        Err(RegistryError::conflict(r.plural, &name))
    })
    .await
}

pub async fn update(
    store: Store,
    r: &'static Resource,
    ns: Option<String>,
    name: String,
    part: Part,
    body: &[u8],
    checks: impl Into<Checks>,
) -> Result<Value, RegistryError> {
    let checks = checks.into();
    let obj = if part == Part::Scale {
        serde_json::from_slice(body)
            .map_err(|e| RegistryError::bad_request(format!("the request body is not valid JSON: {e}")))?
    } else {
        parse_body(r, body)?
    };
    if obj["metadata"].get("name").and_then(Value::as_str).is_some_and(|n| n != name) {
        return Err(RegistryError::bad_request("the name of the object does not match the name on the URL"));
    }
    read_modify_write(store, r, ns, name, (part, false), checks, move |_| Ok(obj.clone())).await
}

fn has_finalizers(obj: &Value) -> bool {
    super::deletion::held(obj)
}

/// DeleteOptions, from the body or the query.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub precondition_rv: Option<i64>,
    pub precondition_uid: Option<String>,
    pub propagation: Option<super::deletion::Propagation>,
    /// dryRun=All: answer what the delete would do, change nothing.
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn parse(body: &[u8], query_grace: Option<&String>) -> Result<DeleteOptions, RegistryError> {
        let mut o = DeleteOptions::default();
        if !body.is_empty() {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| RegistryError::bad_request(format!("DeleteOptions are not valid JSON: {e}")))?;
            o.grace_period = v["gracePeriodSeconds"].as_i64();
            o.precondition_rv =
                v.pointer("/preconditions/resourceVersion").and_then(Value::as_str).and_then(|s| s.parse().ok());
            o.precondition_uid = v.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from);
            o.propagation = super::deletion::Propagation::from_options(&v)?;
            // kubectl delete --dry-run=server sends it here rather than in the query.
            match v.get("dryRun") {
                None | Some(Value::Null) => {}
                Some(Value::Array(a)) if a.iter().all(|x| x == "All") => o.dry_run = !a.is_empty(),
                Some(other) => {
                    return Err(RegistryError::bad_request(format!(
                        "dryRun: Unsupported value: {other}: supported values: \"All\""
                    )));
                }
            }
        }
        if let Some(g) = query_grace {
            o.grace_period =
                Some(g.parse().map_err(|_| RegistryError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?);
        }
        Ok(o)
    }
}

/// Deletes an object. One with finalizers, or a pod on a node with a grace period, is only
/// marked (deletionTimestamp) and goes later: when its finalizers are removed, or when its
/// kubelet deletes it with grace 0. Answers the object as it now stands.
pub async fn delete(
    store: Store,
    r: &'static Resource,
    ns: Option<String>,
    name: String,
    opts: DeleteOptions,
    guard: Option<Guard>,
) -> Result<Value, RegistryError> {
    let key = r.key(ns.as_deref(), Some(&name));
    blocking(move || {
        for _ in 0..5 {
            let current = store
                .get(&key)
                .map_err(|e| RegistryError::from_store(e, r.plural, &name))?
                .ok_or_else(|| RegistryError::not_found(r.plural, &name))?;
            let mut obj = decode_as(r, &current)?;
            if let Some(g) = &guard {
                g(Some(&obj), None)?;
            }
            if opts.precondition_rv.is_some_and(|rv| rv != current.mod_revision)
                || opts.precondition_uid.as_ref().is_some_and(|u| obj["metadata"]["uid"].as_str() != Some(u.as_str()))
            {
                return Err(RegistryError::conflict(r.plural, &name));
            }
            let strategy = r.strategy();
            if let Some(refused) = (strategy.refuse_delete)(&name) {
                return Err(refused);
            }
            let grace = (strategy.grace)(&obj, opts.grace_period);
            let marked = obj["metadata"]["deletionTimestamp"].is_string();
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            // Foreground and Orphan add the finalizer that has the garbage collector deal
            // with the dependents first.
            let policy_changed = super::deletion::apply_policy(&mut obj, opts.propagation);
            if has_finalizers(&obj) || (strategy.awaits_node)(&obj) {
                if marked && opts.grace_period.is_none() && !policy_changed {
                    return Ok(obj);
                }
                if !marked {
                    obj["metadata"]["deletionTimestamp"] =
                        // Saturating: the grace period is the client's number.
                        json!(crate::model::time::format_rfc3339(crate::model::time::now_secs().saturating_add(grace)));
                    (strategy.on_mark)(&mut obj);
                }
                if opts.dry_run {
                    obj["metadata"]["resourceVersion"] = json!(current.mod_revision.to_string());
                    return Ok(obj);
                }
                match store.update(&key, &encode(&stored_form(r, &obj)), Some(current.mod_revision)) {
                    Ok(rev) => {
                        obj["metadata"]["resourceVersion"] = json!(rev.to_string());
                        return Ok(obj);
                    }
                    Err(crate::server::store::StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(RegistryError::from_store(e, r.plural, &name)),
                }
            }
            if opts.dry_run {
                return deleted(r, decode_as(r, &current)?);
            }
            match store.delete(&key, Some(current.mod_revision)) {
                Ok((_, old)) => {
                    let old = decode_as(r, &old)?;
                    release_allocated(&*store, r, &old);
                    return deleted(r, old);
                }
                Err(crate::server::store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(RegistryError::from_store(e, r.plural, &name)),
            }
        }
        Err(RegistryError::conflict(r.plural, &name))
    })
    .await
}

/// What a deleted object held that the server allocated (a Service's cluster IP), given
/// back. Best effort: the repair loop frees what this misses.
fn release_allocated(store: &dyn Backend, r: &Resource, old: &Value) {
    if r.kind == "Service" {
        let ns = old["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = old["metadata"]["name"].as_str().unwrap_or_default();
        if let Err(e) = super::clusterip::release(store, &old["spec"], ns, name) {
            tracing::warn!(service = %format!("{ns}/{name}"), error = %e, "releasing the cluster IP");
        }
        if let Err(e) = super::nodeport::release(store, &old["spec"], None, ns, name) {
            tracing::warn!(service = %format!("{ns}/{name}"), error = %e, "releasing the node ports");
        }
    }
}

/// What an immediate delete answers, as the API server's registries do: the object for
/// pods and services (their registries return it), a Success Status naming it otherwise.
fn deleted(r: &Resource, obj: Value) -> Result<Value, RegistryError> {
    if r.strategy().delete_answers_object {
        return Ok(obj);
    }
    let mut details = json!({"name": obj["metadata"]["name"], "kind": r.plural, "uid": obj["metadata"]["uid"]});
    if !r.group.is_empty() {
        details["group"] = json!(r.group);
    }
    Ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}))
}

/// deletecollection: every object of the collection that the selectors pick, deleted one
/// by one; answers the list of what went.
pub async fn delete_collection(
    store: Store,
    r: &'static Resource,
    ns: Option<String>,
    selectors: super::selectors::Selectors,
) -> Result<Value, RegistryError> {
    let prefix = r.key(ns.as_deref(), None);
    let items = blocking(move || {
        let list = store.list(&prefix, None, 0, None).map_err(|e| RegistryError::from_store(e, r.plural, ""))?;
        let mut gone = Vec::new();
        for kv in &list.items {
            let obj = decode_as(r, kv)?;
            if !selectors.matches(&obj) {
                continue;
            }
            match store.delete(&kv.key, None) {
                Ok((_, old)) => {
                    let old = decode_as(r, &old)?;
                    release_allocated(&*store, r, &old);
                    gone.push(old);
                }
                // Deleted by someone else meanwhile: gone all the same.
                Err(crate::server::store::StoreError::NotFound { .. }) => {}
                Err(e) => return Err(RegistryError::from_store(e, r.plural, "")),
            }
        }
        Ok(gone)
    })
    .await?;
    Ok(json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": {}, "items": items}))
}

/// The patch formats the API accepts, by request Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    /// Server-side apply (`application/apply-patch+yaml`); `force` takes fields other
    /// managers own.
    Apply {
        force: bool,
    },
}

impl PatchKind {
    /// The kind of a Content-Type; an apply is not forced (the `force` option says).
    pub fn from_content_type(ct: &str) -> Option<PatchKind> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            APPLY_PATCH => Some(PatchKind::Apply { force: false }),
            _ => None,
        }
    }
}

/// Server-side apply's Content-Type.
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// An applied configuration: YAML (or JSON), a whole object of `r`'s kind named `name`,
/// cut to the part it applies to (a subresource's or the object's own fields).
fn applied_config(r: &Resource, name: &str, part: Part, body: &[u8]) -> Result<Value, RegistryError> {
    let config: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => serde_yaml_ng::from_slice(body)
            .map_err(|e| RegistryError::bad_request(format!("error decoding YAML: {e}")))?,
    };
    for field in ["apiVersion", "kind"] {
        if config.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(RegistryError::bad_request(format!("{field} must be set in an applied configuration")));
        }
    }
    let mut config = as_body(r, config)?;
    match config["metadata"].get("name").and_then(Value::as_str) {
        Some(n) if n != name => {
            return Err(RegistryError::bad_request("the name of the object does not match the name on the URL"));
        }
        _ => config["metadata"]["name"] = json!(name),
    }
    // The main resource's apply owns no status, and a status apply nothing else, as the
    // API server resets those fields.
    if r.has_status()
        && let Some(m) = config.as_object_mut()
    {
        match part {
            Part::Status => m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")),
            _ => {
                m.remove("status");
            }
        }
    }
    Ok(config)
}

/// Server-side apply of `body` by `checks.manager`: to the stored object, or, for the main
/// resource, as a create when there is none. The object, and whether it was created.
pub async fn apply(
    store: Store,
    r: &'static Resource,
    ns: Option<String>,
    name: String,
    part: Part,
    (force, body): (bool, &[u8]),
    checks: impl Into<Checks>,
) -> Result<(Value, bool), RegistryError> {
    let checks = checks.into();
    let Some(manager) = checks.manager.clone() else {
        return Err(RegistryError::bad_request("fieldManager is required for apply requests"));
    };
    if part == Part::Scale || part == Part::Finalize {
        return Err(RegistryError::bad_request("apply is not supported on this subresource"));
    }
    let config = applied_config(r, &name, part, body)?;
    let writer = super::managed::Writer {
        manager,
        api_version: r.api_version(),
        subresource: (part == Part::Status).then_some("status"),
        types: super::managed::shape::Types::of(r.custom.and_then(|c| c.schema.as_ref())),
    };
    let failed = |e: super::managed::ApplyError, name: &str| match e {
        super::managed::ApplyError::Invalid(why) => {
            RegistryError::invalid(&r.qualified_kind(), name, vec![("metadata.managedFields".into(), why)])
        }
        super::managed::ApplyError::Conflicts(c) => RegistryError::ApplyConflict {
            message: super::managed::conflict_message(&c),
            causes: c.into_iter().map(|c| (c.field, format!("conflict with {}", c.manager))).collect(),
        },
    };
    for _ in 0..2 {
        let (config2, writer2, n) = (config.clone(), writer.clone(), name.clone());
        let updated =
            read_modify_write(store.clone(), r, ns.clone(), name.clone(), (part, true), checks.clone(), move |old| {
                let mut obj =
                    super::managed::apply(Some(old), &config2, &writer2, force, &now()).map_err(|e| failed(e, &n))?;
                // The read's version, unless the configuration named one.
                if config2.pointer("/metadata/resourceVersion").is_none()
                    && let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut)
                {
                    m.remove("resourceVersion");
                }
                Ok(obj)
            })
            .await;
        match updated {
            Err(RegistryError::NotFound { .. }) if part == Part::Main => {}
            other => return other.map(|obj| (obj, false)),
        }
        let obj = super::managed::apply(None, &config, &writer, force, &now()).map_err(|e| failed(e, &name))?;
        match create_object(store.clone(), r, ns.clone(), obj, checks.clone(), Ownership::Applied).await {
            // Created by someone else meanwhile: apply to theirs.
            Err(RegistryError::AlreadyExists { .. }) => continue,
            other => return other.map(|obj| (obj, true)),
        }
    }
    Err(RegistryError::conflict(r.plural, &name))
}

pub async fn patch(
    store: Store,
    r: &'static Resource,
    ns: Option<String>,
    name: String,
    part: Part,
    (kind, body): (PatchKind, &[u8]),
    checks: impl Into<Checks>,
) -> Result<Value, RegistryError> {
    let checks = checks.into();
    if let PatchKind::Apply { force } = kind {
        return apply(store, r, ns, name, part, (force, body), checks).await.map(|(obj, _)| obj);
    }
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| RegistryError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    // As the API server refuses them: a merge patch that is not an object would replace the
    // whole object, and a JSON patch is a list of operations.
    match (kind, &patch) {
        (PatchKind::Merge | PatchKind::Strategic, Value::Object(_)) | (PatchKind::Json, Value::Array(_)) => {}
        (PatchKind::Json, other) => {
            return Err(RegistryError::bad_request(format!(
                "the JSON patch must be a list of operations, not {}",
                type_name(other)
            )));
        }
        (_, other) => {
            return Err(RegistryError::bad_request(format!(
                "the merge patch must be a JSON object, not {}",
                type_name(other)
            )));
        }
    }
    let n = name.clone();
    read_modify_write(store, r, ns, name, (part, false), checks, move |old| {
        // A scale patch applies to the Scale, not to the object.
        let mut target = if part == Part::Scale { scale_of(r, old) } else { old.clone() };
        let applied = match kind {
            PatchKind::Merge => {
                super::patch::merge_patch(&mut target, &patch);
                Ok(())
            }
            PatchKind::Json => super::patch::json_patch(&mut target, &patch),
            PatchKind::Strategic => super::patch::strategic_merge_patch(&mut target, &patch),
            PatchKind::Apply { .. } => Err(super::patch::PatchError("an apply is not a patch".into())),
        };
        applied.map_err(|e| RegistryError::invalid(&r.qualified_kind(), &n, vec![("patch".into(), e.0)]))?;
        // The patched copy carries the read's resourceVersion, unless the patch set one.
        if patch.pointer("/metadata/resourceVersion").is_none()
            && let Some(m) = target.get_mut("metadata").and_then(Value::as_object_mut)
        {
            m.remove("resourceVersion");
        }
        Ok(target)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status write keeps its candidate only when nothing but the status differs, and
    /// the candidate has one (else the stored rest and a null status are written).
    #[test]
    fn a_status_write_is_kept_whole_only_when_the_rest_is_unchanged() {
        let old = json!({"metadata": {"name": "p"}, "spec": {"a": 1}, "status": {"phase": "Pending"}});
        let status_only = json!({"metadata": {"name": "p"}, "spec": {"a": 1}, "status": {"phase": "Running"}});
        assert!(equal_but_status(&old, &status_only));
        let spec_too = json!({"metadata": {"name": "p"}, "spec": {"a": 2}, "status": {"phase": "Running"}});
        assert!(!equal_but_status(&old, &spec_too));
        let field_added = json!({"metadata": {"name": "p"}, "spec": {"a": 1}, "extra": 1, "status": {}});
        assert!(!equal_but_status(&old, &field_added));
        let no_status = json!({"metadata": {"name": "p"}, "spec": {"a": 1}});
        assert!(!equal_but_status(&old, &no_status));
        assert!(!equal_but_status(&old, &json!([])));
    }

    /// What the store keeps: the object less metadata's resourceVersion and selfLink,
    /// nothing else changed, however deep a field of that name is.
    #[test]
    fn encode_drops_the_revision_and_self_link_only() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "resourceVersion": "7", "selfLink": "/x", "labels": {"resourceVersion": "kept"}},
            "spec": {"metadata": {"resourceVersion": "deep"}}});
        let stored: Value = serde_json::from_slice(&encode(&obj)).unwrap();
        assert_eq!(
            stored,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"resourceVersion": "kept"}},
                   "spec": {"metadata": {"resourceVersion": "deep"}}})
        );
        assert_eq!(encode(&json!([1])), b"[1]");
        assert_eq!(encode(&json!({"metadata": null})), br#"{"metadata":null}"#);
    }
}
