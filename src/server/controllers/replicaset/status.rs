//! A ReplicaSet's status from the pods it owns, as kube's calculateStatus counts them, and
//! the merge patch that writes it (zeros and a cleared condition written as removals, so
//! that the stored status is exactly the computed one).

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value, json};

use crate::model::labels;
use crate::server::controllers::pods::{self, CachedPod};

pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Why managing the replicas failed, for the ReplicaFailure condition.
pub struct Failure {
    /// FailedCreate or FailedDelete.
    pub reason: &'static str,
    pub message: String,
}

/// The status `rs` should have with `owned` (its active pods, as claimed before this
/// sync's creates and deletes, as kube counts them) at `now` (seconds).
pub fn calculate(rs: &ReplicaSet, owned: &[&CachedPod], failure: Option<&Failure>, now: i64) -> ReplicaSetStatus {
    let spec = rs.spec.as_ref();
    let template_labels = spec.and_then(|s| s.template.as_ref()?.metadata.as_ref()?.labels.clone()).unwrap_or_default();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0) as i64;
    let count = |f: &dyn Fn(&CachedPod) -> bool| owned.iter().filter(|p| f(p)).count() as i32;
    let fully_labeled = count(&|p| {
        let have = p.metadata.labels.clone().unwrap_or_default();
        labels::has_all(&template_labels, &have)
    });
    let ready = count(&|p| pods::is_ready(p));
    let available = count(&|p| pods::is_available(p, min_ready, now));
    let old = rs.status.clone().unwrap_or_default();
    let mut conditions: Vec<ReplicaSetCondition> = old.conditions.clone().unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c.type_ == REPLICA_FAILURE);
    match failure {
        Some(f) if !has_failure => conditions.push(ReplicaSetCondition {
            type_: REPLICA_FAILURE.into(),
            status: "True".into(),
            reason: Some(f.reason.into()),
            message: Some(f.message.clone()),
            last_transition_time: Some(Time(crate::model::time::now())),
        }),
        None if has_failure => conditions.retain(|c| c.type_ != REPLICA_FAILURE),
        _ => {}
    }
    let nonzero = |n: i32| (n != 0).then_some(n);
    ReplicaSetStatus {
        replicas: owned.len() as i32,
        fully_labeled_replicas: nonzero(fully_labeled),
        ready_replicas: nonzero(ready),
        available_replicas: nonzero(available),
        observed_generation: rs.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
    }
}

/// The merge patch from `old` to `new`, or None when they are equal.
pub fn patch(old: Option<&ReplicaSetStatus>, new: &ReplicaSetStatus) -> Option<Value> {
    let old = serde_json::to_value(old.cloned().unwrap_or_default()).unwrap_or_default();
    let new_v = serde_json::to_value(new).unwrap_or_default();
    if old == new_v {
        return None;
    }
    let mut out: Map<String, Value> = new_v.as_object().cloned().unwrap_or_default();
    for k in old.as_object().into_iter().flatten().map(|(k, _)| k) {
        out.entry(k.clone()).or_insert(Value::Null);
    }
    Some(json!({ "status": out }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(min_ready: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 3},
            "spec": {"replicas": 3, "minReadySeconds": min_ready, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web", "tier": "front"}}, "spec": {"containers": []}}},
            "status": {"replicas": 1, "readyReplicas": 1},
        }))
        .unwrap()
    }

    fn pod(labels: Value, ready_since: Option<i64>) -> CachedPod {
        let cond = match ready_since {
            Some(t) => {
                json!([{"type": "Ready", "status": "True", "lastTransitionTime": crate::model::time::format_rfc3339(t)}])
            }
            None => json!([{"type": "Ready", "status": "False"}]),
        };
        serde_json::from_value(json!({"metadata": {"labels": labels}, "status": {"conditions": cond}})).unwrap()
    }

    #[test]
    fn counts_labeled_ready_and_available_pods_and_patches_only_changes() {
        let full = json!({"app": "web", "tier": "front"});
        let pods = [pod(full.clone(), Some(100)), pod(full.clone(), Some(195)), pod(json!({"app": "web"}), None)];
        let refs: Vec<&CachedPod> = pods.iter().collect();
        let rs = rs(10);
        let s = calculate(&rs, &refs, None, 200);
        assert_eq!(
            (s.replicas, s.fully_labeled_replicas, s.ready_replicas, s.available_replicas, s.observed_generation),
            (3, Some(2), Some(2), Some(1), Some(3))
        );
        let p = patch(rs.status.as_ref(), &s).unwrap();
        assert_eq!(p["status"]["availableReplicas"], 1);
        assert_eq!(patch(Some(&s), &s), None);
        let none = calculate(&rs, &[], None, 200);
        let p = patch(Some(&s), &none).unwrap();
        assert_eq!(p["status"]["readyReplicas"], Value::Null, "{p}");
        assert_eq!(p["status"]["replicas"], 0, "{p}");
    }

    #[test]
    fn a_failure_sets_replica_failure_once_and_success_clears_it() {
        let mut rs = rs(0);
        let f = Failure { reason: "FailedCreate", message: "pods \"web-\" is forbidden: quota".into() };
        let s = calculate(&rs, &[], Some(&f), 0);
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!((c.type_.as_str(), c.reason.as_deref()), (REPLICA_FAILURE, Some("FailedCreate")));
        rs.status = Some(s);
        assert_eq!(calculate(&rs, &[], Some(&f), 0).conditions.unwrap().len(), 1);
        assert_eq!(calculate(&rs, &[], None, 0).conditions, None);
    }
}
