//! The Deployment controller, as kube-controller-manager's: a Deployment owns ReplicaSets
//! (claimed by its selector as a ReplicaSet claims pods), one per template it has had,
//! named `DEPLOYMENT-HASH` and labelled with the `pod-template-hash`; the one whose template
//! is the Deployment's is the new one, the others are old. Each sync takes one step
//! ([`plan`]): RollingUpdate grows the new ReplicaSet within maxSurge and shrinks old ones
//! within maxUnavailable; Recreate scales the old ones to zero, waits for their pods to be
//! gone, then creates the new one; a change of replicas (or a paused Deployment) scales
//! the active ReplicaSets in proportion. Revisions ([`revisions`]) number the templates, so
//! that `kubectl rollout history|undo` work; old ReplicaSets beyond revisionHistoryLimit go
//! once a rollout completes. The status and its Available/Progressing conditions
//! ([`status`]) are what `kubectl rollout status` reads.

pub mod plan;
pub mod revisions;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;

use super::claim::{self, ApiCallError, Claim};
use super::events::{Recorder, Type};
use super::informer::{self, Informer};
use super::pods::{self, CachedPod};
use super::retry::RetryLimiter;
use crate::model::labels;
use plan::{desired, replicas};

pub const NAME: &str = "deployment-controller";
/// kube's --concurrent-deployment-syncs.
const WORKERS: u16 = 5;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Api(#[from] ApiCallError),
    #[error("Deployment {0} has no spec")]
    NoSpec(String),
    #[error("the name of a new ReplicaSet for Deployment {0} collides with another's; trying the next hash")]
    Collision(String),
}

pub struct Context {
    client: kube::Client,
    sets: Store<ReplicaSet>,
    pods: Store<CachedPod>,
    retries: RetryLimiter<String>,
    events: Recorder,
}

/// The controller, triggered by `sets`' ReplicaSets and by `pods`' deletions (a Recreate
/// rollout waits for the old pods to be gone); runs when the returned future is polled.
pub fn controller(
    client: kube::Client,
    pods: &mut Informer<CachedPod>,
    sets: &mut Informer<ReplicaSet>,
) -> impl Future<Output = ()> + Send + 'static {
    let controller = Controller::new(Api::<Deployment>::all(client.clone()), watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(WORKERS));
    let deployments = controller.store();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (d1, tx1) = (deployments.clone(), tx.clone());
    sets.on_change(move |rs, _deleted| {
        for d in concerned(rs, &d1) {
            let _ = tx1.send(d);
        }
    });
    let set_store = sets.store();
    pods.on_change(move |pod, deleted| {
        if !deleted {
            return;
        }
        let Some(owner) = pods::controller_of(&pod.metadata).filter(|o| o.kind == "ReplicaSet") else { return };
        let at = ObjectRef::new(&owner.name).within(&pod.namespace().unwrap_or_default());
        if let Some(rs) = set_store.get(&at) {
            for d in concerned(&rs, &deployments) {
                let _ = tx.send(d);
            }
        }
    });
    let triggers = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let ctx = Arc::new(Context {
        client: client.clone(),
        sets: sets.store(),
        pods: pods.store(),
        retries: RetryLimiter::default(),
        events: Recorder::new(client, NAME),
    });
    async move {
        controller
            .reconcile_on(triggers)
            .run(reconcile, error_policy, ctx)
            .for_each(|r| {
                if let Err(err) = r {
                    tracing::debug!(%err, "deployment sync");
                }
                futures_util::future::ready(())
            })
            .await
    }
}

/// The Deployments a change of `rs` concerns: its controller if that is a Deployment; for
/// an orphan, every Deployment in its namespace that would adopt it.
fn concerned(rs: &ReplicaSet, deployments: &Store<Deployment>) -> Vec<ObjectRef<Deployment>> {
    let ns = rs.namespace().unwrap_or_default();
    if let Some(owner) = pods::controller_of(&rs.metadata) {
        if owner.kind == "Deployment" && owner.api_version.starts_with("apps/") {
            return vec![ObjectRef::new(&owner.name).within(&ns)];
        }
        return Vec::new();
    }
    let have = rs.labels().clone();
    deployments
        .state()
        .iter()
        .filter(|d| d.namespace().as_deref() == Some(ns.as_str()))
        .filter(|d| claim::usable(d.spec.as_ref().map(|s| &s.selector)).is_some_and(|s| labels::selects(s, &have)))
        .map(|d| ObjectRef::from_obj(&**d))
        .collect()
}

fn error_policy(d: Arc<Deployment>, err: &SyncError, ctx: Arc<Context>) -> Action {
    let wait = ctx.retries.failed(&claim::key_of(&*d));
    tracing::info!(%err, deployment = %claim::key_of(&*d), ?wait, "deployment sync failed; will retry");
    Action::requeue(wait)
}

fn reference_to(d: &Deployment) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("Deployment".into()),
        namespace: d.namespace(),
        name: Some(d.name_any()),
        uid: d.uid(),
        resource_version: d.resource_version(),
        field_path: None,
    }
}

/// The sync's view: the Deployment, its new ReplicaSet if any, the old ones oldest first.
struct Sets {
    new: Option<ReplicaSet>,
    old: Vec<ReplicaSet>,
}

impl Sets {
    fn all(&self) -> Vec<&ReplicaSet> {
        self.old.iter().chain(self.new.iter()).collect()
    }

    fn active_old(&self) -> Vec<&ReplicaSet> {
        self.old.iter().filter(|r| replicas(r) > 0).collect()
    }
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, SyncError> {
    if !informer::ready(&ctx.sets).await || !informer::ready(&ctx.pods).await {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let key = claim::key_of(&*d);
    let spec = d.spec.as_ref().ok_or_else(|| SyncError::NoSpec(key.clone()))?;
    let ns = d.namespace().unwrap_or_default();
    let candidates: Vec<Arc<ReplicaSet>> =
        ctx.sets.state().into_iter().filter(|r| r.namespace().as_deref() == Some(ns.as_str())).collect();
    let candidates: Vec<&ReplicaSet> = candidates.iter().map(|r| &**r).collect();
    let me = claim::controller_ref(&*d, "apps/v1", "Deployment");
    let owned = Claim::new(&ctx.client, &*d, me, Some(&spec.selector)).claim(&candidates).await?;
    let now = crate::model::time::now_secs();
    let mut sets = split(&d, owned);
    if d.metadata.deletion_timestamp.is_some() {
        write_status(&ctx, &d, status::calculate(&d, &sets.all(), sets.new.as_ref(), now)).await?;
        return Ok(Action::await_change());
    }
    let paused = spec.paused == Some(true);
    if paused || scaling_event(&d, &sets) {
        if let Some(n) = sets.new.take() {
            sets.new = Some(sync_revision(&ctx, &d, n, &sets.old).await?);
        }
        let active: Vec<&ReplicaSet> = sets.all().into_iter().filter(|r| replicas(r) > 0).collect();
        let scales = plan::proportional(&d, &active, sets.new.as_ref());
        apply(&ctx, &d, &mut sets, &scales).await?;
        if paused {
            cleanup(&ctx, &d, &sets).await?;
        }
        let mut s = status::calculate(&d, &sets.all(), sets.new.as_ref(), now);
        paused_condition(&d, &mut s, paused, now);
        write_status(&ctx, &d, s).await?;
        ctx.retries.forget(&key);
        return Ok(Action::await_change());
    }
    let mut created = false;
    if plan::is_recreate(&d) {
        recreate(&ctx, &d, &mut sets, &mut created).await?;
    } else {
        rolling(&ctx, &d, &mut sets, &mut created).await?;
    }
    let mut s = status::calculate(&d, &sets.all(), sets.new.as_ref(), now);
    paused_condition(&d, &mut s, false, now);
    if created && let Some(n) = &sets.new {
        status::set(
            &mut s,
            status::condition(
                status::PROGRESSING,
                "True",
                status::NEW_RS_CREATED,
                format!("Created new replica set {:?}", n.name_any()),
                now,
            ),
        );
    }
    let s = status::rollout(&d, s, &sets.all(), sets.new.as_ref(), now);
    let times_out = status::times_out_at(&d, &s);
    write_status(&ctx, &d, s).await?;
    ctx.retries.forget(&key);
    // A rollout that makes no progress times out by the clock alone: look again then.
    Ok(match times_out {
        Some(at) => Action::requeue(Duration::from_secs((at - now).max(0) as u64 + 1)),
        None => Action::await_change(),
    })
}

/// The new ReplicaSet (the newest whose template is the Deployment's) and the old ones.
fn split(d: &Deployment, owned: Vec<ReplicaSet>) -> Sets {
    let template = d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let mut owned = owned;
    owned.sort_by(|a, b| {
        a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp).then_with(|| a.name_any().cmp(&b.name_any()))
    });
    let new_at = owned.iter().position(|r| {
        r.spec.as_ref().and_then(|s| s.template.as_ref()).is_some_and(|t| revisions::same_template(t, &template))
    });
    let new = new_at.map(|i| owned.remove(i));
    Sets { new, old: owned }
}

/// kube's isScalingEvent: an active ReplicaSet was made for another replica count.
fn scaling_event(d: &Deployment, sets: &Sets) -> bool {
    sets.all().iter().filter(|r| replicas(r) > 0).any(|r| {
        r.annotations()
            .get(revisions::DESIRED_REPLICAS)
            .and_then(|v| v.parse::<i32>().ok())
            .is_some_and(|n| n != desired(d))
    })
}

fn paused_condition(d: &Deployment, s: &mut k8s_openapi::api::apps::v1::DeploymentStatus, paused: bool, now: i64) {
    if status::deadline(d).is_none() {
        return;
    }
    let reason = status::get(s, status::PROGRESSING).and_then(|c| c.reason.clone());
    if paused && reason.as_deref() != Some(status::PAUSED) {
        status::set(
            s,
            status::condition(status::PROGRESSING, "Unknown", status::PAUSED, "Deployment is paused".into(), now),
        );
    } else if !paused && reason.as_deref() == Some(status::PAUSED) {
        status::set(
            s,
            status::condition(status::PROGRESSING, "Unknown", status::RESUMED, "Deployment is resumed".into(), now),
        );
    }
}

async fn rolling(ctx: &Context, d: &Deployment, sets: &mut Sets, created: &mut bool) -> Result<(), SyncError> {
    match sets.new.take() {
        Some(n) => sets.new = Some(sync_revision(ctx, d, n, &sets.old).await?),
        None => {
            let olds: Vec<&ReplicaSet> = sets.old.iter().collect();
            let count = plan::new_rs_replicas(d, &olds, None);
            sets.new = Some(create_new(ctx, d, &sets.old, count).await?);
            *created = true;
        }
    }
    let new = sets.new.as_ref().expect("set above");
    let target = if replicas(new) > desired(d) { desired(d) } else { plan::new_rs_replicas(d, &sets.all(), Some(new)) };
    if target != replicas(new) {
        let s = plan::Scale { name: new.name_any(), replicas: target };
        return apply(ctx, d, sets, &[s]).await;
    }
    let downs = plan::scale_down_old(d, &sets.all(), &sets.active_old(), sets.new.as_ref());
    if !downs.is_empty() {
        return apply(ctx, d, sets, &downs).await;
    }
    let s = status::calculate(d, &sets.all(), sets.new.as_ref(), crate::model::time::now_secs());
    if status::complete(d, &s) {
        cleanup(ctx, d, sets).await?;
    }
    Ok(())
}

async fn recreate(ctx: &Context, d: &Deployment, sets: &mut Sets, created: &mut bool) -> Result<(), SyncError> {
    if let Some(n) = sets.new.take() {
        sets.new = Some(sync_revision(ctx, d, n, &sets.old).await?);
    }
    let downs: Vec<plan::Scale> =
        sets.active_old().iter().map(|r| plan::Scale { name: r.name_any(), replicas: 0 }).collect();
    if !downs.is_empty() {
        return apply(ctx, d, sets, &downs).await;
    }
    if old_pods_running(ctx, d, sets) {
        return Ok(());
    }
    match &sets.new {
        None => {
            sets.new = Some(create_new(ctx, d, &sets.old, desired(d)).await?);
            *created = true;
        }
        Some(n) if replicas(n) != desired(d) => {
            let s = plan::Scale { name: n.name_any(), replicas: desired(d) };
            return apply(ctx, d, sets, &[s]).await;
        }
        Some(_) => {}
    }
    let s = status::calculate(d, &sets.all(), sets.new.as_ref(), crate::model::time::now_secs());
    if status::complete(d, &s) {
        cleanup(ctx, d, sets).await?;
    }
    Ok(())
}

/// kube's oldPodsRunning: a pod of an old ReplicaSet that has not finished (terminating
/// ones included) keeps a Recreate rollout waiting.
fn old_pods_running(ctx: &Context, d: &Deployment, sets: &Sets) -> bool {
    let ns = d.namespace().unwrap_or_default();
    let old: Vec<String> = sets.old.iter().filter_map(|r| r.uid()).collect();
    ctx.pods.state().iter().filter(|p| p.namespace().as_deref() == Some(ns.as_str())).any(|p| {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        pods::controller_of(&p.metadata).is_some_and(|o| old.contains(&o.uid))
            && phase != Some("Succeeded")
            && phase != Some("Failed")
    })
}

/// The revision a new ReplicaSet gets: one past every old one's.
fn next_revision(old: &[ReplicaSet]) -> i64 {
    old.iter().map(revisions::revision).max().unwrap_or(0) + 1
}

/// Creates the ReplicaSet for the Deployment's template with `count` replicas.
async fn create_new(ctx: &Context, d: &Deployment, old: &[ReplicaSet], count: i32) -> Result<ReplicaSet, SyncError> {
    let spec = d.spec.as_ref().ok_or_else(|| SyncError::NoSpec(claim::key_of(d)))?;
    let collisions = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = revisions::template_hash(&spec.template, collisions);
    let revision = next_revision(old);
    let rs = revisions::new_replica_set(d, &hash, count, revision, plan::fenceposts(d).0)
        .ok_or_else(|| SyncError::NoSpec(claim::key_of(d)))?;
    let ns = d.namespace().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    match api.create(&PostParams::default(), &rs).await {
        Ok(made) => {
            if count > 0 {
                let msg = format!("Scaled up replica set {} from 0 to {count}", made.name_any());
                ctx.events.record(reference_to(d), Type::Normal, "ScalingReplicaSet", msg).await;
            }
            set_deployment_revision(ctx, d, revision).await?;
            Ok(made)
        }
        Err(kube::Error::Api(r)) if r.code == 409 => {
            // kube's hash collision: the name is taken by a ReplicaSet of another template
            // (or of another owner). Count it in the status; the next hash differs.
            let name = rs.name_any();
            if let Ok(Some(existing)) = api.get_opt(&name).await
                && pods::controller_of(&existing.metadata).is_some_and(|o| Some(&o.uid) == d.uid().as_ref())
                && existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| revisions::same_template(t, &spec.template))
            {
                return Ok(existing);
            }
            let mut s = d.status.clone().unwrap_or_default();
            s.collision_count = Some(collisions.unwrap_or(0).saturating_add(1));
            write_status(ctx, d, s).await?;
            Err(SyncError::Collision(claim::key_of(d)))
        }
        Err(e) => {
            let msg = format!("Failed to create new replica set {:?}: {}", rs.name_any(), claim::message(&e));
            ctx.events.record(reference_to(d), Type::Warning, "FailedCreate", msg).await;
            Err(claim::failed("creating a ReplicaSet for Deployment", claim::key_of(d))(e).into())
        }
    }
}

/// The existing new ReplicaSet brought up to date: its revision one past the old ones'
/// (a rollback makes an old template new again; its earlier numbers are kept in
/// revision-history), the Deployment's annotations, minReadySeconds.
async fn sync_revision(
    ctx: &Context,
    d: &Deployment,
    rs: ReplicaSet,
    old: &[ReplicaSet],
) -> Result<ReplicaSet, SyncError> {
    let have = revisions::revision(&rs);
    let revision = next_revision(old).max(have);
    let mut annotations = revisions::annotations(d, rs.annotations(), revision, plan::fenceposts(d).0);
    // Replicas annotations are the scaler's to write (they tell a scaling event apart).
    for k in [revisions::DESIRED_REPLICAS, revisions::MAX_REPLICAS] {
        match rs.annotations().get(k) {
            Some(v) => annotations.insert(k.into(), v.clone()),
            None => annotations.remove(k),
        };
    }
    if have != 0 && have != revision {
        let mut history: Vec<String> = rs
            .annotations()
            .get(revisions::REVISION_HISTORY)
            .map(|h| h.split(',').map(String::from).collect())
            .unwrap_or_default();
        history.push(have.to_string());
        annotations.insert(revisions::REVISION_HISTORY.into(), history.join(","));
    }
    let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
    let rs_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
    let mut out = rs;
    if &annotations != out.annotations() || min_ready != rs_min_ready {
        let patch = json!({
            "metadata": {"resourceVersion": out.resource_version(), "annotations": annotations},
            "spec": {"minReadySeconds": min_ready},
        });
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &out.namespace().unwrap_or_default());
        out = api
            .patch(&out.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(claim::failed("updating the revision of ReplicaSet", claim::key_of(&out)))?;
    }
    set_deployment_revision(ctx, d, revision).await?;
    Ok(out)
}

/// The Deployment's own `deployment.kubernetes.io/revision`, as `kubectl describe` shows it.
async fn set_deployment_revision(ctx: &Context, d: &Deployment, revision: i64) -> Result<(), SyncError> {
    if d.annotations().get(revisions::REVISION).map(String::as_str) == Some(revision.to_string().as_str()) {
        return Ok(());
    }
    let patch = json!({"metadata": {"annotations": {revisions::REVISION: revision.to_string()}}});
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
    match api.patch(&d.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(e) if claim::is_not_found(&e) => Ok(()),
        Err(e) => Err(claim::failed("annotating the revision of Deployment", claim::key_of(d))(e).into()),
    }
}

/// Writes each scaling (replicas, and the annotations of what they were made for) and
/// records kube's ScalingReplicaSet events.
async fn apply(ctx: &Context, d: &Deployment, sets: &mut Sets, scales: &[plan::Scale]) -> Result<(), SyncError> {
    let surge = plan::fenceposts(d).0;
    let want = desired(d);
    for s in scales {
        let Some(rs) = sets.old.iter_mut().chain(sets.new.iter_mut()).find(|r| r.name_any() == s.name) else {
            continue;
        };
        let from = replicas(rs);
        let patch = json!({
            "metadata": {"resourceVersion": rs.resource_version(), "annotations": {
                revisions::DESIRED_REPLICAS: want.to_string(), revisions::MAX_REPLICAS: (want + surge).to_string()}},
            "spec": {"replicas": s.replicas},
        });
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &rs.namespace().unwrap_or_default());
        let updated = api
            .patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(claim::failed("scaling ReplicaSet", claim::key_of(&*rs)))?;
        if from != s.replicas {
            let way = if s.replicas > from { "up" } else { "down" };
            let msg = format!("Scaled {way} replica set {} from {from} to {}", s.name, s.replicas);
            ctx.events.record(reference_to(d), Type::Normal, "ScalingReplicaSet", msg).await;
        }
        *rs = updated;
    }
    Ok(())
}

/// kube's cleanupDeployment: old ReplicaSets with no pods beyond revisionHistoryLimit go,
/// the oldest revisions first.
async fn cleanup(ctx: &Context, d: &Deployment, sets: &Sets) -> Result<(), SyncError> {
    let limit = d.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10).max(0) as usize;
    let mut idle: Vec<&ReplicaSet> = sets
        .old
        .iter()
        .filter(|r| replicas(r) == 0 && r.status.as_ref().map_or(0, |s| s.replicas) == 0)
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .collect();
    if idle.len() <= limit {
        return Ok(());
    }
    idle.sort_by_key(|r| revisions::revision(r));
    let extra = idle.len() - limit;
    for rs in idle.into_iter().take(extra) {
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &rs.namespace().unwrap_or_default());
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: rs.uid(), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&rs.name_any(), &params).await {
            Ok(_) => {}
            Err(e) if claim::is_stale(&e) => {}
            Err(e) => return Err(claim::failed("deleting old ReplicaSet", claim::key_of(rs))(e).into()),
        }
    }
    Ok(())
}

/// Writes the status if it changed (a merge patch; fields gone are written as removals).
async fn write_status(
    ctx: &Context,
    d: &Deployment,
    s: k8s_openapi::api::apps::v1::DeploymentStatus,
) -> Result<(), SyncError> {
    let old = serde_json::to_value(d.status.clone().unwrap_or_default()).unwrap_or_default();
    let new = serde_json::to_value(&s).unwrap_or_default();
    if old == new {
        return Ok(());
    }
    let mut out: BTreeMap<String, serde_json::Value> =
        new.as_object().cloned().unwrap_or_default().into_iter().collect();
    for k in old.as_object().into_iter().flatten().map(|(k, _)| k) {
        out.entry(k.clone()).or_insert(serde_json::Value::Null);
    }
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
    match api.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"status": out}))).await {
        Ok(_) => Ok(()),
        Err(e) if claim::is_not_found(&e) => Ok(()),
        Err(e) => Err(claim::failed("writing the status of Deployment", claim::key_of(d))(e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_replica_set_is_the_one_with_the_deployments_template() {
        let template =
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v2"}]}});
        let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template}}))
        .unwrap();
        let rs = |name: &str, image: &str, created: i64| -> ReplicaSet {
            serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": crate::model::time::format_rfc3339(created)},
                "spec": {"selector": {}, "template": {"metadata": {"labels": {"app": "web", revisions::HASH_LABEL: name}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}}))
            .unwrap()
        };
        let sets = split(&d, vec![rs("b", "v2", 20), rs("a", "v1", 10), rs("c", "v3", 30)]);
        assert_eq!(sets.new.unwrap().name_any(), "b");
        assert_eq!(sets.old.iter().map(|r| r.name_any()).collect::<Vec<_>>(), ["a", "c"]);
    }
}
