//! The scheduler inside `nodectl server`: it lists nodes and pods, follows the store's
//! watch of both to keep its [`Snapshot`] current, decides for every pod that waits for a
//! node (no spec.nodeName, schedulerName default-scheduler, not being deleted) and binds it
//! through the registry. A pod that fits nowhere gets PodScheduled=False, reason
//! Unschedulable, with kube-scheduler's message, and a FailedScheduling event; it is tried
//! again when a node or a pod changes (what could make room), not in a loop.
//!
//! A decision is recorded in the snapshot before its binding is written, and bindings are
//! written by tasks of their own ([`BINDINGS_IN_FLIGHT`] at most), so the next decision
//! never waits on the store; a binding that fails comes back and its pod is forgotten from
//! the snapshot and queued again, as kube-scheduler's assume and forget do.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use super::matching::Labels;
use super::{Scheduler, Snapshot, Unschedulable};
use crate::server::controllers::graph::Location;
use crate::server::controllers::writes;
use crate::server::registry::RegistryError;
use crate::server::registry::binding::{Binding, bind};
use crate::server::registry::objects::{self, FieldValidation, Part, Store};
use crate::server::registry::resources::{self, Resource};
use crate::server::store::{self, Event, EventKind, StoreError};

/// The scheduler's name, in events and in the pods it takes.
pub const NAME: &str = "default-scheduler";

/// Bindings written at once: enough to overlap the store's commits with the decisions.
const BINDINGS_IN_FLIGHT: usize = 64;

/// Starts the scheduler on the current runtime; it runs as long as the runtime.
pub fn start(store: Store) {
    tokio::spawn(async move {
        loop {
            let err = follow(&store).await;
            tracing::warn!(%err, "the scheduler's watch ended; listing again shortly");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

#[derive(Debug, thiserror::Error)]
enum ScheduleError {
    #[error("{what}: {source}")]
    Store { what: &'static str, source: StoreError },
    #[error("store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the registry serves no {0}")]
    NotServed(&'static str),
}

fn served(plural: &'static str) -> Result<&'static Resource, ScheduleError> {
    resources::find("", "v1", plural).ok_or(ScheduleError::NotServed(plural))
}

/// A pod the scheduler should place.
fn waiting(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.is_some_and(|s| s.node_name.as_deref().is_none_or(str::is_empty))
        && spec.and_then(|s| s.scheduler_name.as_deref()).is_none_or(|n| n == NAME)
        && pod.metadata.deletion_timestamp.is_none()
}

/// A bound pod that still holds its node's resources (not ended).
fn holds_node(pod: &Pod) -> Option<&str> {
    let ended = pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|p| p == "Succeeded" || p == "Failed");
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty() && !ended)
}

/// What the scheduler reads of a pod's write before decoding it whole: most writes it sees
/// are of pods it already placed (their binding, their status), which change nothing it
/// holds. Everything else in the object is skipped, not decoded.
#[derive(serde::Deserialize)]
struct Peek {
    metadata: PeekMeta,
    spec: Option<PeekSpec>,
    status: Option<PeekStatus>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PeekMeta {
    uid: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<PeekOwner>>,
}

#[derive(serde::Deserialize)]
struct PeekOwner {
    uid: String,
    controller: Option<bool>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PeekSpec {
    node_name: Option<String>,
}

#[derive(serde::Deserialize)]
struct PeekStatus {
    phase: Option<String>,
}

impl Peek {
    /// Whether this write is of a pod placed on its node as the snapshot has it (same
    /// labels and controlling owner, still holding the node): nothing to place, forget or
    /// decide. What else the snapshot keeps of a pod (requests, host ports, affinity) is
    /// in its spec, which does not change once it is bound.
    fn placed_as_is(&self, snapshot: &Snapshot) -> bool {
        let node = self.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty());
        let ended =
            self.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|p| p == "Succeeded" || p == "Failed");
        let (Some(node), Some(uid)) = (node, self.metadata.uid.as_deref()) else { return false };
        let same_labels = |placed: &Labels| self.metadata.labels.as_ref().map_or(placed.is_empty(), |l| l == placed);
        let owner =
            self.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| &o.uid);
        !ended
            && snapshot.placement(uid).is_some_and(|(on, placed)| {
                on.name == node && same_labels(&placed.labels) && placed.owner.as_ref() == owner
            })
    }
}

/// The scheduler's memory between events: the snapshot, the pods to place now, and those
/// that fit nowhere until something changes.
#[derive(Default)]
struct State {
    snapshot: Snapshot,
    scheduler: Scheduler,
    active: VecDeque<String>,
    waiting: BTreeMap<String, Pod>,
    unschedulable: BTreeMap<String, Pod>,
    /// The last Unschedulable message written for a pod (its uid): written again only if
    /// it changed.
    reported: BTreeMap<String, String>,
    /// Pods (by key) decided for and being bound: not decided for again meanwhile.
    binding: BTreeSet<String>,
}

/// What a binding task reports when it is done: a failed binding gives its pod back (to
/// be queued again); a written one has dropped it. Reports wait in an unbounded channel
/// while the watches keep the loop busy, and a whole Pod in each of them was most of the
/// server's memory after a burst of 40,000 pods.
struct Bound {
    key: String,
    uid: String,
    node: String,
    result: Result<(), (RegistryError, Pod)>,
}

impl State {
    fn pod_event(&mut self, key: &str, pod: Option<Pod>) {
        let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
        match pod {
            // Its binding is being written; the watch brings the bound pod.
            Some(p) if waiting(&p) && self.binding.contains(key) => {}
            Some(p) if waiting(&p) => {
                if !self.waiting.contains_key(key) && !self.unschedulable.contains_key(key) {
                    self.active.push_back(key.to_string());
                }
                if self.unschedulable.contains_key(key) {
                    self.unschedulable.insert(key.to_string(), p);
                } else {
                    self.waiting.insert(key.to_string(), p);
                }
            }
            Some(p) => {
                self.forget(key);
                match holds_node(&p).map(String::from) {
                    Some(node) => self.snapshot.place(&node, &p),
                    None => {
                        let freed = self.snapshot.is_placed(&uid(&p));
                        self.snapshot.unplace(&uid(&p));
                        if freed {
                            self.retry_unschedulable();
                        }
                    }
                }
            }
            None => {
                self.forget(key);
            }
        }
    }

    fn forget(&mut self, key: &str) {
        self.waiting.remove(key);
        self.binding.remove(key);
        if let Some(p) = self.unschedulable.remove(key) {
            self.reported.remove(p.metadata.uid.as_deref().unwrap_or_default());
        }
    }

    /// Something changed that may make room: every unschedulable pod is tried again.
    fn retry_unschedulable(&mut self) {
        for (key, pod) in std::mem::take(&mut self.unschedulable) {
            self.active.push_back(key.clone());
            self.waiting.insert(key, pod);
        }
    }
}

/// Lists nodes and pods, then schedules and follows the watch until it fails.
async fn follow(store: &Store) -> ScheduleError {
    match run(store).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn run(store: &Store) -> Result<std::convert::Infallible, ScheduleError> {
    let (nodes_r, pods_r) = (served("nodes")?, served("pods")?);
    let (node_prefix, pod_prefix) = (nodes_r.key(None, None), pods_r.key(None, None));
    let s = store.clone();
    let (np, pp) = (node_prefix.clone(), pod_prefix.clone());
    let (nodes, pods, mut node_watch, mut pod_watch) = tokio::task::spawn_blocking(move || {
        let err = |what| move |source| ScheduleError::Store { what, source };
        let nodes = s.list(&np, None, 0, None).map_err(err("listing nodes"))?;
        let pods = s.list(&pp, None, 0, Some(nodes.revision)).map_err(err("listing pods"))?;
        let node_watch = store::watch(s.clone(), &np, Some(nodes.revision)).map_err(err("watching nodes"))?;
        let pod_watch = store::watch(s, &pp, Some(nodes.revision)).map_err(err("watching pods"))?;
        Ok::<_, ScheduleError>((nodes, pods, node_watch, pod_watch))
    })
    .await??;
    let mut state = State::default();
    for kv in &nodes.items {
        if let Ok(node) = serde_json::from_slice::<Node>(&kv.value) {
            state.snapshot.put_node(&node);
        }
    }
    for kv in &pods.items {
        state.pod_event(&kv.key, serde_json::from_slice::<Pod>(&kv.value).ok());
    }
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let binder = Binder {
        store: store.clone(),
        pods: pods_r,
        permits: Arc::new(Semaphore::new(BINDINGS_IN_FLIGHT)),
        done: done_tx,
    };
    loop {
        schedule_active(store, &binder, &mut state).await;
        // Wait for the next change; take every change already there before deciding again.
        tokio::select! {
            e = node_watch.next() => apply(&mut state, (true, e))?,
            e = pod_watch.next() => apply(&mut state, (false, e))?,
            Some(b) = done.recv() => finish(&mut state, b),
        }
        loop {
            // Finished bindings first: while the watches always have more, nothing after
            // them in this order would be taken.
            tokio::select! {
                biased;
                Some(b) = done.recv() => finish(&mut state, b),
                e = node_watch.next() => apply(&mut state, (true, e))?,
                e = pod_watch.next() => apply(&mut state, (false, e))?,
                _ = std::future::ready(()) => break,
            }
        }
    }
}

/// Writes bindings on tasks of their own and reports each outcome.
struct Binder {
    store: Store,
    pods: &'static Resource,
    permits: Arc<Semaphore>,
    done: mpsc::UnboundedSender<Bound>,
}

impl Binder {
    /// Starts writing a binding; waits only while [`BINDINGS_IN_FLIGHT`] are being written.
    async fn start(&self, key: String, pod: Pod, node: String) {
        let Ok(permit) = self.permits.clone().acquire_owned().await else { return };
        let (store, pods, done) = (self.store.clone(), self.pods, self.done.clone());
        tokio::spawn(async move {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let result = bind_pod(&store, pods, &pod, &node).await.map_err(|e| (e, pod));
            drop(permit);
            let _ = done.send(Bound { key, uid, node, result });
        });
    }
}

/// A binding is done: a failed one's pod is forgotten and, unless the watch will tell
/// (deleted, bound by another), queued again.
fn finish(state: &mut State, b: Bound) {
    // A written binding stays in `binding` until the watch brings the bound pod (older
    // events of the pod unbound may come first).
    let Err((e, pod)) = b.result else { return };
    state.binding.remove(&b.key);
    // Only our own placement is taken back: the watch may have placed it where another
    // scheduler bound it.
    if state.snapshot.node(&b.node).is_some_and(|n| n.pods.contains_key(&b.uid)) {
        state.snapshot.unplace(&b.uid);
    }
    match e {
        RegistryError::NotFound { .. } | RegistryError::ConflictWith { .. } => {}
        e => {
            tracing::warn!(pod = %b.key, %e, "binding failed; will retry");
            state.unschedulable.insert(b.key, pod);
        }
    }
}

fn apply(state: &mut State, (is_node, e): (bool, Result<Event, StoreError>)) -> Result<(), ScheduleError> {
    let e = e.map_err(|source| ScheduleError::Store { what: "watching nodes and pods", source })?;
    if is_node {
        let Ok(node) = serde_json::from_slice::<Node>(&e.kv.value) else { return Ok(()) };
        let changed = match e.kind {
            EventKind::Put => state.snapshot.put_node(&node),
            EventKind::Delete => {
                state.snapshot.remove_node(node.metadata.name.as_deref().unwrap_or_default());
                false
            }
        };
        if changed {
            state.retry_unschedulable();
        }
    } else {
        let pod = match e.kind {
            EventKind::Put => {
                if serde_json::from_slice::<Peek>(&e.kv.value).is_ok_and(|p| p.placed_as_is(&state.snapshot)) {
                    state.forget(&e.kv.key);
                    return Ok(());
                }
                serde_json::from_slice::<Pod>(&e.kv.value).ok()
            }
            EventKind::Delete => {
                if let Ok(old) = serde_json::from_slice::<Pod>(&e.kv.value) {
                    let uid = old.metadata.uid.clone().unwrap_or_default();
                    if state.snapshot.is_placed(&uid) {
                        state.snapshot.unplace(&uid);
                        state.retry_unschedulable();
                    }
                }
                None
            }
        };
        state.pod_event(&e.kv.key, pod);
    }
    Ok(())
}

/// Decides for every pod in the active queue and starts writing the outcome.
async fn schedule_active(store: &Store, binder: &Binder, state: &mut State) {
    while let Some(key) = state.active.pop_front() {
        let Some(pod) = state.waiting.remove(&key) else { continue };
        match state.scheduler.decide(&state.snapshot, &pod) {
            Ok(node) => {
                state.snapshot.place(&node, &pod);
                state.binding.insert(key.clone());
                binder.start(key, pod, node).await;
            }
            Err(why) => {
                report_unschedulable(store, &pod, &why, &mut state.reported).await;
                state.unschedulable.insert(key, pod);
            }
        }
    }
}

async fn bind_pod(store: &Store, pods_r: &'static Resource, pod: &Pod, node: &str) -> Result<(), RegistryError> {
    let b = Binding {
        namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone(),
        node: node.to_string(),
        annotations: Default::default(),
    };
    let s = store.clone();
    let (ns, name) = (b.namespace.clone(), b.name.clone());
    objects::blocking(move || bind(s.as_ref(), pods_r, &b)).await?;
    event(store, pod, "Normal", "Scheduled", &format!("Successfully assigned {ns}/{name} to {node}")).await;
    Ok(())
}

/// PodScheduled=False with the reason, and a FailedScheduling event, unless the same
/// message was already written for this pod.
async fn report_unschedulable(store: &Store, pod: &Pod, why: &Unschedulable, reported: &mut BTreeMap<String, String>) {
    let message = why.to_string();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if reported.get(&uid) == Some(&message) {
        return;
    }
    reported.insert(uid.clone(), message.clone());
    let Some(pods) = resources::find("", "v1", "pods") else { return };
    let at = Location {
        resource: pods,
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone().unwrap_or_default(),
    };
    let condition = json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                           "lastProbeTime": null, "lastTransitionTime": crate::model::time::now_rfc3339()});
    let written = writes::modify(store, &at, &uid, Part::Status, |obj| {
        let mut conditions: Vec<Value> =
            obj.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        if conditions.iter().any(|c| c["type"] == "PodScheduled" && c["message"] == condition["message"]) {
            return false;
        }
        conditions.retain(|c| c["type"] != "PodScheduled");
        conditions.push(condition.clone());
        if !obj["status"].is_object() {
            obj["status"] = json!({});
        }
        obj["status"]["conditions"] = json!(conditions);
        true
    })
    .await;
    if let Err(e) = written {
        tracing::warn!(%e, "writing a pod's PodScheduled condition failed");
    }
    event(store, pod, "Warning", "FailedScheduling", &message).await;
}

/// Records a core/v1 Event about `pod` from the scheduler.
async fn event(store: &Store, pod: &Pod, kind: &str, reason: &str, message: &str) {
    let Some(events) = resources::find("", "v1", "events") else { return };
    let now = crate::model::time::now_rfc3339();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let body = json!({
        "metadata": {"generateName": format!("{name}.")},
        "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": namespace, "name": name,
                           "uid": pod.metadata.uid, "resourceVersion": pod.metadata.resource_version},
        "reason": reason, "message": message, "type": kind,
        "source": {"component": NAME}, "reportingComponent": NAME, "reportingInstance": NAME,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    });
    let created =
        objects::create_value(store.clone(), events, Some(namespace), body, (FieldValidation::Lenient, None, false))
            .await;
    if let Err(e) = created {
        tracing::debug!(%e, "recording a scheduler event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a write that leaves a placed pod where and as the snapshot has it is skipped.
    #[test]
    fn a_peek_skips_only_writes_that_change_nothing_placed() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
        .unwrap();
        let mut snapshot = Snapshot::default();
        snapshot.put_node(&node);
        let pod = json!({"metadata": {"name": "p", "namespace": "default", "uid": "u1", "labels": {"app": "web"}},
                         "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
                         "status": {"phase": "Running"}});
        snapshot.place("n1", &serde_json::from_value(pod.clone()).unwrap());
        let peek = |change: Value| {
            let mut p = pod.clone();
            crate::server::registry::patch::merge_patch(&mut p, &change);
            serde_json::from_value::<Peek>(p).unwrap().placed_as_is(&snapshot)
        };
        assert!(peek(json!({})));
        assert!(peek(json!({"status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}})));
        assert!(!peek(json!({"metadata": {"labels": {"app": "db"}}})), "labels changed");
        assert!(!peek(json!({"metadata": {"labels": null}})), "labels gone");
        assert!(!peek(json!({"status": {"phase": "Succeeded"}})), "ended");
        assert!(!peek(json!({"spec": {"nodeName": "n2"}})), "bound elsewhere");
        assert!(!peek(json!({"spec": {"nodeName": null}})), "not bound");
        assert!(!peek(json!({"metadata": {"uid": "u2"}})), "another incarnation");
        let adopted = json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                              "name": "web", "uid": "rs1", "controller": true}]}});
        assert!(!peek(adopted), "adopted");
    }
}
