//! Custom resources: the kinds CustomResourceDefinitions (apiextensions.k8s.io/v1) add
//! to the API while it runs.
//!
//! Every server keeps the served kinds in memory, loaded from the store at start and kept
//! current from its feed of writes ([`follow`]), so that a CRD written through any server
//! on one etcd is served by all. A served version is a [`Resource`] like the built-in
//! ones, with a [`Custom`] part that carries what the CRD says of it (schema,
//! subresources, printer columns); the HTTP layer, the registry, watches, the garbage
//! collector and the namespace controller then treat it as any other resource.
//!
//! Resources are `&'static` everywhere in the registry; a custom one is leaked once per
//! change of its CRD's spec (a few hundred bytes; CRDs change rarely) and reused while
//! the spec stays the same.

pub mod cel;
pub mod cleanup;
pub mod definition;
pub mod schema;

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::objects::{Store, blocking, decode};
use super::resources::Resource;
use crate::server::store::EventKind;

/// The group and version CRDs are served in.
pub const GROUP: &str = "apiextensions.k8s.io";

/// What a CRD says of one served version of its kind.
#[derive(Debug, PartialEq, Eq)]
pub struct Custom {
    /// The CRD's name (`PLURAL.GROUP`).
    pub definition: String,
    /// `openAPIV3Schema` (None: anything goes, nothing is pruned).
    pub schema: Option<Value>,
    /// The status subresource.
    pub status: bool,
    pub scale: Option<ScalePaths>,
    pub columns: Vec<Column>,
    pub categories: &'static [&'static str],
    /// The version objects are stored in.
    pub storage_version: &'static str,
    /// The CRD is being deleted: no new objects.
    pub terminating: bool,
}

/// The scale subresource's paths, as JSON pointers (`.spec.replicas` → `/spec/replicas`).
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// An additionalPrinterColumn.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Column {
    pub name: String,
    pub kind: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// A `.a.b` path of a CRD (scale paths) as a JSON pointer.
pub fn pointer(path: &str) -> String {
    path.replace('.', "/")
}

#[derive(Default)]
struct Served {
    /// CRD name → (its spec and state as last registered, its served resources).
    by_definition: HashMap<String, (Value, Vec<&'static Resource>)>,
}

fn served() -> &'static RwLock<Served> {
    static SERVED: OnceLock<RwLock<Served>> = OnceLock::new();
    SERVED.get_or_init(RwLock::default)
}

/// Every custom resource served now.
pub fn all() -> Vec<&'static Resource> {
    let s = served().read().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<&'static Resource> = s.by_definition.values().flat_map(|(_, rs)| rs.iter().copied()).collect();
    out.sort_by(|a, b| (a.group, a.plural, a.version).cmp(&(b.group, b.plural, b.version)));
    out
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    let s = served().read().unwrap_or_else(|e| e.into_inner());
    s.by_definition
        .values()
        .flat_map(|(_, rs)| rs.iter().copied())
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Whether a kind or a resource name of `group` is taken by a served CRD other than
/// `definition`.
pub fn taken(group: &str, plural: &str, kind: &str, definition: &str) -> Option<String> {
    let s = served().read().unwrap_or_else(|e| e.into_inner());
    s.by_definition.iter().filter(|(name, _)| *name != definition).find_map(|(name, (_, rs))| {
        rs.iter().find(|r| r.group == group && (r.plural == plural || r.kind == kind)).map(|_| name.clone())
    })
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// Serves what `crd` defines, if it is established; stops serving what it no longer does.
pub fn register(crd: &Value) {
    let Some(name) = crd.pointer("/metadata/name").and_then(Value::as_str) else { return };
    let established = definition::condition(crd, "Established");
    if !established {
        unregister(name);
        return;
    }
    let terminating = crd.pointer("/metadata/deletionTimestamp").is_some_and(Value::is_string);
    let fingerprint = serde_json::json!({"spec": crd["spec"], "terminating": terminating});
    let mut s = served().write().unwrap_or_else(|e| e.into_inner());
    if s.by_definition.get(name).is_some_and(|(f, _)| *f == fingerprint) {
        return;
    }
    let resources = resources_of(name, &crd["spec"], terminating);
    tracing::debug!(crd = name, versions = resources.len(), "serving custom resources");
    s.by_definition.insert(name.to_string(), (fingerprint, resources));
}

pub fn unregister(name: &str) {
    let mut s = served().write().unwrap_or_else(|e| e.into_inner());
    if s.by_definition.remove(name).is_some() {
        tracing::debug!(crd = name, "no longer serving custom resources");
    }
}

fn strings(v: &Value) -> &'static [&'static str] {
    let list: Vec<&'static str> = v.as_array().into_iter().flatten().filter_map(Value::as_str).map(leak).collect();
    Box::leak(list.into_boxed_slice())
}

/// The served versions of a CRD's spec, as resources.
fn resources_of(name: &str, spec: &Value, terminating: bool) -> Vec<&'static Resource> {
    let names = &spec["names"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let (group, plural, kind) =
        (leak(&text(&spec["group"])), leak(&text(&names["plural"])), leak(&text(&names["kind"])));
    let singular = match names["singular"].as_str() {
        Some(s) if !s.is_empty() => leak(s),
        _ => leak(&kind.to_ascii_lowercase()),
    };
    let namespaced = spec["scope"] != "Cluster";
    let short_names = strings(&names["shortNames"]);
    let categories = strings(&names["categories"]);
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage_version =
        versions.iter().find(|v| v["storage"] == true).and_then(|v| v["name"].as_str()).map(leak).unwrap_or_default();
    versions
        .iter()
        .filter(|v| v["served"] == true)
        .map(|v| {
            let sub = &v["subresources"];
            let scale = sub.get("scale").filter(|s| s.is_object()).map(|s| ScalePaths {
                spec_replicas: pointer(s["specReplicasPath"].as_str().unwrap_or(".spec.replicas")),
                status_replicas: pointer(s["statusReplicasPath"].as_str().unwrap_or(".status.replicas")),
                label_selector: s["labelSelectorPath"].as_str().map(pointer),
            });
            let columns = v["additionalPrinterColumns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| Column {
                    name: text(&c["name"]),
                    kind: text(&c["type"]),
                    format: text(&c["format"]),
                    description: text(&c["description"]),
                    priority: c["priority"].as_i64().unwrap_or(0),
                    json_path: text(&c["jsonPath"]),
                })
                .collect();
            let custom = Custom {
                definition: name.to_string(),
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                status: sub.get("status").is_some_and(Value::is_object),
                scale,
                columns,
                categories,
                storage_version,
                terminating,
            };
            let r = Resource {
                group,
                version: leak(&text(&v["name"])),
                kind,
                plural,
                singular,
                namespaced,
                short_names,
                custom: Some(Box::leak(Box::new(custom))),
            };
            &*Box::leak(Box::new(r))
        })
        .collect()
}

/// The CRD resource (apiextensions.k8s.io/v1 customresourcedefinitions).
pub fn definitions() -> Result<&'static Resource, super::RegistryError> {
    super::resources::RESOURCES
        .iter()
        .find(|r| r.group == GROUP && r.plural == "customresourcedefinitions")
        .ok_or_else(|| super::RegistryError::internal("CustomResourceDefinitions are not served"))
}

/// Loads every stored CRD: before the server answers, so that custom resources are
/// served from its first request.
pub fn load(store: &Store) -> Result<(), super::RegistryError> {
    let definitions = definitions()?;
    let list = store
        .list(&definitions.key(None, None), None, 0, None)
        .map_err(|e| super::RegistryError::from_store(e, definitions.plural, ""))?;
    for kv in &list.items {
        if let Ok(crd) = decode(kv) {
            register(&crd);
        }
    }
    Ok(())
}

/// Follows the store's writes of CRDs for ever: serves what they define, and removes the
/// objects of one being deleted (see [`cleanup`]).
pub async fn follow(store: Store) {
    let Ok(definitions) = definitions() else { return };
    let prefix = definitions.key(None, None);
    loop {
        let mut feed = store.subscribe();
        let (s, p) = (store.clone(), prefix.clone());
        let listed = blocking(move || {
            s.list(&p, None, 0, None).map_err(|e| super::RegistryError::from_store(e, definitions.plural, ""))
        })
        .await;
        let list = match listed {
            Ok(list) => list,
            Err(err) => {
                tracing::warn!(%err, "listing CustomResourceDefinitions failed; trying again");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut names: Vec<String> = Vec::new();
        for kv in &list.items {
            if let Ok(crd) = decode(kv) {
                seen(&store, &crd);
                names.extend(crd.pointer("/metadata/name").and_then(Value::as_str).map(String::from));
            }
        }
        // What was deleted while the feed lagged.
        for r in all() {
            if let Some(c) = r.custom
                && !names.contains(&c.definition)
            {
                unregister(&c.definition);
            }
        }
        loop {
            match feed.recv().await {
                Ok(e) if e.kv.key.starts_with(&prefix) => match e.kind {
                    EventKind::Put => {
                        if let Ok(crd) = decode(&e.kv) {
                            seen(&store, &crd);
                        }
                    }
                    EventKind::Delete => {
                        if let Some(name) = e.kv.key.strip_prefix(&prefix) {
                            unregister(name);
                        }
                    }
                },
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return,
            }
        }
    }
}

fn seen(store: &Store, crd: &Value) {
    register(crd);
    if cleanup::due(crd) {
        cleanup::start(store.clone(), crd);
    }
}
