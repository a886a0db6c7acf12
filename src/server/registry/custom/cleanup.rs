//! Deleting a CRD deletes its objects first, as apiextensions-apiserver's finalizer
//! controller does: the CRD, marked for deletion, keeps its finalizer while every object
//! of its kind is deleted (through the registry, so their own finalizers and watchers see
//! it as any delete), and loses it once none is left; the delete then completes.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use super::definition::CLEANUP_FINALIZER;
use crate::server::registry::RegistryError;
use crate::server::registry::objects::{self, DeleteOptions, PatchKind, Store, blocking, decode};
use crate::server::registry::resources::Resource;

/// Whether `crd` is being deleted and waits for its objects to go.
pub fn due(crd: &Value) -> bool {
    crd.pointer("/metadata/deletionTimestamp").is_some_and(Value::is_string)
        && crd
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|f| f == CLEANUP_FINALIZER))
}

/// The CRDs being cleaned up by this server now.
fn running() -> &'static Mutex<HashSet<String>> {
    static RUNNING: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    RUNNING.get_or_init(Mutex::default)
}

/// Starts the cleanup of `crd`, unless one runs already.
pub fn start(store: Store, crd: &Value) {
    let Some(name) = crd.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string) else { return };
    let spec = crd["spec"].clone();
    if !running().lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone()) {
        return;
    }
    tokio::spawn(async move {
        loop {
            match clean(&store, &name, &spec).await {
                Ok(true) => break,
                Ok(false) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(err) => {
                    tracing::warn!(crd = %name, %err, "deleting a CRD's objects failed; trying again");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        running().lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
    });
}

/// The resource the objects of `spec`'s kind are stored as.
fn stored(spec: &Value) -> Option<&'static Resource> {
    let group = spec["group"].as_str()?;
    let plural = spec.pointer("/names/plural").and_then(Value::as_str)?;
    let version = spec["versions"].as_array()?.iter().find(|v| v["storage"] == true)?["name"].as_str()?;
    super::find(group, version, plural)
        .or_else(|| super::all().into_iter().find(|r| r.group == group && r.plural == plural))
}

/// One round: deletes what is left; true once nothing is and the finalizer is gone.
async fn clean(store: &Store, name: &str, spec: &Value) -> Result<bool, RegistryError> {
    let definitions = super::definitions()?;
    let crd = match objects::get(store.clone(), definitions, None, name.to_string()).await {
        Ok(crd) => crd,
        Err(RegistryError::NotFound { .. }) => return Ok(true),
        Err(e) => return Err(e),
    };
    if !due(&crd) {
        return Ok(true);
    }
    if let Some(r) = stored(spec) {
        let (s, prefix) = (store.clone(), r.key(None, None));
        let list =
            blocking(move || s.list(&prefix, None, 0, None).map_err(|e| RegistryError::from_store(e, r.plural, "")))
                .await?;
        if !list.items.is_empty() {
            for kv in &list.items {
                let Ok(obj) = decode(kv) else { continue };
                if obj.pointer("/metadata/deletionTimestamp").is_some_and(Value::is_string) {
                    continue;
                }
                let meta = &obj["metadata"];
                let ns = meta["namespace"].as_str().map(str::to_string);
                let obj_name = meta["name"].as_str().unwrap_or_default().to_string();
                match objects::delete(store.clone(), r, ns, obj_name, DeleteOptions::default(), None).await {
                    Ok(_) | Err(RegistryError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(false);
        }
    }
    let finalizers: Vec<Value> = crd
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| *f != CLEANUP_FINALIZER)
        .cloned()
        .collect();
    let rv = crd.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
    let body = json!({"metadata": {"finalizers": finalizers, "resourceVersion": rv}}).to_string();
    match objects::patch(
        store.clone(),
        definitions,
        None,
        name.to_string(),
        objects::Part::Main,
        (PatchKind::Merge, body.as_bytes()),
        objects::Checks::default(),
    )
    .await
    {
        Ok(_) | Err(RegistryError::NotFound { .. }) => Ok(true),
        Err(RegistryError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
