//! Node IPAM, as kube-controller-manager's `nodeipam` with its range allocator: every Node
//! without a pod range gets a free one of `--cluster-cidr`, cut at `--node-cidr-mask-size`
//! (`spec.podCIDR` and `spec.podCIDRs`); a Node that came with a range of its own keeps it
//! when it is inside the cluster range and free; a Node's range is free again once the
//! Node is deleted.
//!
//! What is taken is learnt from the Nodes themselves at start, as kube's allocator does:
//! one leader runs this controller, so its memory, rebuilt from the Nodes at every start,
//! is the only book needed. One task handles the Nodes' changes in order, so two Nodes
//! never race for one range. Nothing is refused silently: a Node left without a range
//! (the cluster range is full) or whose own range cannot be kept gets an Event with kube's
//! reason, CIDRNotAvailable.

pub mod cidrs;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;
use tokio::sync::mpsc;

use super::events::{Recorder, Type};
use super::informer::{self, Informer};
use cidrs::CidrSet;

#[derive(Clone, Debug)]
pub struct Settings {
    pub cluster_cidr: Ipv4Net,
    pub node_cidr_mask_size: u8,
}

/// kube's event reason for a node that cannot have the range it needs.
pub const CIDR_NOT_AVAILABLE: &str = "CIDRNotAvailable";

/// The wait before a failed write is tried again.
const RETRY: Duration = Duration::from_secs(1);

enum Change {
    Seen(String),
    Gone(Box<Node>),
}

/// The Node's IPv4 pod range, if it has one.
fn own_range(node: &Node) -> Option<Ipv4Net> {
    let spec = node.spec.as_ref()?;
    let list = spec.pod_cidrs.iter().flatten().chain(spec.pod_cidr.iter());
    list.filter_map(|c| c.parse::<Ipv4Net>().ok()).next()
}

/// The allocator on the shared Node informer; runs, for as long as the runtime (the
/// leader's) runs, when the returned future is polled.
pub fn controller(
    client: kube::Client,
    settings: Settings,
    nodes: &mut Informer<Node>,
) -> impl Future<Output = ()> + Send + 'static {
    let (tx, rx) = mpsc::unbounded_channel();
    let sender = tx.clone();
    nodes.on_change(move |n, deleted| {
        let _ = sender.send(if deleted { Change::Gone(Box::new(n.clone())) } else { Change::Seen(n.name_any()) });
    });
    let cache = nodes.store();
    allocate(client, settings, cache, tx, rx)
}

async fn allocate(
    client: kube::Client,
    settings: Settings,
    cache: Store<Node>,
    tx: mpsc::UnboundedSender<Change>,
    rx: mpsc::UnboundedReceiver<Change>,
) {
    if !informer::ready(&cache).await {
        return;
    }
    let mut ipam = Ipam {
        set: CidrSet::new(settings.cluster_cidr, settings.node_cidr_mask_size),
        held: HashMap::new(),
        waiting: BTreeSet::new(),
        refused: HashMap::new(),
        api: Api::all(client.clone()),
        events: Recorder::new(client, "cidrAllocator"),
        cache,
        tx,
    };
    ipam.learn().await;
    ipam.run(rx).await;
}

struct Ipam {
    set: CidrSet,
    /// The range each Node holds, by name.
    held: HashMap<String, Ipv4Net>,
    /// Nodes left without a range, told so by an Event once; tried again when one is freed.
    waiting: BTreeSet<String>,
    /// Nodes whose own range could not be kept, and that range (told once by an Event).
    refused: HashMap<String, Ipv4Net>,
    api: Api<Node>,
    events: Recorder,
    cache: Store<Node>,
    tx: mpsc::UnboundedSender<Change>,
}

impl Ipam {
    /// Marks the ranges the Nodes already have, then looks at every Node.
    async fn learn(&mut self) {
        let mut nodes = self.cache.state();
        // Oldest first: of two Nodes claiming one range, the one that had it first keeps it.
        nodes.sort_by(|a, b| {
            (&a.metadata.creation_timestamp, a.name_any()).cmp(&(&b.metadata.creation_timestamp, b.name_any()))
        });
        for node in &nodes {
            if let Some(range) = own_range(node) {
                self.occupy(node, range).await;
            }
        }
        for node in nodes {
            let _ = self.tx.send(Change::Seen(node.name_any()));
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Change>) {
        while let Some(change) = rx.recv().await {
            match change {
                Change::Seen(name) => self.seen(&name).await,
                Change::Gone(node) => self.gone(&node),
            }
        }
    }

    async fn seen(&mut self, name: &str) {
        let Some(node) = self.cache.get(&ObjectRef::new(name)) else { return };
        if let Some(range) = own_range(&node) {
            self.waiting.remove(name);
            match self.held.get(name) {
                Some(held) if *held == range => {}
                held => {
                    // Given one by us and another by someone else meanwhile: theirs stands.
                    if let Some(held) = held.copied() {
                        self.set.release(held);
                        self.held.remove(name);
                    }
                    self.occupy(&node, range).await;
                }
            }
            return;
        }
        // Given one already (the cache has not seen our write yet, or it failed): write
        // that one again.
        let range = match self.held.get(name) {
            Some(r) => *r,
            None => match self.set.allocate() {
                Some(r) => {
                    self.held.insert(name.to_string(), r);
                    r
                }
                None => {
                    if self.waiting.insert(name.to_string()) {
                        tracing::warn!(node = name, cluster = %self.set_cluster(), "no pod range is free for the node");
                        self.record(&node, Type::Normal, format!("Node {name} status is now: {CIDR_NOT_AVAILABLE}"))
                            .await;
                    }
                    return;
                }
            },
        };
        let patch = json!({"spec": {"podCIDR": range.to_string(), "podCIDRs": [range.to_string()]}});
        match self.api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => tracing::info!(node = name, %range, "gave the node its pod range"),
            // Gone, or given a range by someone else meanwhile: ours is free again, and the
            // Node's next event says what it has.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 => {
                self.set.release(range);
                self.held.remove(name);
            }
            Err(err) => {
                tracing::warn!(node = name, %err, "writing the node's pod range failed; trying again");
                self.retry(name);
            }
        }
    }

    fn set_cluster(&self) -> String {
        self.set.cluster().to_string()
    }

    /// Keeps `range` for `node`, or tells why not.
    async fn occupy(&mut self, node: &Node, range: Ipv4Net) {
        let name = node.name_any();
        match self.set.occupy(range) {
            Ok(()) => {
                self.held.insert(name.clone(), range);
                self.refused.remove(&name);
            }
            Err(why) => {
                if self.refused.insert(name.clone(), range) != Some(range) {
                    tracing::warn!(node = %name, %range, %why, "the node's own pod range cannot be kept");
                    let message = format!("Node {name} status is now: {CIDR_NOT_AVAILABLE} (its podCIDR {why})");
                    self.record(node, Type::Warning, message).await;
                }
            }
        }
    }

    fn gone(&mut self, node: &Node) {
        let name = node.name_any();
        self.waiting.remove(&name);
        self.refused.remove(&name);
        let Some(held) = self.held.remove(&name) else { return };
        self.set.release(held);
        tracing::info!(node = %name, range = %held, "the node is gone; its pod range is free");
        // Whoever waits for a range, or for theirs to be free, may have it now.
        for waiting in self.waiting.iter().chain(self.refused.keys()) {
            let _ = self.tx.send(Change::Seen(waiting.clone()));
        }
    }

    fn retry(&self, name: &str) {
        let (tx, name) = (self.tx.clone(), name.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(RETRY).await;
            let _ = tx.send(Change::Seen(name));
        });
    }

    async fn record(&self, node: &Node, kind: Type, message: String) {
        // kubectl describe node finds a node's events by the node's name as uid, as the
        // kubelet records them.
        let regarding = ObjectReference {
            kind: Some("Node".into()),
            api_version: Some("v1".into()),
            name: Some(node.name_any()),
            uid: Some(node.name_any()),
            ..ObjectReference::default()
        };
        self.events.record(regarding, kind, CIDR_NOT_AVAILABLE, message).await;
    }
}
