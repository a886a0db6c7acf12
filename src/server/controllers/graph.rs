//! What the controllers know of the stored objects, kept current from the store's watch:
//! each object by uid, who owns it (metadata.ownerReferences) and who depends on it, and
//! whether it is being deleted. The garbage collector decides from this; every write it
//! makes is still conditional on the stored object, so a graph a little behind the store
//! can delay work but not misdirect it.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::server::registry::resources::{self, Resource};

/// Where an object lives, parsed from its store key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: String,
}

impl Location {
    /// `/registry/GROUP/PLURAL[/NAMESPACE]/NAME`, for the resources the API serves.
    pub fn parse(key: &str) -> Option<Location> {
        let rest = key.strip_prefix("/registry/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        let (group, plural) = (parts.first()?, parts.get(1)?);
        let group = if *group == "core" { "" } else { group };
        let resource = resources::stored_as(group, plural)?;
        match (resource.namespaced, &parts[2..]) {
            (true, [ns, name]) => Some(Location { resource, namespace: Some(ns.to_string()), name: name.to_string() }),
            (false, [name]) => Some(Location { resource, namespace: None, name: name.to_string() }),
            _ => None,
        }
    }

    pub fn key(&self) -> String {
        self.resource.key(self.namespace.as_deref(), Some(&self.name))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.resource.plural, self.name),
            None => write!(f, "{} {}", self.resource.plural, self.name),
        }
    }
}

/// One entry of metadata.ownerReferences.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: String,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// blockOwnerDeletion: a foreground deletion of the owner waits for this dependent.
    pub blocks: bool,
}

impl Owner {
    /// The resource the reference names, if the API serves it.
    pub fn resource(&self) -> Option<&'static Resource> {
        resources::all().into_iter().find(|r| r.api_version() == self.api_version && r.kind == self.kind)
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub at: Location,
    pub uid: String,
    pub owners: Vec<Owner>,
    pub finalizers: Vec<String>,
    /// metadata.deletionTimestamp is set.
    pub deleting: bool,
}

impl Node {
    /// The node of the object at `at`, from its metadata; None without a uid.
    pub fn from_metadata(at: Location, meta: &Value) -> Option<Node> {
        let uid = meta.get("uid")?.as_str()?.to_string();
        let owners = meta
            .get("ownerReferences")
            .and_then(Value::as_array)
            .map(|refs| {
                refs.iter()
                    .filter_map(|r| {
                        Some(Owner {
                            uid: r.get("uid")?.as_str()?.to_string(),
                            api_version: r.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string(),
                            kind: r.get("kind").and_then(Value::as_str).unwrap_or_default().to_string(),
                            name: r.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                            blocks: r.get("blockOwnerDeletion").and_then(Value::as_bool).unwrap_or(false),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let finalizers = meta
            .get("finalizers")
            .and_then(Value::as_array)
            .map(|f| f.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default();
        Some(Node {
            at,
            uid,
            owners,
            finalizers,
            deleting: meta.get("deletionTimestamp").is_some_and(Value::is_string),
        })
    }

    pub fn has_finalizer(&self, name: &str) -> bool {
        self.finalizers.iter().any(|f| f == name)
    }
}

#[derive(Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    uid_by_key: HashMap<String, String>,
    /// Owner uid to the uids of the objects that name it, whether or not it exists.
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    /// Records the object now stored under `node.at`; answers what it replaced.
    pub fn put(&mut self, node: Node) -> Option<Node> {
        let key = node.at.key();
        let old = self.uid_by_key.get(&key).cloned().and_then(|uid| self.unlink(&uid));
        for o in &node.owners {
            self.dependents.entry(o.uid.clone()).or_default().insert(node.uid.clone());
        }
        self.uid_by_key.insert(key, node.uid.clone());
        self.nodes.insert(node.uid.clone(), node);
        old
    }

    /// Forgets the object stored under `key`; answers it.
    pub fn remove(&mut self, key: &str) -> Option<Node> {
        let uid = self.uid_by_key.remove(key)?;
        self.unlink(&uid)
    }

    fn unlink(&mut self, uid: &str) -> Option<Node> {
        let node = self.nodes.remove(uid)?;
        self.uid_by_key.remove(&node.at.key());
        for o in &node.owners {
            if let Some(set) = self.dependents.get_mut(&o.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
        Some(node)
    }

    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn by_key(&self, key: &str) -> Option<&Node> {
        self.uid_by_key.get(key).and_then(|uid| self.nodes.get(uid))
    }

    /// The objects that name `owner` among their owners.
    pub fn dependents(&self, owner: &str) -> Vec<&Node> {
        self.dependents.get(owner).into_iter().flatten().filter_map(|uid| self.nodes.get(uid)).collect()
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(key: &str, uid: &str, owners: &[&str]) -> Node {
        let refs: Vec<Value> = owners
            .iter()
            .map(|o| json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": o}))
            .collect();
        Node::from_metadata(Location::parse(key).unwrap(), &json!({"uid": uid, "ownerReferences": refs})).unwrap()
    }

    #[test]
    fn keys_name_their_resource_namespace_and_name() {
        let l = Location::parse("/registry/apps/replicasets/team/web").unwrap();
        assert_eq!((l.resource.kind, l.namespace.as_deref(), l.name.as_str()), ("ReplicaSet", Some("team"), "web"));
        assert_eq!(l.key(), "/registry/apps/replicasets/team/web");
        let n = Location::parse("/registry/core/namespaces/team").unwrap();
        assert_eq!((n.resource.kind, n.namespace, n.name.as_str()), ("Namespace", None, "team"));
        assert!(Location::parse("/registry/core/pods/only-a-name").is_none());
        assert!(Location::parse("/registry/nodes-tokens/x").is_none());
        assert!(Location::parse("/elsewhere").is_none());
    }

    #[test]
    fn dependents_follow_puts_replacements_and_removals() {
        let mut g = Graph::default();
        g.put(node("/registry/apps/replicasets/default/rs", "o1", &[]));
        g.put(node("/registry/core/pods/default/a", "p1", &["o1"]));
        g.put(node("/registry/core/pods/default/b", "p2", &["o1", "o2"]));
        assert_eq!(g.dependents("o1").len(), 2);
        // b recreated under the same name with another uid, owned by o2 only.
        let old = g.put(node("/registry/core/pods/default/b", "p3", &["o2"])).unwrap();
        assert_eq!(old.uid, "p2");
        assert_eq!(g.dependents("o1").iter().map(|n| n.uid.as_str()).collect::<Vec<_>>(), ["p1"]);
        assert_eq!(g.dependents("o2").iter().map(|n| n.uid.as_str()).collect::<Vec<_>>(), ["p3"]);
        assert_eq!(g.remove("/registry/core/pods/default/a").unwrap().uid, "p1");
        assert!(g.dependents("o1").is_empty() && g.get("p1").is_none());
        assert_eq!(g.by_key("/registry/core/pods/default/b").unwrap().uid, "p3");
    }
}
