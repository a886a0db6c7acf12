//! The garbage collector: objects whose owners (metadata.ownerReferences, by uid) are gone
//! are deleted, and the `foregroundDeletion` and `orphan` finalizers that a DELETE with
//! propagationPolicy Foreground or Orphan sets are carried out, as kube-controller-manager's
//! garbage collector does.
//!
//! Work comes as object uids from the informer. What to do is decided from the graph
//! ([`decide`]); an owner the graph does not know is looked up in the store before its
//! dependent is taken for an orphan, since the graph may lag behind the store.

use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::ControllerError;
use super::graph::{Graph, Location, Node, Owner};
use super::queue::{self, Queue};
use super::writes;
use crate::server::registry::deletion::{FOREGROUND, ORPHAN, Propagation};
use crate::server::registry::objects::{Part, Store};

/// What the collector does for one object, as the graph stands.
#[derive(Debug)]
pub enum Action {
    Nothing,
    /// The owner is deleted with Orphan: its dependents lose their references to it, then
    /// it loses the finalizer.
    Orphan {
        owner: Node,
        dependents: Vec<Node>,
    },
    /// The owner is deleted with Foreground: its dependents are deleted; it loses the
    /// finalizer once no dependent with blockOwnerDeletion is left.
    Foreground {
        owner: Node,
        undeleted: Vec<String>,
        blocked: bool,
    },
    /// A dependent with owners that are gone (as far as the graph knows) or being deleted
    /// in the foreground.
    Dependent {
        node: Node,
        missing: Vec<Owner>,
        waiting: Vec<Owner>,
        solid: Vec<Owner>,
        has_dependents: bool,
    },
}

pub fn decide(graph: &Graph, uid: &str) -> Action {
    let Some(node) = graph.get(uid) else { return Action::Nothing };
    if node.deleting {
        if node.has_finalizer(ORPHAN) {
            let dependents = graph.dependents(uid).into_iter().cloned().collect();
            return Action::Orphan { owner: node.clone(), dependents };
        }
        if node.has_finalizer(FOREGROUND) {
            let dependents = graph.dependents(uid);
            let undeleted = dependents.iter().filter(|d| !d.deleting).map(|d| d.uid.clone()).collect();
            let blocked = dependents.iter().any(|d| d.owners.iter().any(|o| o.uid == uid && o.blocks));
            return Action::Foreground { owner: node.clone(), undeleted, blocked };
        }
        // Being deleted for reasons of its own: its own finalizers decide.
        return Action::Nothing;
    }
    if node.owners.is_empty() {
        return Action::Nothing;
    }
    let (mut missing, mut waiting, mut solid) = (Vec::new(), Vec::new(), Vec::new());
    for o in &node.owners {
        match graph.get(&o.uid) {
            None => missing.push(o.clone()),
            Some(owner) if owner.deleting && owner.has_finalizer(FOREGROUND) => waiting.push(o.clone()),
            Some(_) => solid.push(o.clone()),
        }
    }
    if missing.is_empty() && waiting.is_empty() {
        return Action::Nothing;
    }
    let has_dependents = !graph.dependents(uid).is_empty();
    Action::Dependent { node: node.clone(), missing, waiting, solid, has_dependents }
}

pub struct Collector {
    pub store: Store,
    pub graph: Arc<Mutex<Graph>>,
    pub queue: Arc<Queue<String>>,
}

/// Objects collected at once (kube's --concurrent-gc-syncs).
const WORKERS: usize = 20;

impl Collector {
    pub async fn run(self) {
        let (queue, me) = (self.queue.clone(), Arc::new(self));
        queue::work(queue, WORKERS, "garbage collection", move |uid: String| {
            let me = me.clone();
            async move { me.process(&uid).await }
        })
        .await
    }

    async fn process(&self, uid: &str) -> Result<(), ControllerError> {
        let action = decide(&self.graph.lock().expect("graph lock"), uid);
        match action {
            Action::Nothing => Ok(()),
            Action::Orphan { owner, dependents } => {
                for d in &dependents {
                    writes::modify(&self.store, &d.at, &d.uid, Part::Main, |obj| {
                        drop_owner_refs(obj, &[owner.uid.as_str()])
                    })
                    .await?;
                }
                tracing::debug!(owner = %owner.at, orphaned = dependents.len(), "orphaned dependents");
                Ok(writes::remove_finalizer(&self.store, &owner.at, &owner.uid, ORPHAN).await?)
            }
            Action::Foreground { owner, undeleted, blocked } => {
                // Each dependent is deleted by its own item, which finds this owner waiting.
                for d in undeleted {
                    self.queue.push(d);
                }
                if !blocked {
                    writes::remove_finalizer(&self.store, &owner.at, &owner.uid, FOREGROUND).await?;
                }
                Ok(())
            }
            Action::Dependent { node, missing, waiting, mut solid, has_dependents } => {
                let mut dangling = Vec::new();
                for o in missing {
                    if self.exists(&node.at, &o).await? {
                        // The graph has not caught up with this owner yet: it holds for now.
                        solid.push(o);
                    } else {
                        dangling.push(o);
                    }
                }
                if dangling.is_empty() && waiting.is_empty() {
                    return Ok(());
                }
                if !solid.is_empty() {
                    // Another owner keeps it: only the references to the others go.
                    let gone: Vec<&str> = dangling.iter().chain(&waiting).map(|o| o.uid.as_str()).collect();
                    return Ok(writes::modify(&self.store, &node.at, &node.uid, Part::Main, |obj| {
                        drop_owner_refs(obj, &gone)
                    })
                    .await?);
                }
                // An owner waiting for its dependents waits for theirs too.
                let policy = if !waiting.is_empty() && has_dependents {
                    Propagation::Foreground
                } else if node.has_finalizer(ORPHAN) {
                    Propagation::Orphan
                } else if node.has_finalizer(FOREGROUND) {
                    Propagation::Foreground
                } else {
                    Propagation::Background
                };
                tracing::debug!(object = %node.at, ?policy, "collecting an object whose owners are gone");
                Ok(writes::delete(&self.store, &node.at, &node.uid, policy).await?)
            }
        }
    }

    /// Whether the owner `o` of an object at `dependent` exists in the store, as that
    /// incarnation. A kind the API does not serve cannot exist.
    async fn exists(&self, dependent: &Location, o: &Owner) -> Result<bool, ControllerError> {
        let Some(resource) = o.resource() else { return Ok(false) };
        let at = Location {
            resource,
            namespace: if resource.namespaced { dependent.namespace.clone() } else { None },
            name: o.name.clone(),
        };
        Ok(writes::get(&self.store, &at, &o.uid).await?.is_some())
    }
}

/// Removes the owner references to `uids`; says whether any went.
fn drop_owner_refs(obj: &mut Value, uids: &[&str]) -> bool {
    let Some(refs) = obj.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) else { return false };
    let before = refs.len();
    refs.retain(|r| !r.get("uid").and_then(Value::as_str).is_some_and(|u| uids.contains(&u)));
    let changed = refs.len() != before;
    if refs.is_empty()
        && let Some(meta) = obj["metadata"].as_object_mut()
    {
        meta.remove("ownerReferences");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(g: &mut Graph, key: &str, meta: Value) {
        g.put(Node::from_metadata(Location::parse(key).unwrap(), &meta).unwrap());
    }

    fn owned_by(uid: &str, blocks: bool) -> Value {
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid, "blockOwnerDeletion": blocks}])
    }

    #[test]
    fn a_dependent_of_a_missing_owner_is_a_candidate_and_one_with_a_live_owner_is_not() {
        let mut g = Graph::default();
        put(&mut g, "/registry/apps/replicasets/default/rs", json!({"uid": "rs1"}));
        put(&mut g, "/registry/core/pods/default/a", json!({"uid": "a", "ownerReferences": owned_by("rs1", true)}));
        put(&mut g, "/registry/core/pods/default/b", json!({"uid": "b", "ownerReferences": owned_by("gone", true)}));
        assert!(matches!(decide(&g, "a"), Action::Nothing));
        assert!(
            matches!(decide(&g, "b"), Action::Dependent { ref missing, ref solid, .. } if missing.len() == 1 && solid.is_empty())
        );
        assert!(matches!(decide(&g, "rs1"), Action::Nothing));
    }

    #[test]
    fn a_foreground_owner_is_blocked_only_by_blocking_dependents() {
        let mut g = Graph::default();
        put(
            &mut g,
            "/registry/apps/replicasets/default/rs",
            json!({"uid": "rs1", "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["foregroundDeletion"]}),
        );
        put(&mut g, "/registry/core/pods/default/a", json!({"uid": "a", "ownerReferences": owned_by("rs1", false)}));
        match decide(&g, "rs1") {
            Action::Foreground { undeleted, blocked, .. } => {
                assert_eq!((undeleted, blocked), (vec!["a".to_string()], false))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decide(&g, "a"), Action::Dependent { ref waiting, .. } if waiting.len() == 1));
        put(
            &mut g,
            "/registry/core/pods/default/b",
            json!({"uid": "b", "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["x/hold"], "ownerReferences": owned_by("rs1", true)}),
        );
        match decide(&g, "rs1") {
            Action::Foreground { undeleted, blocked, .. } => {
                assert_eq!((undeleted, blocked), (vec!["a".to_string()], true))
            }
            other => panic!("{other:?}"),
        }
        // Being deleted already, b is left to its own finalizer.
        assert!(matches!(decide(&g, "b"), Action::Nothing));
    }

    #[test]
    fn an_orphaning_owner_lists_its_dependents() {
        let mut g = Graph::default();
        put(
            &mut g,
            "/registry/apps/replicasets/default/rs",
            json!({"uid": "rs1", "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["orphan"]}),
        );
        put(&mut g, "/registry/core/pods/default/a", json!({"uid": "a", "ownerReferences": owned_by("rs1", true)}));
        assert!(matches!(decide(&g, "rs1"), Action::Orphan { ref dependents, .. } if dependents.len() == 1));
        // An orphaning owner still exists: it holds its dependents until it is gone.
        assert!(matches!(decide(&g, "a"), Action::Nothing));
    }

    #[test]
    fn owner_references_are_dropped_by_uid() {
        let mut obj = json!({"metadata": {"ownerReferences": [{"uid": "x"}, {"uid": "y"}]}});
        assert!(drop_owner_refs(&mut obj, &["x"]));
        assert_eq!(obj["metadata"]["ownerReferences"], json!([{"uid": "y"}]));
        assert!(!drop_owner_refs(&mut obj, &["x"]));
        assert!(drop_owner_refs(&mut obj, &["y"]));
        assert!(obj["metadata"].get("ownerReferences").is_none());
    }
}
