//! The control plane's controllers, inside `nodectl server`: the garbage collector
//! ([`gc`]) and namespace finalization ([`namespace`]) on the store directly, each a pool
//! of workers on a [`queue`] that retries failed items with the shared backoff ([`retry`]);
//! the workload controllers ([`deployment`], [`replicaset`]), the Services' [`endpoints`],
//! the node lifecycle ([`nodelifecycle`]), the nodes' pod ranges ([`nodeipam`]), the pod garbage collector ([`podgc`]),
//! the LoadBalancer Services' addresses ([`servicelb`]), every namespace's ServiceAccount
//! `default` and ConfigMap `kube-root-ca.crt` ([`serviceaccounts`]) and the
//! PodDisruptionBudgets' [`disruption`] controller as
//! clients of the API through kube-rs, sharing informers ([`informer`]), retry limits and
//! expectations ([`expectations`]).
//!
//! One informer feeds both: it lists every stored object, then follows the store's watch
//! from the list's revision, keeping the ownership [`graph`] current and queueing the
//! objects and namespaces that an event may have given work. Everything the controllers
//! act on (owner references, finalizers, deletion timestamps) is in the store, so a server
//! that restarts lists again and carries on where the last one stopped.

pub mod claim;
pub mod client;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod events;
pub mod expectations;
pub mod gc;
pub mod graph;
pub mod informer;
pub mod ip_repair;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podgc;
pub mod pods;
pub mod queue;
pub mod replicaset;
pub mod retry;
pub mod serviceaccounts;
pub mod servicelb;
pub mod writes;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::server::registry::cluster_config::ClusterNetwork;
use crate::server::registry::deletion::{FOREGROUND, ORPHAN};
use crate::server::registry::objects::Store;
use crate::server::store::{self, Event, EventKind, StoreError};
use graph::{Graph, Location, Node};
use queue::Queue;

/// Every object's key starts with this.
const PREFIX: &str = "/registry/";

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Write(#[from] writes::WriteError),
    #[error("{what}: {source}")]
    Store { what: &'static str, source: StoreError },
    #[error("store task failed: {0}")]
    Task(tokio::task::JoinError),
}

/// Starts the informer and the controllers on the current runtime; they run as long as it.
pub fn start(store: Store) {
    let graph = Arc::new(Mutex::new(Graph::default()));
    let queues = Queues { gc: Queue::new(), namespaces: Queue::new() };
    tokio::spawn(gc::Collector { store: store.clone(), graph: graph.clone(), queue: queues.gc.clone() }.run());
    tokio::spawn(namespace::Finalizer { store: store.clone(), queue: queues.namespaces.clone() }.run());
    tokio::spawn(ip_repair::run(store.clone()));
    tokio::spawn(inform(store, graph, queues));
}

/// The controllers `--controllers` may name, as kube-controller-manager's flag does.
pub const SWITCHABLE: &[&str] = &[
    "deployment",
    "disruption",
    "endpoint",
    "endpointslice",
    "nodeipam",
    "nodelifecycle",
    "podgc",
    "replicaset",
    "root-ca-cert-publisher",
    "servicelb",
];

#[derive(Debug, thiserror::Error)]
#[error("--controllers: {0:?} is not in the list of known controllers ({known})", known = SWITCHABLE.join(", "))]
pub struct UnknownController(String);

/// kube-controller-manager's `--controllers` list: `*` turns on every controller, `NAME` one,
/// `-NAME` turns one off; no `*` means only those named. Answers the ones that run.
pub fn selected(list: &[String]) -> Result<Vec<&'static str>, UnknownController> {
    let known = |n: &str| SWITCHABLE.iter().copied().find(|k| *k == n).ok_or_else(|| UnknownController(n.into()));
    let mut on: Vec<&'static str> = Vec::new();
    let mut off: Vec<&'static str> = Vec::new();
    for item in list.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        match item.strip_prefix('-') {
            _ if item == "*" => on.extend(SWITCHABLE),
            Some(name) => off.push(known(name)?),
            None => on.push(known(item)?),
        }
    }
    Ok(SWITCHABLE.iter().copied().filter(|c| on.contains(c) && !off.contains(c)).collect())
}

/// Starts the controllers in `which` that work through the API as `client` (kube-rs), on
/// shared pod, ReplicaSet and Service informers.
pub fn start_clients(
    client: kube::Client,
    store: &Store,
    which: &[&str],
    (lifecycle, pod_gc): (&nodelifecycle::Settings, &podgc::Settings),
    network: &ClusterNetwork,
    ca_pem: &str,
) {
    // The ServiceAccount controller is not switchable, as the garbage collector is not: no
    // pod is admitted in a namespace without its ServiceAccount.
    let publish_ca = which.contains(&"root-ca-cert-publisher").then(|| ca_pem.to_string());
    tokio::spawn(serviceaccounts::run(client.clone(), publish_ca));
    let mut pods = informer::Informer::<pods::CachedPod>::default();
    let mut sets = informer::Informer::<k8s_openapi::api::apps::v1::ReplicaSet>::default();
    let mut services = informer::Informer::<k8s_openapi::api::core::v1::Service>::default();
    // One Node cache for every controller that reads Nodes: with thousands of nodes, a
    // cache each would cost their memory and a watch each.
    let mut nodes = informer::Informer::<k8s_openapi::api::core::v1::Node>::default();
    if which.contains(&"disruption") {
        tokio::spawn(disruption::controller(client.clone(), &mut pods));
    }
    if which.contains(&"endpoint") {
        tokio::spawn(endpoints::endpoints_controller(client.clone(), &mut services, &mut pods));
    }
    if which.contains(&"endpointslice") {
        tokio::spawn(endpoints::slices_controller(client.clone(), &mut services, &mut pods));
    }
    if which.contains(&"nodeipam") {
        let settings =
            nodeipam::Settings { cluster_cidr: network.cluster_cidr, node_cidr_mask_size: network.node_cidr_mask_size };
        tokio::spawn(nodeipam::controller(client.clone(), settings, &mut nodes));
    }
    if which.contains(&"nodelifecycle") {
        tokio::spawn(nodelifecycle::controller(client.clone(), lifecycle.clone(), (&pods, &nodes)));
    }
    if which.contains(&"servicelb") {
        tokio::spawn(servicelb::controller(client.clone(), store.clone(), network.service_lb_pool, &mut nodes));
    }
    if which.contains(&"podgc") {
        tokio::spawn(podgc::controller(client.clone(), pod_gc.clone(), (&pods, &nodes)));
    }
    if which.contains(&"endpoint") || which.contains(&"endpointslice") {
        tokio::spawn(services.run(kube::Api::all(client.clone())));
    }
    if which.contains(&"replicaset") {
        tokio::spawn(replicaset::controller(client.clone(), &mut pods));
    }
    if which.contains(&"deployment") {
        tokio::spawn(deployment::controller(client.clone(), &mut pods, &mut sets));
        tokio::spawn(sets.run(kube::Api::all(client.clone())));
    }
    if ["nodeipam", "nodelifecycle", "servicelb", "podgc"].iter().any(|c| which.contains(c)) {
        tokio::spawn(nodes.run(kube::Api::all(client.clone())));
    }
    tokio::spawn(pods.run(kube::Api::all(client)));
}

struct Queues {
    /// Object uids for the garbage collector.
    gc: Arc<Queue<String>>,
    /// Namespace names for their finalization.
    namespaces: Arc<Queue<String>>,
}

async fn inform(store: Store, graph: Arc<Mutex<Graph>>, queues: Queues) {
    loop {
        let err = follow(&store, &graph, &queues).await;
        match err {
            // History is gone: list again at once.
            ControllerError::Store { source: StoreError::Compacted { .. }, .. } => {
                tracing::debug!(%err, "controllers list again")
            }
            _ => {
                tracing::warn!(%err, "the controllers' watch ended; listing again shortly");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Lists, then follows the watch until it fails; answers why it stopped.
async fn follow(store: &Store, graph: &Mutex<Graph>, queues: &Queues) -> ControllerError {
    let s = store.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let list = s.list(PREFIX, None, 0, None)?;
        let watcher = store::watch(s, PREFIX, Some(list.revision))?;
        Ok::<_, StoreError>((list, watcher))
    })
    .await;
    let (list, mut watcher) = match listed {
        Ok(Ok(l)) => l,
        Ok(Err(source)) => return ControllerError::Store { what: "listing every object", source },
        Err(e) => return ControllerError::Task(e),
    };
    {
        let mut g = graph.lock().expect("graph lock");
        *g = Graph::default();
        for kv in &list.items {
            if let Some(node) = node_of(&kv.key, &kv.value) {
                g.put(node);
            }
        }
        // Whatever a previous run (or another server) left half done is taken up again.
        for node in g.nodes() {
            if !node.owners.is_empty() || gc_finalizing(node) {
                queues.gc.push(node.uid.clone());
            }
            if node.at.resource.kind == "Namespace" && node.deleting {
                queues.namespaces.push(node.at.name.clone());
            }
        }
    }
    loop {
        match watcher.next().await {
            Ok(e) => observe(&mut graph.lock().expect("graph lock"), queues, &e),
            Err(source) => return ControllerError::Store { what: "watching every object", source },
        }
    }
}

/// The graph's node of a stored object; None for what the graph does not hold.
///
/// Events are not in it: kube's garbage collector ignores them (its default ignored
/// resources are events of both groups), as they own nothing and go by their TTL. Every
/// pod has its Scheduled event, so with 50,000 pods they were half the graph.
fn node_of(key: &str, value: &[u8]) -> Option<Node> {
    /// The graph reads metadata alone: the rest of the object is skipped, not decoded
    /// (decoding every pod and event whole was a thirtieth of the server's CPU).
    #[derive(serde::Deserialize)]
    struct Top {
        metadata: serde_json::Value,
    }
    let at = Location::parse(key)?;
    if at.resource.kind == "Event" {
        return None;
    }
    // Only an object: serde would read a struct from an array too.
    if value.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let Top { metadata } = serde_json::from_slice(value).ok()?;
    Node::from_metadata(at, &metadata)
}

fn gc_finalizing(node: &Node) -> bool {
    node.deleting && (node.has_finalizer(FOREGROUND) || node.has_finalizer(ORPHAN))
}

/// Updates the graph with one write and queues what it may have given work.
fn observe(g: &mut Graph, queues: &Queues, e: &Event) {
    let gone = match e.kind {
        EventKind::Put => {
            let Some(node) = node_of(&e.kv.key, &e.kv.value) else { return };
            if !node.owners.is_empty() || gc_finalizing(&node) {
                queues.gc.push(node.uid.clone());
            }
            if node.at.resource.kind == "Namespace" && node.deleting {
                queues.namespaces.push(node.at.name.clone());
            }
            let ns = node.at.namespace.clone();
            let old = g.put(node.clone());
            if let Some(ns) = ns {
                queue_if_terminating(g, queues, &ns);
            }
            match old {
                // The same object: owners it no longer names may be waiting for it to go.
                Some(old) if old.uid == node.uid => {
                    for o in old.owners.iter().filter(|o| !node.owners.iter().any(|n| n.uid == o.uid)) {
                        queues.gc.push(o.uid.clone());
                    }
                    return;
                }
                // Another incarnation under the same name: the old one is gone.
                other => other,
            }
        }
        EventKind::Delete => g.remove(&e.kv.key),
    };
    let Some(old) = gone else { return };
    for d in g.dependents(&old.uid) {
        queues.gc.push(d.uid.clone());
    }
    for o in &old.owners {
        queues.gc.push(o.uid.clone());
    }
    if let Some(ns) = &old.at.namespace {
        queue_if_terminating(g, queues, ns);
    }
}

fn queue_if_terminating(g: &Graph, queues: &Queues, namespace: &str) {
    let namespaces = crate::server::registry::resources::RESOURCES
        .iter()
        .find(|r| r.kind == "Namespace")
        .expect("namespaces are served");
    if g.by_key(&namespaces.key(None, Some(namespace))).is_some_and(|n| n.deleting) {
        queues.namespaces.push(namespace.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_not_in_the_graph() {
        let queues = Queues { gc: Queue::new(), namespaces: Queue::new() };
        let mut g = Graph::default();
        let put = |key: &str, value: serde_json::Value| Event {
            kind: EventKind::Put,
            revision: 1,
            kv: crate::server::store::KeyValue {
                key: key.into(),
                value: value.to_string().into_bytes(),
                create_revision: 1,
                mod_revision: 1,
            },
            prev: None,
        };
        let owned = serde_json::json!({"metadata": {"uid": "e1", "ownerReferences": [{"uid": "p1"}]}});
        observe(&mut g, &queues, &put("/registry/core/events/default/p.1", owned.clone()));
        assert!(g.get("e1").is_none());
        // Any other kind is.
        observe(&mut g, &queues, &put("/registry/core/configmaps/default/c", owned));
        assert!(g.get("e1").is_some());
    }

    #[test]
    fn controllers_are_chosen_as_kube_controller_managers_flag_chooses_them() {
        let sel = |s: &str| selected(&[s.to_string()]).map_err(|e| e.to_string());
        assert_eq!(
            sel("*"),
            Ok(vec![
                "deployment",
                "disruption",
                "endpoint",
                "endpointslice",
                "nodeipam",
                "nodelifecycle",
                "podgc",
                "replicaset",
                "root-ca-cert-publisher",
                "servicelb"
            ])
        );
        assert_eq!(
            sel("*,-replicaset,-endpoint,-disruption,-servicelb,-root-ca-cert-publisher"),
            Ok(vec!["deployment", "endpointslice", "nodeipam", "nodelifecycle", "podgc"])
        );
        assert_eq!(sel("replicaset"), Ok(vec!["replicaset"]));
        assert_eq!(sel(""), Ok(vec![]));
        let err = sel("*,-replicasets").unwrap_err();
        assert!(
            err.contains("\"replicasets\" is not in the list of known controllers (deployment, disruption, endpoint, endpointslice, nodeipam, nodelifecycle, podgc, replicaset, root-ca-cert-publisher, servicelb)"),
            "{err}"
        );
    }
}
