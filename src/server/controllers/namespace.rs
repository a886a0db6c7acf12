//! Namespace finalization: a namespace marked for deletion is emptied of every namespaced
//! object the API serves, then its `kubernetes` finalizer is removed through `/finalize`
//! and the store lets it go, as kube-controller-manager's namespace controller does.
//!
//! An object that does not go at once (finalizers of its own, a pod waiting for its
//! kubelet) keeps the namespace; its deletion, seen by the informer, brings the namespace
//! back here.

use std::sync::Arc;

use serde_json::Value;

use super::ControllerError;
use super::graph::Location;
use super::queue::{self, Queue};
use super::writes;
use crate::server::registry::RegistryError;
use crate::server::registry::deletion::{NAMESPACE_FINALIZER, Propagation};
use crate::server::registry::objects::{Part, Store, decode};
use crate::server::registry::resources::{self, RESOURCES, Resource};

pub struct Finalizer {
    pub store: Store,
    /// Names of namespaces to look at.
    pub queue: Arc<Queue<String>>,
}

/// Namespaces finalized at once (kube's --concurrent-namespace-syncs).
const WORKERS: usize = 10;

impl Finalizer {
    pub async fn run(self) {
        let (queue, me) = (self.queue.clone(), Arc::new(self));
        queue::work(queue, WORKERS, "finalizing a namespace", move |name: String| {
            let me = me.clone();
            async move { me.process(&name).await }
        })
        .await
    }

    async fn process(&self, name: &str) -> Result<(), ControllerError> {
        let namespaces = RESOURCES.iter().find(|r| r.kind == "Namespace").expect("namespaces are served");
        let at = Location { resource: namespaces, namespace: None, name: name.to_string() };
        let ns =
            match crate::server::registry::objects::get(self.store.clone(), namespaces, None, name.to_string()).await {
                Ok(ns) => ns,
                Err(RegistryError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(writes::failed("reading", &at)(e).into()),
            };
        let uid = ns.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
        let ours = ns
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|f| f == NAMESPACE_FINALIZER));
        if !ns.pointer("/metadata/deletionTimestamp").is_some_and(Value::is_string) || !ours {
            return Ok(());
        }
        let mut left = 0;
        for r in resources::all().into_iter().filter(|r| r.namespaced && r.is_storage()) {
            for (obj_at, obj) in self.contents(r, name).await? {
                if obj.pointer("/metadata/deletionTimestamp").is_some_and(Value::is_string) {
                    left += 1;
                    continue;
                }
                let obj_uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
                writes::delete(&self.store, &obj_at, obj_uid, Propagation::Background).await?;
            }
        }
        if left == 0 {
            // What the deletes could not remove at once is still there.
            for r in resources::all().into_iter().filter(|r| r.namespaced && r.is_storage()) {
                left += self.contents(r, name).await?.len();
            }
        }
        if left > 0 {
            tracing::debug!(namespace = %name, left, "namespace waits for objects being deleted");
            return Ok(());
        }
        tracing::debug!(namespace = %name, "namespace is empty; finalizing");
        Ok(writes::modify(&self.store, &at, &uid, Part::Finalize, |obj| {
            let Some(list) = obj.pointer_mut("/spec/finalizers").and_then(Value::as_array_mut) else { return false };
            let before = list.len();
            list.retain(|f| f != NAMESPACE_FINALIZER);
            list.len() != before
        })
        .await?)
    }

    /// The objects of `r` in the namespace, as stored now.
    async fn contents(&self, r: &'static Resource, namespace: &str) -> Result<Vec<(Location, Value)>, ControllerError> {
        let (store, prefix) = (self.store.clone(), r.key(Some(namespace), None));
        let list = tokio::task::spawn_blocking(move || store.list(&prefix, None, 0, None))
            .await
            .map_err(ControllerError::Task)?
            .map_err(|source| ControllerError::Store { what: "listing a namespace's objects", source })?;
        let mut out = Vec::new();
        for kv in &list.items {
            let (Some(at), Ok(obj)) = (Location::parse(&kv.key), decode(kv)) else { continue };
            out.push((at, obj));
        }
        Ok(out)
    }
}
