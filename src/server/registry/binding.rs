//! Binding a pod to a node (`pods/binding`, and the scheduler in-process): spec.nodeName
//! set once, the binding's annotations copied, and the pod marked PodScheduled, as the API
//! server's binding storage does.

use serde_json::{Map, Value, json};

use super::error::RegistryError;
use super::objects::{decode, encode_limited};
use super::resources::Resource;
use crate::server::store::{Backend, StoreError};

/// What to bind: the pod (and, if given, the incarnation it must be), the node.
pub struct Binding {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub node: String,
    pub annotations: Map<String, Value>,
}

/// Binds in the store (blocking). A pod already bound, being deleted, or not the given
/// incarnation is a Conflict naming why; a concurrent write is retried.
pub fn bind(store: &dyn Backend, pods: &'static Resource, b: &Binding) -> Result<(), RegistryError> {
    let key = pods.key(Some(&b.namespace), Some(&b.name));
    let conflict = |why: String| RegistryError::ConflictWith { resource: "pods".into(), name: b.name.clone(), why };
    for _ in 0..5 {
        let current = store
            .get(&key)
            .map_err(|e| RegistryError::from_store(e, pods.plural, &b.name))?
            .ok_or_else(|| RegistryError::not_found(pods.plural, &b.name))?;
        let mut pod = decode(&current)?;
        if b.uid.as_ref().is_some_and(|u| pod["metadata"]["uid"].as_str() != Some(u.as_str())) {
            return Err(conflict("the UID in the binding differs from the pod's".into()));
        }
        if let Some(bound) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            return Err(conflict(format!("pod {} is already assigned to node \"{bound}\"", b.name)));
        }
        if pod["metadata"]["deletionTimestamp"].is_string() {
            return Err(conflict(format!("pod {} is being deleted, cannot be assigned to a host", b.name)));
        }
        if !pod["spec"].is_object() {
            return Err(RegistryError::internal(format!("stored pod {} has no spec", b.name)));
        }
        pod["spec"]["nodeName"] = json!(b.node);
        for (k, v) in &b.annotations {
            pod["metadata"]["annotations"][k] = v.clone();
        }
        let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                               "lastTransitionTime": crate::model::time::now_rfc3339()});
        let mut conditions: Vec<Value> =
            pod.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        conditions.retain(|c| c["type"] != "PodScheduled");
        conditions.push(scheduled);
        pod["status"]["conditions"] = json!(conditions);
        match store.update(&key, &encode_limited(&pod)?, Some(current.mod_revision)) {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(RegistryError::from_store(e, pods.plural, &b.name)),
        }
    }
    Err(RegistryError::conflict(pods.plural, &b.name))
}
