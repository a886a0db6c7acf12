//! The node lifecycle controller, as kube-controller-manager's: every monitor period it
//! looks at each node's heartbeats ([`health`]); a node not heard from for the grace period
//! gets its conditions Unknown and its pods marked not ready (so Services stop sending them
//! traffic), and nodes are tainted by their state ([`taints`]): not-ready or unreachable
//! NoSchedule, NoExecute for eviction, unschedulable when cordoned. Pods on a node with
//! NoExecute taints are deleted when they do not tolerate them or once their
//! tolerationSeconds (300 by default, set at create as kube-apiserver's
//! DefaultTolerationSeconds does) have passed; their controllers replace them elsewhere.
//!
//! Evictions are bounded as kube bounds them: NoExecute taints are added to at most one
//! node per `1 / --node-eviction-rate` (10 s), and none while every node is unhealthy (a
//! full disruption: then the control plane is more likely cut off than the nodes all dead).

pub mod health;
pub mod taints;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use super::claim;
use super::events::{Recorder, Type};
use super::informer::{self, Informer};
use super::pods::CachedPod;

/// kube's component name, in events.
pub const NAME: &str = "node-controller";
/// Where nodes renew their Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";

#[derive(Clone, Debug)]
pub struct Settings {
    /// How often nodes are looked at (kube's --node-monitor-period, 5 s).
    pub period: Duration,
    /// How long a node may go unheard before it is Unknown (--node-monitor-grace-period, 40 s).
    pub grace: Duration,
    /// At most one node gets NoExecute taints per this long (1 / --node-eviction-rate 0.1).
    pub taint_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            period: Duration::from_secs(5),
            grace: Duration::from_secs(40),
            taint_interval: Duration::from_secs(10),
        }
    }
}

struct Monitor {
    client: kube::Client,
    settings: Settings,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<CachedPod>,
    probes: health::Probes,
    /// When a node last got NoExecute taints.
    last_taint: Option<Instant>,
    events: Recorder,
}

/// The controller on the shared pod and Node informers, with an informer of its own for
/// the Nodes' Leases; runs when the returned future is polled.
pub fn controller(
    client: kube::Client,
    settings: Settings,
    (pods, nodes): (&Informer<CachedPod>, &Informer<Node>),
) -> impl Future<Output = ()> + Send + 'static {
    let leases = Informer::<Lease>::default();
    let mut m = Monitor {
        client: client.clone(),
        settings,
        nodes: nodes.store(),
        leases: leases.store(),
        pods: pods.store(),
        probes: health::Probes::default(),
        last_taint: None,
        events: Recorder::new(client.clone(), NAME),
    };
    async move {
        tokio::spawn(leases.run(Api::namespaced(client, LEASE_NAMESPACE)));
        if !informer::ready(&m.nodes).await || !informer::ready(&m.leases).await || !informer::ready(&m.pods).await {
            return;
        }
        let mut tick = tokio::time::interval(m.settings.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            m.monitor().await;
        }
    }
}

impl Monitor {
    async fn monitor(&mut self) {
        let nodes = self.nodes.state();
        self.probes.retain(|name| nodes.iter().any(|n| n.name_any() == name));
        let now = Instant::now();
        let stamp = Time(crate::model::time::now());
        // Each node's Ready status as this round leaves it.
        let mut ready: HashMap<String, Option<String>> = HashMap::new();
        for node in &nodes {
            let name = node.name_any();
            let lease = self
                .leases
                .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE))
                .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0.to_rfc3339()));
            let unheard = self.probes.observe(&name, lease, health::ready_heartbeat(node), now);
            let mut status = health::ready_status(node).map(String::from);
            if unheard > self.settings.grace
                && let Some(conditions) = health::unknown(node, stamp.clone())
                && self.set_conditions(node, conditions).await
            {
                status = Some("Unknown".into());
                self.node_event(node, "NodeNotReady", format!("Node {name} status is now: NodeNotReady")).await;
            }
            if status.as_deref() == Some("Unknown") {
                self.mark_pods_not_ready(&name, &stamp).await;
            }
            ready.insert(name, status);
        }
        let healthy = ready.values().filter(|s| s.as_deref() == Some("True")).count();
        let full_disruption = !nodes.is_empty() && healthy == 0;
        for node in &nodes {
            let status = ready.get(&node.name_any()).cloned().flatten();
            let evict = !full_disruption && (self.has_no_execute(node) || self.may_taint(now));
            if let Some(t) = taints::desired(node, status.as_deref(), evict, &stamp) {
                let adds_no_execute = !self.has_no_execute(node)
                    && t.iter().any(|t| t.effect == "NoExecute" && t.key != taints::UNSCHEDULABLE);
                if self.set_taints(node, &t).await && adds_no_execute {
                    self.last_taint = Some(now);
                }
            }
        }
        for node in &nodes {
            self.evict(node).await;
        }
    }

    /// Whether the node already has one of our NoExecute taints (kept, never rate-limited).
    fn has_no_execute(&self, node: &Node) -> bool {
        node.spec
            .iter()
            .flat_map(|s| s.taints.iter().flatten())
            .any(|t| t.effect == "NoExecute" && (t.key == taints::UNREACHABLE || t.key == taints::NOT_READY))
    }

    fn may_taint(&self, now: Instant) -> bool {
        self.last_taint.is_none_or(|t| now.saturating_duration_since(t) >= self.settings.taint_interval)
    }

    /// Merge patches guarded by the node's resourceVersion: a node that changed meanwhile
    /// is looked at again next round.
    async fn set_conditions(&self, node: &Node, conditions: Vec<k8s_openapi::api::core::v1::NodeCondition>) -> bool {
        let patch =
            json!({"metadata": {"resourceVersion": node.resource_version()}, "status": {"conditions": conditions}});
        let api: Api<Node> = Api::all(self.client.clone());
        match api.patch_status(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => true,
            Err(err) => {
                tracing::info!(%err, node = %node.name_any(), "marking a node unknown failed; next round");
                false
            }
        }
    }

    async fn set_taints(&self, node: &Node, taints: &[k8s_openapi::api::core::v1::Taint]) -> bool {
        let patch = json!({"metadata": {"resourceVersion": node.resource_version()}, "spec": {"taints": taints}});
        let api: Api<Node> = Api::all(self.client.clone());
        match api.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => true,
            Err(err) => {
                tracing::info!(%err, node = %node.name_any(), "tainting a node failed; next round");
                false
            }
        }
    }

    fn pods_on(&self, node: &str) -> Vec<Arc<CachedPod>> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .collect()
    }

    /// kube's MarkPodsNotReady: the Ready condition of the node's pods becomes False.
    async fn mark_pods_not_ready(&self, node: &str, stamp: &Time) {
        for pod in self.pods_on(node).iter().filter(|p| super::pods::is_ready(p)) {
            let patch = json!({"status": {"conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": stamp, "reason": "NodeNotReady"}]}});
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            if let Err(err) =
                api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await
                && !claim::is_not_found(&err)
            {
                tracing::info!(%err, pod = %claim::key_of(&**pod), "marking a pod not ready failed; next round");
            }
        }
    }

    /// Deletes the node's pods whose time under its NoExecute taints is up.
    async fn evict(&self, node: &Node) {
        let node_taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        if !node_taints.iter().any(|t| t.effect == "NoExecute") {
            return;
        }
        let now = crate::model::time::now_secs();
        for pod in self.pods_on(&node.name_any()) {
            if pod.metadata.deletion_timestamp.is_some()
                || taints::eviction(&pod, &node_taints, now) != taints::Eviction::Now
            {
                continue;
            }
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            let params = DeleteParams {
                preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
                ..DeleteParams::default()
            };
            match api.delete(&pod.name_any(), &params).await {
                Ok(_) => {
                    let what = format!("Marking for deletion Pod {}", claim::key_of(&*pod));
                    let regarding = ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        namespace: pod.namespace(),
                        name: pod.metadata.name.clone(),
                        uid: pod.uid(),
                        ..ObjectReference::default()
                    };
                    self.events.record(regarding, Type::Normal, "TaintManagerEviction", what).await;
                }
                Err(err) if claim::is_stale(&err) => {}
                Err(err) => tracing::info!(%err, pod = %claim::key_of(&*pod), "evicting a pod failed; next round"),
            }
        }
    }

    async fn node_event(&self, node: &Node, reason: &str, message: String) {
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: node.metadata.name.clone(),
            // kube's node events name the node by its name in place of a uid.
            uid: node.metadata.name.clone(),
            ..ObjectReference::default()
        };
        self.events.record(regarding, Type::Normal, reason, message).await;
    }
}
