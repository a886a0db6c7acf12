//! The pod garbage collector, as kube-controller-manager's `podgc`: every period it
//! removes what no kubelet will ever remove.
//! - Pods bound to a node that does not exist (the Node was deleted, or the pod named a node
//!   that never joined): once the node has been missing for a quarantine of two periods and
//!   the API confirms it is gone, the pod is marked Failed with a DisruptionTarget condition
//!   (reason DeletionByPodGC) and deleted at once.
//! - Pods being deleted on a node that is not Ready and carries the
//!   `node.kubernetes.io/out-of-service` taint (a node an operator declared dead): the same.
//! - Finished pods (Succeeded, Failed) beyond `--terminated-pod-gc-threshold` (12,500 by
//!   default; 0 keeps them all): the oldest by creation go first.
//!
//! It reads pods from the shared pod informer and nodes from an informer of its own, and
//! writes through the API as a client; a write that fails is tried again next period.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use super::claim;
use super::informer::{self, Informer};
use super::pods::CachedPod;

/// The taint an operator puts on a node that is down for good (kube's out-of-service).
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

#[derive(Clone, Debug)]
pub struct Settings {
    /// How often pods are looked at (kube's gcCheckPeriod, 20 s).
    pub period: Duration,
    /// Finished pods kept at most; 0 keeps them all (--terminated-pod-gc-threshold).
    pub terminated_threshold: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { period: Duration::from_secs(20), terminated_threshold: 12_500 }
    }
}

/// What the collector does with one pod.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Mark it Failed (unless it has ended) with this message, then delete it at once.
    FailAndDelete(&'static str),
    /// Delete it at once.
    Delete,
}

fn phase(pod: &CachedPod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn terminated(pod: &CachedPod) -> bool {
    matches!(phase(pod), Some("Succeeded" | "Failed"))
}

fn node_of(pod: &CachedPod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

/// A node an operator declared out of service: not Ready, with the out-of-service taint.
fn out_of_service(node: &Node) -> bool {
    let tainted =
        node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| t.iter().any(|t| t.key == OUT_OF_SERVICE));
    tainted && super::nodelifecycle::health::ready_status(node) != Some("True")
}

/// The finished pods to delete so that at most `threshold` remain: the oldest first, as
/// kube sorts them (creation time, then name).
fn over_threshold(pods: &[Arc<CachedPod>], threshold: usize) -> Vec<Arc<CachedPod>> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut done: Vec<Arc<CachedPod>> =
        pods.iter().filter(|p| terminated(p) && p.metadata.deletion_timestamp.is_none()).cloned().collect();
    if done.len() <= threshold {
        return Vec::new();
    }
    done.sort_by(|a, b| {
        let created = |p: &CachedPod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a).cmp(&created(b)).then_with(|| a.name_any().cmp(&b.name_any()))
    });
    let excess = done.len() - threshold;
    done.truncate(excess);
    done
}

struct Collector {
    client: kube::Client,
    settings: Settings,
    nodes: Store<Node>,
    pods: Store<CachedPod>,
    /// Nodes that pods name but the cache lacks, and since when.
    missing_since: HashMap<String, Instant>,
}

/// The collector on the shared pod and Node informers; runs when the returned future is
/// polled.
pub fn controller(
    client: kube::Client,
    settings: Settings,
    (pods, nodes): (&Informer<CachedPod>, &Informer<Node>),
) -> impl Future<Output = ()> + Send + 'static {
    let mut c = Collector { client, settings, nodes: nodes.store(), pods: pods.store(), missing_since: HashMap::new() };
    async move {
        if !informer::ready(&c.nodes).await || !informer::ready(&c.pods).await {
            return;
        }
        let mut tick = tokio::time::interval(c.settings.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            c.collect().await;
        }
    }
}

impl Collector {
    async fn collect(&mut self) {
        let pods = self.pods.state();
        let now = Instant::now();
        let quarantine = self.settings.period * 2;
        let mut verdicts: Vec<(Arc<CachedPod>, Verdict)> = over_threshold(&pods, self.settings.terminated_threshold)
            .into_iter()
            .map(|p| (p, Verdict::Delete))
            .collect();
        let mut missing: HashMap<String, Instant> = HashMap::new();
        // The API's answer for each missing node, asked once a period however many pods name it.
        let mut gone: HashMap<String, bool> = HashMap::new();
        for pod in &pods {
            let Some(node) = node_of(pod) else { continue };
            match self.nodes.get(&ObjectRef::new(node)) {
                Some(n) if pod.metadata.deletion_timestamp.is_some() && out_of_service(&n) => {
                    verdicts.push((pod.clone(), Verdict::FailAndDelete("PodGC: node is out of service")));
                }
                Some(_) => {}
                None => {
                    let since = *self.missing_since.get(node).unwrap_or(&now);
                    missing.insert(node.to_string(), since);
                    if now.duration_since(since) < quarantine {
                        continue;
                    }
                    if !gone.contains_key(node) {
                        gone.insert(node.to_string(), self.node_is_gone(node).await);
                    }
                    if gone[node] {
                        verdicts.push((pod.clone(), Verdict::FailAndDelete("PodGC: node no longer exists")));
                    }
                }
            }
        }
        // Only nodes still named by a pod and still missing stay in quarantine.
        self.missing_since = missing;
        for (pod, verdict) in verdicts {
            self.carry_out(&pod, verdict).await;
        }
    }

    /// The cache may lag: the API has the last word on whether a node is gone.
    async fn node_is_gone(&self, name: &str) -> bool {
        match Api::<Node>::all(self.client.clone()).get_opt(name).await {
            Ok(found) => found.is_none(),
            Err(err) => {
                tracing::info!(%err, node = name, "asking whether a node exists failed; next period");
                false
            }
        }
    }

    async fn carry_out(&self, pod: &CachedPod, verdict: Verdict) {
        let key = claim::key_of(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        if let Verdict::FailAndDelete(message) = verdict
            && !terminated(pod)
            && let Err(err) = api.patch_status(&pod.name_any(), &PatchParams::default(), &failed(pod, message)).await
        {
            if !claim::is_stale(&err) {
                tracing::info!(%err, pod = %key, "marking a pod Failed failed; next period");
            }
            return;
        }
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&pod.name_any(), &params).await {
            Ok(_) => tracing::info!(pod = %key, "pod garbage collector deleted a pod"),
            Err(err) if claim::is_stale(&err) => {}
            Err(err) => tracing::info!(%err, pod = %key, "deleting a pod failed; next period"),
        }
    }
}

/// The status patch that ends a pod: phase Failed and the DisruptionTarget condition, the
/// other conditions kept (a merge patch replaces the list whole).
fn failed(pod: &CachedPod, message: &str) -> Patch<serde_json::Value> {
    let mut conditions: Vec<PodCondition> = pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    conditions.retain(|c| c.type_ != "DisruptionTarget");
    conditions.push(PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByPodGC".into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(crate::model::time::now())),
        ..PodCondition::default()
    });
    let mut patch = json!({"status": {"phase": "Failed", "conditions": conditions}});
    if let Some(rv) = &pod.metadata.resource_version {
        // The pod as read: a kubelet that wrote meanwhile wins, and the next period looks again.
        patch["metadata"] = json!({"resourceVersion": rv});
    }
    Patch::Merge(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::controllers::pods::{CachedSpec, CachedStatus};
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, created: i64, phase: &str) -> Arc<CachedPod> {
        Arc::new(CachedPod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(chrono::DateTime::from_timestamp(created, 0).unwrap())),
                ..ObjectMeta::default()
            },
            spec: Some(CachedSpec { node_name: Some("n".into()), ..CachedSpec::default() }),
            status: Some(CachedStatus { phase: Some(phase.into()), ..CachedStatus::default() }),
        })
    }

    #[test]
    fn the_oldest_finished_pods_beyond_the_threshold_go() {
        let pods = vec![
            pod("c", 30, "Succeeded"),
            pod("a", 10, "Failed"),
            pod("run", 5, "Running"),
            pod("b", 20, "Succeeded"),
            pod("b0", 20, "Succeeded"),
        ];
        let names = |v: Vec<Arc<CachedPod>>| v.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(names(over_threshold(&pods, 2)), ["a", "b"]);
        assert_eq!(names(over_threshold(&pods, 4)), Vec::<String>::new());
        assert_eq!(names(over_threshold(&pods, 0)), Vec::<String>::new(), "0 keeps every pod");
    }

    #[test]
    fn a_node_is_out_of_service_only_when_tainted_and_not_ready() {
        let node = |taint: bool, ready: &str| Node {
            spec: Some(NodeSpec {
                taints: taint.then(|| {
                    vec![Taint { key: OUT_OF_SERVICE.into(), effect: "NoExecute".into(), ..Taint::default() }]
                }),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        };
        assert!(out_of_service(&node(true, "False")));
        assert!(out_of_service(&node(true, "Unknown")));
        assert!(!out_of_service(&node(true, "True")));
        assert!(!out_of_service(&node(false, "False")));
    }

    #[test]
    fn a_failed_pod_keeps_its_other_conditions_and_gets_the_disruption_target() {
        let mut p = (*pod("p", 1, "Running")).clone();
        p.metadata.resource_version = Some("7".into());
        p.status.as_mut().unwrap().conditions =
            Some(vec![PodCondition { type_: "Ready".into(), status: "True".into(), ..PodCondition::default() }]);
        let Patch::Merge(body) = failed(&p, "PodGC: node no longer exists") else { panic!() };
        assert_eq!(body["status"]["phase"], "Failed");
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        let conditions = body["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions[0]["type"], "Ready");
        assert_eq!(conditions[1]["type"], "DisruptionTarget");
        assert_eq!(conditions[1]["reason"], "DeletionByPodGC");
    }
}
