//! The disruption controller, as kube-controller-manager's: for every PodDisruptionBudget,
//! the pods its selector picks, how many are expected ([`budget`]: from the scale of their
//! Deployment, ReplicaSet or StatefulSet when the budget is a percentage or a
//! maxUnavailable), how many must be healthy, how many are, and so how many disruptions
//! the eviction API may allow (`registry::eviction` spends them). Evictions it has not seen
//! through yet stay in disruptedPods for two minutes at most.
//!
//! A kube-runtime controller over the budgets, triggered too by every change of a pod the
//! shared pod [`Informer`] sees (for the budgets that select it). Scales come from
//! ReplicaSet, Deployment and StatefulSet caches of its own. A budget it cannot compute is
//! written with no disruption allowed and a SyncFailed condition (kube's failSafe), so an
//! eviction never passes on numbers it could not check.

pub mod budget;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::claim::{self, ApiCallError};
use super::events::{Recorder, Type};
use super::informer::{self, Informer};
use super::pods::{self, CachedPod};
use super::retry::RetryLimiter;
use crate::model::labels;
use crate::server::registry::eviction::{condition, set_disruption_allowed};
use budget::Scale;

/// kube's component name in the events it records.
pub const NAME: &str = "controllermanager";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Api(#[from] ApiCallError),
    #[error("encoding the status of PodDisruptionBudget {0}: {1}")]
    Encode(String, serde_json::Error),
}

pub struct Context {
    client: kube::Client,
    pods: Store<CachedPod>,
    sets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    stateful_sets: Store<StatefulSet>,
    retries: RetryLimiter<String>,
    events: Recorder,
}

/// The controller, triggered by `pods`' changes; runs when the returned future is polled
/// (start the pod informer too).
pub fn controller(client: kube::Client, pods: &mut Informer<CachedPod>) -> impl Future<Output = ()> + Send + 'static {
    let controller = Controller::new(Api::<PodDisruptionBudget>::all(client.clone()), watcher::Config::default());
    let budgets = controller.store();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    pods.on_change(move |pod, _deleted| {
        for r in concerned(pod, &budgets) {
            // The receiver lives as long as the controller; a send after it is harmless.
            let _ = tx.send(r);
        }
    });
    let triggers = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let (sets, deployments, stateful_sets) =
        (Informer::<ReplicaSet>::default(), Informer::<Deployment>::default(), Informer::<StatefulSet>::default());
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pods.store(),
        sets: sets.store(),
        deployments: deployments.store(),
        stateful_sets: stateful_sets.store(),
        retries: RetryLimiter::default(),
        events: Recorder::new(client.clone(), NAME),
    });
    async move {
        tokio::spawn(sets.run(Api::all(client.clone())));
        tokio::spawn(deployments.run(Api::all(client.clone())));
        tokio::spawn(stateful_sets.run(Api::all(client)));
        controller
            .reconcile_on(triggers)
            .run(reconcile, error_policy, ctx)
            .for_each(|r| {
                if let Err(err) = r {
                    tracing::debug!(%err, "disruption sync");
                }
                futures_util::future::ready(())
            })
            .await
    }
}

/// Whether a budget's selector picks `labels`: policy/v1's reading, where an empty selector
/// picks every pod of the namespace and an absent one none.
fn selects(pdb: &PodDisruptionBudget, pod_labels: &BTreeMap<String, String>) -> bool {
    pdb.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|s| labels::selects(s, pod_labels))
}

/// The budgets of the pod's namespace that select it.
fn concerned(pod: &CachedPod, budgets: &Store<PodDisruptionBudget>) -> Vec<ObjectRef<PodDisruptionBudget>> {
    let ns = pod.namespace();
    let have = pod.metadata.labels.clone().unwrap_or_default();
    budgets
        .state()
        .iter()
        .filter(|b| b.namespace() == ns && selects(b, &have))
        .map(|b| ObjectRef::from_obj(&**b))
        .collect()
}

fn error_policy(pdb: Arc<PodDisruptionBudget>, err: &SyncError, ctx: Arc<Context>) -> Action {
    let key = claim::key_of(&*pdb);
    let wait = ctx.retries.failed(&key);
    tracing::info!(%err, poddisruptionbudget = %key, ?wait, "disruption sync failed; will retry");
    Action::requeue(wait)
}

fn reference_to(pdb: &PodDisruptionBudget) -> ObjectReference {
    ObjectReference {
        api_version: Some("policy/v1".into()),
        kind: Some("PodDisruptionBudget".into()),
        namespace: pdb.namespace(),
        name: Some(pdb.name_any()),
        uid: pdb.uid(),
        resource_version: pdb.resource_version(),
        field_path: None,
    }
}

/// The controller of `pod` the budget counts, and its scale: a Deployment for the pods of
/// its ReplicaSets, else the ReplicaSet or StatefulSet; None if none is known.
fn scale_of(ctx: &Context, pod: &CachedPod) -> Option<Scale> {
    let owner = pods::controller_of(&pod.metadata)?;
    let ns = pod.namespace().unwrap_or_default();
    let group = owner.api_version.split_once('/').map_or("", |(g, _)| g);
    match (owner.kind.as_str(), group) {
        ("ReplicaSet", "apps" | "extensions") => {
            let rs = ctx
                .sets
                .get(&ObjectRef::new(&owner.name).within(&ns))
                .filter(|rs| rs.uid() == Some(owner.uid.clone()))?;
            match pods::controller_of(&rs.metadata) {
                Some(d) if d.kind == "Deployment" => {
                    let dep = ctx
                        .deployments
                        .get(&ObjectRef::new(&d.name).within(&ns))
                        .filter(|dep| dep.uid() == Some(d.uid.clone()))?;
                    let replicas = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    Some(Scale { uid: d.uid.clone(), replicas })
                }
                _ => Some(Scale {
                    uid: owner.uid.clone(),
                    replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                }),
            }
        }
        ("StatefulSet", "apps") => {
            let ss = ctx
                .stateful_sets
                .get(&ObjectRef::new(&owner.name).within(&ns))
                .filter(|ss| ss.uid() == Some(owner.uid.clone()))?;
            Some(Scale { uid: owner.uid.clone(), replicas: ss.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) })
        }
        _ => None,
    }
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Context>) -> Result<Action, SyncError> {
    for ready in [
        informer::ready(&ctx.pods).await,
        informer::ready(&ctx.sets).await,
        informer::ready(&ctx.deployments).await,
        informer::ready(&ctx.stateful_sets).await,
    ] {
        if !ready {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    let key = claim::key_of(&*pdb);
    let ns = pdb.namespace();
    let all = ctx.pods.state();
    let selected: Vec<&CachedPod> = all
        .iter()
        .map(|p| &**p)
        .filter(|p| p.namespace() == ns && selects(&pdb, p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
        .collect();
    let spec = pdb.spec.clone().unwrap_or_default();
    let now = crate::model::time::now_secs();
    let expected = match budget::expected(&spec, &selected, |p| scale_of(&ctx, p)) {
        Ok(e) => e,
        Err(message) => {
            let why = format!("Failed to calculate the number of expected pods: {message}");
            ctx.events.record(reference_to(&pdb), Type::Warning, "CalculateExpectedPodCountFailed", why).await;
            write(&ctx, &pdb, fail_safe(&pdb, &message)).await?;
            ctx.retries.forget(&key);
            return Ok(Action::await_change());
        }
    };
    let status = pdb.status.clone().unwrap_or_default();
    let recorded: BTreeMap<String, i64> =
        status.disrupted_pods.iter().flatten().map(|(name, at)| (name.clone(), at.0.timestamp())).collect();
    let (disrupted, recheck) = budget::still_disrupted(&selected, &recorded, now);
    let current = budget::healthy(&selected, &disrupted, now);
    let allowed = budget::allowed(current, expected.desired_healthy, expected.expected);
    let generation = pdb.metadata.generation.unwrap_or(0);
    let up_to_date = status.current_healthy == current
        && status.desired_healthy == expected.desired_healthy
        && status.expected_pods == expected.expected
        && status.disruptions_allowed == allowed
        && recorded == disrupted
        && status.observed_generation == Some(generation)
        && conditions_up_to_date(&pdb);
    if !up_to_date {
        if !expected.unmanaged.is_empty() {
            let why = format!(
                "Pods selected by this PodDisruptionBudget (selector: {}) were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.",
                selector_text(&pdb)
            );
            ctx.events.record(reference_to(&pdb), Type::Warning, "UnmanagedPods", why).await;
        }
        let stamp = |secs: i64| json!(crate::model::time::format_rfc3339(secs));
        let mut new = json!({
            "currentHealthy": current, "desiredHealthy": expected.desired_healthy,
            "expectedPods": expected.expected, "disruptionsAllowed": allowed,
            "observedGeneration": generation,
            "conditions": serde_json::to_value(&status.conditions).unwrap_or(Value::Null),
        });
        if !disrupted.is_empty() {
            new["disruptedPods"] = disrupted.iter().map(|(name, at)| (name.clone(), stamp(*at))).collect();
        }
        set_disruption_allowed(&mut new, &crate::model::time::now_rfc3339());
        write(&ctx, &pdb, new).await?;
    }
    ctx.retries.forget(&key);
    // An eviction not followed by its pod's deletion stops counting after the timeout.
    Ok(match recheck {
        Some(at) => Action::requeue(Duration::from_secs(at.saturating_sub(now).max(0) as u64 + 1)),
        None => Action::await_change(),
    })
}

/// kube's ConditionsAreUpToDate: the DisruptionAllowed condition agrees with the status.
fn conditions_up_to_date(pdb: &PodDisruptionBudget) -> bool {
    let Some(status) = &pdb.status else { return false };
    let Some(c) = status.conditions.iter().flatten().find(|c| c.type_ == "DisruptionAllowed") else { return false };
    if status.observed_generation != pdb.metadata.generation {
        return false;
    }
    if status.disruptions_allowed > 0 {
        c.status == "True" && c.reason == "SufficientPods"
    } else {
        c.status == "False" && c.reason == "InsufficientPods"
    }
}

/// The selector as Go's `%v` of a *LabelSelector shows it, roughly: for the event.
fn selector_text(pdb: &PodDisruptionBudget) -> String {
    pdb.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .and_then(|s| serde_json::to_string(s).ok())
        .unwrap_or_else(|| "nil".into())
}

/// kube's failSafe: the status as it was, but no disruption allowed and a SyncFailed
/// condition saying why.
fn fail_safe(pdb: &PodDisruptionBudget, why: &str) -> Value {
    let mut status = serde_json::to_value(pdb.status.clone().unwrap_or_default()).unwrap_or_else(|_| json!({}));
    status["disruptionsAllowed"] = json!(0);
    condition(&mut status, "False", "SyncFailed", why, &crate::model::time::now_rfc3339());
    status
}

/// Replaces the budget's status with `status`, guarded by the resourceVersion read: a
/// budget written meanwhile (by an eviction) fails the write and is synced again.
async fn write(ctx: &Context, pdb: &PodDisruptionBudget, status: Value) -> Result<(), SyncError> {
    let key = claim::key_of(pdb);
    let mut obj = serde_json::to_value(pdb).map_err(|e| SyncError::Encode(key.clone(), e))?;
    obj["status"] = status;
    let body = serde_json::to_vec(&obj).map_err(|e| SyncError::Encode(key.clone(), e))?;
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &pdb.namespace().unwrap_or_default());
    match api.replace_status(&pdb.name_any(), &PostParams::default(), body).await {
        Ok(_) => Ok(()),
        Err(e) if claim::is_not_found(&e) => Ok(()),
        Err(e) => Err(claim::failed("writing the status of PodDisruptionBudget", key)(e).into()),
    }
}
