//! The ReplicaSet controller, as kube-controller-manager's: each ReplicaSet owns the active
//! pods its selector picks (adopting matching orphans, releasing pods whose labels no
//! longer match), creates pods from its template or deletes the first in kube's order
//! ([`ranking`]) until their number is `spec.replicas`, and reports what it has in its
//! status ([`status`]).
//!
//! It is a kube-runtime controller over the API: its ReplicaSet watch, plus a trigger for
//! each change of a pod seen by the shared pod [`Informer`] (its owner, or for an orphan
//! every ReplicaSet that would adopt it). Creations go in slow-start batches (1, 2, 4, …;
//! at most 500 a sync) that stop at the first failure, and each write is an expectation
//! ([`Expectations`]) the next sync waits for, so that a cache behind the controller's own
//! writes never makes it create or delete twice.

pub mod ranking;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use super::claim::{self, ApiCallError, Claim};
use super::events::{Recorder, Type};
use super::expectations::{Expectations, Seen};
use super::informer::Informer;
use super::pods::{self, CachedPod};
use super::retry::RetryLimiter;
use crate::model::labels;

/// kube's component name, in events.
pub const NAME: &str = "replicaset-controller";
/// At most this many pods are created or deleted in one sync (kube's BurstReplicas).
const BURST_REPLICAS: usize = 500;
/// Workers reconciling different ReplicaSets at once (kube's --concurrent-replicaset-syncs).
const WORKERS: u16 = 5;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Api(#[from] ApiCallError),
    #[error("ReplicaSet {0} has no spec")]
    NoSpec(String),
    #[error("managing the pods of ReplicaSet {rs}: {reason}: {message}")]
    Manage { rs: String, reason: &'static str, message: String },
}

pub struct Context {
    client: kube::Client,
    pods: Store<CachedPod>,
    expectations: Expectations<String>,
    retries: RetryLimiter<String>,
    events: Recorder,
}

/// The controller, triggered by `informer`'s pods; runs when the returned future is polled
/// (start the informer too).
pub fn controller(
    client: kube::Client,
    informer: &mut Informer<CachedPod>,
) -> impl Future<Output = ()> + Send + 'static {
    let controller = Controller::new(Api::<ReplicaSet>::all(client.clone()), watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(WORKERS));
    let sets = controller.store();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    informer.on_change(move |pod, _deleted| {
        for r in concerned(pod, &sets) {
            // The receiver lives as long as the controller; a send after it is harmless.
            let _ = tx.send(r);
        }
    });
    let triggers = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: informer.store(),
        expectations: Expectations::default(),
        retries: RetryLimiter::default(),
        events: Recorder::new(client, NAME),
    });
    async move {
        controller
            .reconcile_on(triggers)
            .run(reconcile, error_policy, ctx)
            .for_each(|r| {
                if let Err(err) = r {
                    tracing::debug!(%err, "replicaset sync");
                }
                futures_util::future::ready(())
            })
            .await
    }
}

/// The ReplicaSets a change of `pod` concerns: its controller if that is a ReplicaSet;
/// for an orphan, every ReplicaSet in its namespace that would adopt it.
fn concerned(pod: &CachedPod, sets: &Store<ReplicaSet>) -> Vec<ObjectRef<ReplicaSet>> {
    let ns = pod.namespace().unwrap_or_default();
    if let Some(owner) = pods::controller_of(&pod.metadata) {
        if owner.kind == "ReplicaSet" && owner.api_version.starts_with("apps/") {
            return vec![ObjectRef::new(&owner.name).within(&ns)];
        }
        return Vec::new();
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let have = pod.metadata.labels.clone().unwrap_or_default();
    sets.state()
        .iter()
        .filter(|rs| rs.namespace().as_deref() == Some(ns.as_str()))
        .filter(|rs| selector(rs).is_some_and(|s| labels::selects(s, &have)))
        .map(|rs| ObjectRef::from_obj(&**rs))
        .collect()
}

fn selector(rs: &ReplicaSet) -> Option<&LabelSelector> {
    claim::usable(rs.spec.as_ref().map(|s| &s.selector))
}

fn key(rs: &ReplicaSet) -> String {
    claim::key_of(rs)
}

fn error_policy(rs: Arc<ReplicaSet>, err: &SyncError, ctx: Arc<Context>) -> Action {
    let wait = ctx.retries.failed(&key(&rs));
    tracing::info!(%err, replicaset = %key(&rs), ?wait, "replicaset sync failed; will retry");
    Action::requeue(wait)
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, SyncError> {
    // Counting pods from a cache that has not listed yet would create them all again.
    if !super::informer::ready(&ctx.pods).await {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let key = key(&rs);
    let ns = rs.namespace().unwrap_or_default();
    let spec = rs.spec.as_ref().ok_or_else(|| SyncError::NoSpec(key.clone()))?;
    let in_namespace: Vec<Arc<CachedPod>> =
        ctx.pods.state().into_iter().filter(|p| p.namespace().as_deref() == Some(ns.as_str())).collect();
    let satisfied = ctx.expectations.satisfied(
        &key,
        in_namespace.iter().map(|p| Seen {
            name: p.metadata.name.as_deref().unwrap_or_default(),
            uid: p.metadata.uid.as_deref().unwrap_or_default(),
            terminating: p.metadata.deletion_timestamp.is_some(),
        }),
    );
    let active: Vec<&CachedPod> = in_namespace.iter().map(|p| &**p).filter(|p| pods::is_active(p)).collect();
    let me = claim::controller_ref(&*rs, "apps/v1", "ReplicaSet");
    let owned = Claim::new(&ctx.client, &*rs, me, Some(&spec.selector)).claim(&active).await?;
    let owned_refs: Vec<&CachedPod> = owned.iter().collect();
    let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
    let now = crate::model::time::now_secs();
    let mut failure = None;
    if satisfied && rs.metadata.deletion_timestamp.is_none() {
        failure = manage(&ctx, &rs, &key, &owned_refs, replicas, now).await;
    }
    let new = status::calculate(&rs, &owned_refs, failure.as_ref(), now);
    if let Some(patch) = status::patch(rs.status.as_ref(), &new) {
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        match api.patch_status(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if claim::is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(claim::failed("writing the status of ReplicaSet", key)(e).into()),
        }
    }
    if let Some(f) = failure {
        return Err(SyncError::Manage { rs: key, reason: f.reason, message: f.message });
    }
    ctx.retries.forget(&key);
    // Pods ready but not yet available become so by the clock alone: look again then.
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0
        && new.ready_replicas.unwrap_or(0) as usize == replicas
        && new.available_replicas.unwrap_or(0) as usize != replicas
    {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

fn reference_to(rs: &ReplicaSet) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("ReplicaSet".into()),
        namespace: rs.namespace(),
        name: Some(rs.name_any()),
        uid: rs.uid(),
        resource_version: rs.resource_version(),
        field_path: None,
    }
}

/// Creates or deletes pods towards `replicas`; the failure, if any, for the status.
async fn manage(
    ctx: &Context,
    rs: &ReplicaSet,
    key: &str,
    owned: &[&CachedPod],
    replicas: usize,
    now: i64,
) -> Option<status::Failure> {
    if owned.len() < replicas {
        let want = (replicas - owned.len()).min(BURST_REPLICAS);
        let pod = from_template(rs)?;
        let mut batch = 1;
        let mut done = 0;
        while done < want {
            let size = batch.min(want - done);
            let results = join_all((0..size).map(|_| create(ctx, rs, key, &pod))).await;
            done += size;
            if let Some(err) = results.into_iter().find_map(Result::err) {
                return Some(status::Failure { reason: "FailedCreate", message: err });
            }
            batch *= 2;
        }
    } else if owned.len() > replicas {
        let extra = (owned.len() - replicas).min(BURST_REPLICAS);
        let victims = ranking::deletion_order(owned, owned, now);
        let results = join_all(victims.iter().take(extra).map(|p| delete(ctx, rs, key, p))).await;
        if let Some(err) = results.into_iter().find_map(Result::err) {
            return Some(status::Failure { reason: "FailedDelete", message: err });
        }
    }
    None
}

/// kube's GetPodFromTemplate: labels, annotations, finalizers and spec of the template,
/// named `RS-xxxxx` by the server, controlled by the ReplicaSet.
fn from_template(rs: &ReplicaSet) -> Option<Pod> {
    let template = rs.spec.as_ref()?.template.clone()?;
    let meta = template.metadata.unwrap_or_default();
    Some(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![claim::controller_ref(rs, "apps/v1", "ReplicaSet")]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    })
}

async fn create(ctx: &Context, rs: &ReplicaSet, key: &str, pod: &Pod) -> Result<(), String> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &rs.namespace().unwrap_or_default());
    match api.create(&PostParams::default(), pod).await {
        Ok(made) => {
            let name = made.name_any();
            ctx.expectations.created(&key.to_string(), &name);
            ctx.events.record(reference_to(rs), Type::Normal, "SuccessfulCreate", format!("Created pod: {name}")).await;
            Ok(())
        }
        Err(e) if claim::is_namespace_terminating(&e) => Ok(()),
        Err(e) => {
            let message = match &e {
                kube::Error::Api(r) => r.message.clone(),
                other => other.to_string(),
            };
            ctx.events
                .record(reference_to(rs), Type::Warning, "FailedCreate", format!("Error creating: {message}"))
                .await;
            Err(message)
        }
    }
}

async fn delete(ctx: &Context, rs: &ReplicaSet, key: &str, pod: &CachedPod) -> Result<(), String> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &rs.namespace().unwrap_or_default());
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let key = key.to_string();
    ctx.expectations.deleted(&key, &uid);
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => {
            let name = pod.name_any();
            ctx.events.record(reference_to(rs), Type::Normal, "SuccessfulDelete", format!("Deleted pod: {name}")).await;
            Ok(())
        }
        // Gone already, or another incarnation: nothing of ours to delete.
        Err(e) if claim::is_stale(&e) => {
            ctx.expectations.delete_failed(&key, &uid);
            Ok(())
        }
        Err(e) => {
            ctx.expectations.delete_failed(&key, &uid);
            let message = claim::message(&e);
            ctx.events
                .record(reference_to(rs), Type::Warning, "FailedDelete", format!("Error deleting: {message}"))
                .await;
            Err(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_orphan_concerns_the_sets_that_would_adopt_it_and_an_owned_pod_its_owner() {
        let (store, mut writer) = kube::runtime::reflector::store::<ReplicaSet>();
        let rs = |name: &str, ns: &str, app: &str| -> ReplicaSet {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns, "uid": name},
                "spec": {"selector": {"matchLabels": {"app": app}}, "template": {}}}))
            .unwrap()
        };
        for r in [rs("a", "ns1", "web"), rs("b", "ns1", "db"), rs("c", "ns2", "web")] {
            writer.apply_watcher_event(&watcher::Event::Apply(r));
        }
        let orphan: CachedPod =
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns1", "labels": {"app": "web"}}}))
                .unwrap();
        let names = |v: Vec<ObjectRef<ReplicaSet>>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(names(concerned(&orphan, &store)), ["a"]);
        let owned: CachedPod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns1", "labels": {"app": "x"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "b", "uid": "b", "controller": true}]}}))
        .unwrap();
        assert_eq!(names(concerned(&owned, &store)), ["b"]);
    }
}
