//! Evicting a pod (`pods/eviction`), as kube-apiserver's eviction storage does: a pod that
//! has already disrupted its application (terminal, pending, being deleted) is deleted
//! without looking at budgets; otherwise the one PodDisruptionBudget that selects it must
//! allow a disruption, which is taken from its status (disruptionsAllowed less one, the pod
//! named in disruptedPods) in one write guarded by the budget's resourceVersion, before the
//! pod is marked DisruptionTarget and deleted with the caller's DeleteOptions. The
//! disruption controller (`controllers::disruption`) computes the budgets' status.

use std::time::Duration;

use serde_json::{Value, json};

use super::error::RegistryError;
use super::objects::{self, DeleteOptions, Guard, Store, blocking, decode, encode_limited};
use super::resources::{self, Resource};
use crate::server::store::StoreError;

/// More pods than this in a budget's disruptedPods: evictions the disruption controller has
/// not seen yet pile up, and the budget refuses more (kube's MaxDisruptedPodSize).
pub const MAX_DISRUPTED_PODS: usize = 2000;

/// How often, and how far apart, a write that lost to another is tried again (kube's
/// EvictionsRetry: 20 steps of 500 ms).
const RETRIES: usize = 20;
const RETRY_WAIT: Duration = Duration::from_millis(500);

/// What an eviction did, when it was not refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Evicted {
    /// The pod was deleted (or marked for deletion).
    Deleted,
    /// Several budgets select the pod: kube answers this with a Failure Status (500)
    /// rather than an error, and so does the HTTP layer.
    MoreThanOneBudget,
}

pub const MORE_THAN_ONE_BUDGET: &str =
    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.";

/// The 429 an eviction gets when the budget does not allow it.
const VIOLATES: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// The cause type of a refusal by a budget (policy/v1's DisruptionBudgetCause).
const CAUSE: &str = "DisruptionBudget";

fn still_processing(budget: &str) -> RegistryError {
    RegistryError::TooManyRequests {
        message: VIOLATES.into(),
        causes: vec![(CAUSE.into(), format!("The disruption budget {budget} is still being processed by the server."))],
        retry_after: 10,
    }
}

/// Evicts pod `name` of `namespace`. `guard` is the caller's authorization on the stored
/// pod (a node may evict only its own pods).
pub async fn evict(
    store: Store,
    pods: &'static Resource,
    namespace: String,
    name: String,
    opts: DeleteOptions,
    guard: Option<Guard>,
) -> Result<Evicted, RegistryError> {
    let budgets = resources::find("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| RegistryError::internal("poddisruptionbudgets are not served"))?;
    // A caller's resourceVersion precondition is theirs to retry; without one, a pod that
    // changed while it was being deleted is read again.
    let retry_conflicts = opts.precondition_rv.is_none();
    let mut attempt = 0;
    let pod = loop {
        attempt += 1;
        let pod = get(&store, pods, &namespace, &name).await?;
        if let Some(g) = &guard {
            g(Some(&pod), None)?;
        }
        if !can_ignore_budget(&pod) {
            break pod;
        }
        let mut once = opts.clone();
        // A pod that could still become ready must not become so unnoticed.
        if enforces_version(&pod) && once.precondition_rv.is_none() {
            once.precondition_rv = version(&pod);
        }
        match mark_and_delete(&store, pods, &namespace, &name, once, guard.clone()).await {
            Ok(()) => return Ok(Evicted::Deleted),
            Err(RegistryError::Conflict { .. }) if retry_conflicts && attempt < RETRIES => {
                tokio::time::sleep(RETRY_WAIT).await;
            }
            Err(e) => return Err(e),
        }
    };

    let selecting = {
        let (store, prefix, labels) =
            (store.clone(), budgets.key(Some(&namespace), None), pod["metadata"]["labels"].clone());
        blocking(move || {
            let list =
                store.list(&prefix, None, 0, None).map_err(|e| RegistryError::from_store(e, budgets.plural, ""))?;
            let mut found = Vec::new();
            for kv in &list.items {
                let budget = decode(kv)?;
                if selects_pod(&budget["spec"]["selector"], &labels) {
                    found.push(budget);
                }
            }
            Ok::<_, RegistryError>(found)
        })
        .await?
    };
    if selecting.len() > 1 {
        return Ok(Evicted::MoreThanOneBudget);
    }
    let mut unguarded_unready = false;
    let mut budget_name = String::new();
    if let Some(budget) = selecting.into_iter().next() {
        budget_name = budget["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if !is_ready(&pod) {
            let status = &budget["status"];
            let always = budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
            let desired = status["desiredHealthy"].as_i64().unwrap_or(0);
            // An unready pod does not count as healthy: deleting it costs the application
            // nothing while the budget is met (IfHealthyBudget), or ever (AlwaysAllow).
            unguarded_unready = always || (status["currentHealthy"].as_i64().unwrap_or(0) >= desired && desired > 0);
        }
        if !unguarded_unready {
            take_disruption(&store, budgets, &namespace, &budget_name, &name, opts.dry_run).await?;
        }
    }
    let mut delete_opts = opts.clone();
    if unguarded_unready {
        // The pod must still be the unready one that was judged.
        delete_opts.precondition_rv = version(&pod);
    }
    match mark_and_delete(&store, pods, &namespace, &name, delete_opts, guard).await {
        Ok(()) => Ok(Evicted::Deleted),
        Err(RegistryError::Conflict { .. }) if unguarded_unready && opts.precondition_rv.is_none() => {
            Err(still_processing(&budget_name))
        }
        Err(e) => Err(e),
    }
}

async fn get(store: &Store, pods: &'static Resource, namespace: &str, name: &str) -> Result<Value, RegistryError> {
    let (store, key, n) = (store.clone(), pods.key(Some(namespace), Some(name)), name.to_string());
    blocking(move || {
        let kv = store
            .get(&key)
            .map_err(|e| RegistryError::from_store(e, pods.plural, &n))?
            .ok_or_else(|| RegistryError::not_found(pods.plural, &n))?;
        decode(&kv)
    })
    .await
}

fn version(obj: &Value) -> Option<i64> {
    obj["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok())
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or_default()
}

/// A pod whose eviction disrupts nothing more: finished, not started, or already going.
fn can_ignore_budget(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed" | "Pending") || pod["metadata"]["deletionTimestamp"].is_string()
}

/// Whether the delete of a budget-free pod must be of the version read: any pod that
/// could still become ready.
fn enforces_version(pod: &Value) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && !pod["metadata"]["deletionTimestamp"].is_string()
}

/// The pod's Ready condition is True.
pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Whether a budget's selector picks a pod with `labels`, as the eviction storage reads it:
/// an invalid selector picks nothing, and so does an empty one.
pub fn selects_pod(selector: &Value, labels: &Value) -> bool {
    let empty = selector["matchLabels"].as_object().is_none_or(|m| m.is_empty())
        && selector["matchExpressions"].as_array().is_none_or(Vec::is_empty);
    !empty && crate::model::labels::selects_value(selector, labels)
}

/// The budget allows one disruption: it is taken (disruptionsAllowed less one, the pod in
/// disruptedPods) in a write of the version read; a lost race reads it again.
async fn take_disruption(
    store: &Store,
    budgets: &'static Resource,
    namespace: &str,
    budget: &str,
    pod: &str,
    dry_run: bool,
) -> Result<(), RegistryError> {
    let (store, key, budget, pod) =
        (store.clone(), budgets.key(Some(namespace), Some(budget)), budget.to_string(), pod.to_string());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (s, k, b, p) = (store.clone(), key.clone(), budget.clone(), pod.clone());
        let outcome = blocking(move || {
            let kv = s
                .get(&k)
                .map_err(|e| RegistryError::from_store(e, budgets.plural, &b))?
                .ok_or_else(|| RegistryError::not_found(budgets.plural, &b))?;
            let mut obj = decode(&kv)?;
            check_and_take(&mut obj, &b, &p, crate::model::time::now_rfc3339())?;
            if dry_run {
                return Ok(());
            }
            s.update(&k, &encode_limited(&obj)?, Some(kv.mod_revision))
                .map(|_| ())
                .map_err(|e| RegistryError::from_store(e, budgets.plural, &b))
        })
        .await;
        match outcome {
            Err(RegistryError::Conflict { .. }) if attempt < RETRIES => tokio::time::sleep(RETRY_WAIT).await,
            Err(RegistryError::Conflict { .. }) => {
                return Err(RegistryError::Timeout(format!(
                    "couldn't update PodDisruptionBudget {budget:?} due to conflicts"
                )));
            }
            other => return other,
        }
    }
}

/// kube's checkAndDecrement on a stored budget: refuses as kube does, or takes one
/// disruption for `pod` at `now`.
pub fn check_and_take(budget: &mut Value, name: &str, pod: &str, now: String) -> Result<(), RegistryError> {
    let status = &budget["status"];
    let generation = budget["metadata"]["generation"].as_i64().unwrap_or(0);
    if status["observedGeneration"].as_i64().unwrap_or(0) < generation {
        return Err(still_processing(name));
    }
    let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
    let forbidden = |why: &str| RegistryError::Forbidden {
        resource: "poddisruptionbudget".into(),
        name: name.into(),
        group: "policy".into(),
        message: format!("poddisruptionbudget.policy \"{name}\" is forbidden: {why}"),
    };
    if allowed < 0 {
        return Err(forbidden("pdb disruptions allowed is negative"));
    }
    if status["disruptedPods"].as_object().is_some_and(|m| m.len() > MAX_DISRUPTED_PODS) {
        return Err(forbidden("DisruptedPods map too big - too many evictions not confirmed by PDB controller"));
    }
    if allowed == 0 {
        let (desired, current) =
            (status["desiredHealthy"].as_i64().unwrap_or(0), status["currentHealthy"].as_i64().unwrap_or(0));
        return Err(RegistryError::TooManyRequests {
            message: VIOLATES.into(),
            causes: vec![(
                CAUSE.into(),
                format!("The disruption budget {name} needs {desired} healthy pods and has {current} currently"),
            )],
            retry_after: 0,
        });
    }
    let status = &mut budget["status"];
    status["disruptionsAllowed"] = json!(allowed - 1);
    if allowed == 1 {
        set_disruption_allowed(status, &now);
    }
    if !status["disruptedPods"].is_object() {
        status["disruptedPods"] = json!({});
    }
    status["disruptedPods"][pod] = json!(now);
    Ok(())
}

/// The DisruptionAllowed condition of a budget's status, from its disruptionsAllowed and
/// observedGeneration (kube's UpdateDisruptionAllowedCondition); its transition time
/// changes only when its status does.
pub fn set_disruption_allowed(status: &mut Value, now: &str) {
    let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0) > 0;
    let (state, reason) = if allowed { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
    condition(status, state, reason, "", now);
}

/// Sets the DisruptionAllowed condition to `state` for `reason` (meta/v1's SetStatusCondition).
pub fn condition(status: &mut Value, state: &str, reason: &str, message: &str, now: &str) {
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let new = |since: &str| {
        json!({"type": "DisruptionAllowed", "status": state, "observedGeneration": observed,
               "lastTransitionTime": since, "reason": reason, "message": message})
    };
    match conditions.iter_mut().find(|c| c["type"] == "DisruptionAllowed") {
        Some(c) => {
            let since = if c["status"] == state {
                c["lastTransitionTime"].as_str().unwrap_or(now).to_string()
            } else {
                now.to_string()
            };
            *c = new(&since);
        }
        None => conditions.push(new(now)),
    }
    status["conditions"] = json!(conditions);
}

/// Marks the pod DisruptionTarget (unless it is a dry run) and deletes it with `opts`, as
/// kube's addConditionAndDeletePod: the mark is a write of the pod read, checked against
/// the preconditions, and a resourceVersion precondition moves to the marked version.
async fn mark_and_delete(
    store: &Store,
    pods: &'static Resource,
    namespace: &str,
    name: &str,
    mut opts: DeleteOptions,
    guard: Option<Guard>,
) -> Result<(), RegistryError> {
    if !opts.dry_run {
        let (s, key, n) = (store.clone(), pods.key(Some(namespace), Some(name)), name.to_string());
        let (uid, rv) = (opts.precondition_uid.clone(), opts.precondition_rv);
        let marked = blocking(move || {
            for _ in 0..5 {
                let kv = s
                    .get(&key)
                    .map_err(|e| RegistryError::from_store(e, pods.plural, &n))?
                    .ok_or_else(|| RegistryError::not_found(pods.plural, &n))?;
                let mut pod = decode(&kv)?;
                if uid.as_ref().is_some_and(|u| pod["metadata"]["uid"].as_str() != Some(u.as_str()))
                    || rv.is_some_and(|rv| rv != kv.mod_revision)
                {
                    return Err(RegistryError::conflict(pods.plural, &n));
                }
                if !mark_disruption_target(&mut pod, &crate::model::time::now_rfc3339()) {
                    return Ok(kv.mod_revision);
                }
                match s.update(&key, &encode_limited(&pod)?, Some(kv.mod_revision)) {
                    Ok(rev) => return Ok(rev),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(RegistryError::from_store(e, pods.plural, &n)),
                }
            }
            Err(RegistryError::conflict(pods.plural, &n))
        })
        .await?;
        if opts.precondition_rv.is_some() {
            opts.precondition_rv = Some(marked);
        }
    }
    objects::delete(store.clone(), pods, Some(namespace.to_string()), name.to_string(), opts, guard).await.map(|_| ())
}

/// Sets the pod's DisruptionTarget condition to True for the Eviction API; false if it
/// already was so.
fn mark_disruption_target(pod: &mut Value, now: &str) -> bool {
    let mut conditions: Vec<Value> = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let reason = "EvictionByEvictionAPI";
    let message = "Eviction API: evicting";
    if let Some(c) = conditions.iter_mut().find(|c| c["type"] == "DisruptionTarget") {
        if c["status"] == "True" && c["reason"] == reason && c["message"] == message {
            return false;
        }
        if c["status"] != "True" {
            c["lastTransitionTime"] = json!(now);
        }
        c["status"] = json!("True");
        c["reason"] = json!(reason);
        c["message"] = json!(message);
    } else {
        conditions.push(json!({"type": "DisruptionTarget", "status": "True", "lastProbeTime": null,
                               "lastTransitionTime": now, "reason": reason, "message": message}));
    }
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    pod["status"]["conditions"] = json!(conditions);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(allowed: i64, generation: i64, observed: i64) -> Value {
        json!({"metadata": {"name": "b", "generation": generation},
               "status": {"disruptionsAllowed": allowed, "observedGeneration": observed,
                          "desiredHealthy": 3, "currentHealthy": 3, "expectedPods": 4}})
    }

    fn refusal(e: RegistryError) -> (String, Vec<(String, String)>, u64) {
        match e {
            RegistryError::TooManyRequests { message, causes, retry_after } => (message, causes, retry_after),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_budget_with_room_gives_one_disruption_and_names_the_pod() {
        let mut b = budget(1, 2, 2);
        check_and_take(&mut b, "b", "p", "2026-01-01T00:00:00Z".into()).unwrap();
        assert_eq!(b["status"]["disruptionsAllowed"], 0);
        assert_eq!(b["status"]["disruptedPods"], json!({"p": "2026-01-01T00:00:00Z"}));
        let c = &b["status"]["conditions"][0];
        assert_eq!(
            (c["type"].as_str(), c["status"].as_str(), c["reason"].as_str()),
            (Some("DisruptionAllowed"), Some("False"), Some("InsufficientPods"))
        );
    }

    #[test]
    fn a_spent_or_unprocessed_budget_refuses_with_kubes_429_and_cause() {
        let (message, causes, after) =
            refusal(check_and_take(&mut budget(0, 1, 1), "b", "p", String::new()).unwrap_err());
        assert_eq!(message, "Cannot evict pod as it would violate the pod's disruption budget.");
        assert_eq!(
            causes,
            [(
                "DisruptionBudget".to_string(),
                "The disruption budget b needs 3 healthy pods and has 3 currently".to_string()
            )]
        );
        assert_eq!(after, 0);
        let (_, causes, after) = refusal(check_and_take(&mut budget(2, 2, 1), "b", "p", String::new()).unwrap_err());
        assert_eq!(causes[0].1, "The disruption budget b is still being processed by the server.");
        assert_eq!(after, 10);
        assert!(matches!(
            check_and_take(&mut budget(-1, 1, 1), "b", "p", String::new()),
            Err(RegistryError::Forbidden { .. })
        ));
    }

    #[test]
    fn empty_and_invalid_selectors_pick_no_pod_for_an_eviction() {
        let labels = json!({"app": "a"});
        assert!(selects_pod(&json!({"matchLabels": {"app": "a"}}), &labels));
        assert!(!selects_pod(&json!({}), &labels));
        assert!(!selects_pod(&Value::Null, &labels));
        assert!(!selects_pod(&json!({"matchExpressions": [{"key": "app", "operator": "Sideways"}]}), &labels));
    }

    #[test]
    fn terminal_pending_and_terminating_pods_are_evicted_without_budgets() {
        for (pod, ignore, enforce) in [
            (json!({"status": {"phase": "Running"}}), false, true),
            (json!({"status": {"phase": "Pending"}}), true, true),
            (json!({"status": {"phase": "Succeeded"}}), true, false),
            (json!({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}}), true, false),
        ] {
            assert_eq!((can_ignore_budget(&pod), enforces_version(&pod)), (ignore, enforce), "{pod}");
        }
    }
}
