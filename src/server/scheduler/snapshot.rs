//! The scheduler's picture of the cluster, in memory: every node with what its pods
//! request, the host ports they hold and their labels, so that a decision reads no store.
//! A decision is recorded ([`Snapshot::place`]) before its binding is written, so the
//! next decision already counts it (kube-scheduler's "assume").

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, Taint};

use super::matching::Labels;
use super::resources::Resources;

/// A host port a pod holds: (protocol, host IP, port). An empty IP is every address.
pub type HostPort = (String, String, i32);

/// A pod on a node, as the filters and scores need it.
#[derive(Clone, Debug)]
pub struct PlacedPod {
    pub uid: String,
    pub namespace: String,
    pub labels: Labels,
    /// The uid of its controlling owner (a ReplicaSet's pods spread over nodes).
    pub owner: Option<String>,
    pub requests: Resources,
    pub host_ports: Vec<HostPort>,
    /// Its required anti-affinity terms: a newcomer they select may not join its domain.
    pub anti_affinity: Vec<PodAffinityTerm>,
}

impl PlacedPod {
    pub fn of(pod: &Pod) -> PlacedPod {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        PlacedPod {
            uid: meta.uid.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            labels: meta.labels.clone().unwrap_or_default(),
            owner: meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| o.uid.clone()),
            requests: spec.map(Resources::requests_of).unwrap_or_default(),
            host_ports: spec.map(host_ports).unwrap_or_default(),
            anti_affinity: spec
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.clone())
                .unwrap_or_default(),
        }
    }
}

/// The host ports a pod spec asks for.
pub fn host_ports(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<HostPort> {
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            Some((p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.host_ip.clone().unwrap_or_default(), port))
        })
        .collect()
}

/// The taint of a node that is not ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    /// What the pods placed on it request, together.
    pub requested: Resources,
    pub pods: BTreeMap<String, PlacedPod>,
}

impl NodeInfo {
    pub fn of(node: &Node) -> NodeInfo {
        let spec = node.spec.as_ref();
        let mut taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        // A node that is not Ready (or has not said) carries the taint kube's node
        // lifecycle controller gives it (TaintNodesByCondition), whoever wrote the Node.
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        if !ready && !taints.iter().any(|t| t.key == NOT_READY) {
            taints.push(Taint { key: NOT_READY.into(), effect: "NoSchedule".into(), ..Default::default() });
        }
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable: Resources::of_node(node),
            requested: Resources::default(),
            pods: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeInfo>,
    by_name: HashMap<String, usize>,
    /// Where each placed pod is (its uid to its node's index).
    placed: HashMap<String, usize>,
    /// For each owner, how many of its pods each node holds.
    owned: HashMap<String, HashMap<usize, u32>>,
    /// The placed pods with required anti-affinity (few), by uid.
    anti_affine: BTreeMap<String, usize>,
}

impl Snapshot {
    /// Adds a node, or updates it keeping the pods placed on it. Answers whether anything
    /// a decision reads changed (a new node, its labels, taints, cordon, readiness or
    /// allocatable): a status heartbeat that changes none of them is no reason to try the
    /// unschedulable pods again.
    pub fn put_node(&mut self, node: &Node) -> bool {
        let mut info = NodeInfo::of(node);
        match self.by_name.get(&info.name) {
            Some(&i) => {
                let old = &mut self.nodes[i];
                let changed = old.labels != info.labels
                    || old.taints != info.taints
                    || old.unschedulable != info.unschedulable
                    || old.allocatable != info.allocatable;
                info.requested = old.requested;
                info.pods = std::mem::take(&mut old.pods);
                *old = info;
                changed
            }
            None => {
                self.by_name.insert(info.name.clone(), self.nodes.len());
                self.nodes.push(info);
                true
            }
        }
    }

    /// Forgets a node and the pods placed on it.
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.by_name.remove(name) else { return };
        let uids: Vec<String> = self.nodes[i].pods.keys().cloned().collect();
        for uid in uids {
            self.unplace(&uid);
        }
        // The last node takes the removed one's index.
        self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            let last = self.nodes.len();
            self.by_name.insert(moved, i);
            for at in self.placed.values_mut().chain(self.anti_affine.values_mut()).filter(|at| **at == last) {
                *at = i;
            }
            for counts in self.owned.values_mut() {
                if let Some(n) = counts.remove(&last) {
                    counts.insert(i, n);
                }
            }
        }
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.by_name.get(name).map(|&i| &self.nodes[i])
    }

    /// Records `pod` as running on `node` (bound, or decided and being bound). A pod
    /// placed again moves.
    pub fn place(&mut self, node: &str, pod: &Pod) {
        let placed = PlacedPod::of(pod);
        self.unplace(&placed.uid);
        let Some(&i) = self.by_name.get(node) else { return };
        let info = &mut self.nodes[i];
        info.requested = info.requested.plus(&placed.requests);
        if let Some(owner) = &placed.owner {
            *self.owned.entry(owner.clone()).or_default().entry(i).or_default() += 1;
        }
        self.placed.insert(placed.uid.clone(), i);
        if !placed.anti_affinity.is_empty() {
            self.anti_affine.insert(placed.uid.clone(), i);
        }
        info.pods.insert(placed.uid.clone(), placed);
    }

    /// Forgets a pod (deleted, or its binding failed).
    pub fn unplace(&mut self, uid: &str) {
        let Some(i) = self.placed.remove(uid) else { return };
        self.anti_affine.remove(uid);
        let info = &mut self.nodes[i];
        let Some(pod) = info.pods.remove(uid) else { return };
        info.requested = info.requested.minus(&pod.requests);
        if let Some(owner) = &pod.owner
            && let Some(counts) = self.owned.get_mut(owner)
        {
            if let Some(n) = counts.get_mut(&i) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&i);
                }
            }
            if counts.is_empty() {
                self.owned.remove(owner);
            }
        }
    }

    /// How many pods of `owner` node `i` holds.
    pub fn owned_on(&self, owner: &str, i: usize) -> u32 {
        self.owned.get(owner).and_then(|c| c.get(&i)).copied().unwrap_or(0)
    }

    /// The placed pods with required anti-affinity: (uid, node index).
    pub fn anti_affine(&self) -> impl Iterator<Item = (&String, usize)> {
        self.anti_affine.iter().map(|(uid, &i)| (uid, i))
    }

    /// The node a pod is placed on, and what was recorded of it there.
    pub fn placement(&self, uid: &str) -> Option<(&NodeInfo, &PlacedPod)> {
        let node = &self.nodes[*self.placed.get(uid)?];
        Some((node, node.pods.get(uid)?))
    }

    pub fn is_placed(&self, uid: &str) -> bool {
        self.placed.contains_key(uid)
    }
}
