//! A Deployment's status from its ReplicaSets, and its Available, Progressing and
//! ReplicaFailure conditions, with kube's reasons and messages (what `kubectl rollout
//! status` and `kubectl describe deployment` read).

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::plan::{self, desired, replicas};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";

fn now_time(now: i64) -> Time {
    Time(chrono::DateTime::from_timestamp(now, 0).unwrap_or_default())
}

pub fn condition(kind: &str, status: &str, reason: &str, message: String, now: i64) -> DeploymentCondition {
    DeploymentCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now_time(now)),
        last_transition_time: Some(now_time(now)),
    }
}

pub fn get<'a>(status: &'a DeploymentStatus, kind: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

/// kube's SetDeploymentCondition: the same status and reason changes nothing; the same
/// status keeps its transition time.
pub fn set(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(old) = get(status, &c.type_) {
        if old.status == c.status && old.reason == c.reason {
            return;
        }
        if old.status == c.status {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    remove(status, &c.type_);
    status.conditions.get_or_insert_with(Vec::new).push(c);
}

pub fn remove(status: &mut DeploymentStatus, kind: &str) {
    if let Some(list) = status.conditions.as_mut() {
        list.retain(|c| c.type_ != kind);
        if list.is_empty() {
            status.conditions = None;
        }
    }
}

fn max_unavailable(d: &Deployment) -> i32 {
    if plan::is_recreate(d) || desired(d) == 0 {
        return 0;
    }
    plan::fenceposts(d).1.min(desired(d))
}

/// kube's calculateStatus: counts over every ReplicaSet, the Available condition, and
/// the conditions the Deployment had.
pub fn calculate(d: &Deployment, all: &[&ReplicaSet], new: Option<&ReplicaSet>, now: i64) -> DeploymentStatus {
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(|r| f(r)).sum::<i32>();
    let actual = |r: &ReplicaSet| r.status.as_ref().map_or(0, |s| s.replicas);
    let available = sum(&plan::available);
    let total = sum(&replicas);
    let old = d.status.clone().unwrap_or_default();
    let nonzero = |n: i32| (n != 0).then_some(n);
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: nonzero(sum(&actual)),
        updated_replicas: nonzero(new.map_or(0, actual)),
        ready_replicas: nonzero(sum(&|r| r.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0))),
        available_replicas: nonzero(available),
        unavailable_replicas: nonzero((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
    };
    if available >= desired(d) - max_unavailable(d) {
        set(
            &mut status,
            condition(
                AVAILABLE,
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set(
            &mut status,
            condition(
                AVAILABLE,
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    status
}

fn count(n: Option<i32>) -> i32 {
    n.unwrap_or(0)
}

/// kube's DeploymentComplete.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = desired(d);
    count(s.updated_replicas) == want
        && count(s.replicas) == want
        && count(s.available_replicas) == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

fn progressed(d: &Deployment, s: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = count(old.replicas) - count(old.updated_replicas);
    let new_old = count(s.replicas) - count(s.updated_replicas);
    count(s.updated_replicas) > count(old.updated_replicas)
        || new_old < old_old
        || count(s.ready_replicas) > count(old.ready_replicas)
        || count(s.available_replicas) > count(old.available_replicas)
}

pub fn deadline(d: &Deployment) -> Option<i64> {
    d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).filter(|s| *s != i32::MAX).map(i64::from)
}

/// When the rollout times out, if it is progressing: its Progressing condition's last
/// update plus the deadline.
pub fn times_out_at(d: &Deployment, s: &DeploymentStatus) -> Option<i64> {
    let c = get(s, PROGRESSING)?;
    if c.reason.as_deref() == Some(NEW_RS_AVAILABLE) || c.reason.as_deref() == Some(TIMED_OUT) {
        return None;
    }
    Some(c.last_update_time.as_ref()?.0.timestamp() + deadline(d)?)
}

/// kube's syncRolloutStatus: the Progressing condition of a rollout and the ReplicaSets'
/// failures, on top of [`calculate`].
pub fn rollout(
    d: &Deployment,
    mut s: DeploymentStatus,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    now: i64,
) -> DeploymentStatus {
    let Some(_) = deadline(d) else {
        remove(&mut s, PROGRESSING);
        return failures(s, all, new);
    };
    let what = match new.and_then(|n| n.metadata.name.as_deref()) {
        Some(n) => format!("ReplicaSet {n:?}"),
        None => format!("Deployment {:?}", d.metadata.name.as_deref().unwrap_or_default()),
    };
    let current = d.status.as_ref().and_then(|st| get(st, PROGRESSING)).cloned();
    let was_complete = s.replicas == s.updated_replicas
        && current.as_ref().is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
    if !was_complete {
        if complete(d, &s) {
            set(
                &mut s,
                condition(PROGRESSING, "True", NEW_RS_AVAILABLE, format!("{what} has successfully progressed."), now),
            );
        } else if progressed(d, &s) {
            let mut c = condition(PROGRESSING, "True", RS_UPDATED, format!("{what} is progressing."), now);
            if let Some(cur) = &current {
                if cur.status == "True" {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                remove(&mut s, PROGRESSING);
            }
            s.conditions.get_or_insert_with(Vec::new).push(c);
        } else if times_out_at(d, &s).is_some_and(|at| at < now)
            || current.as_ref().is_some_and(|c| c.reason.as_deref() == Some(TIMED_OUT))
        {
            set(&mut s, condition(PROGRESSING, "False", TIMED_OUT, format!("{what} has timed out progressing."), now));
        }
    }
    failures(s, all, new)
}

/// The first ReplicaFailure of the new ReplicaSet, else of any, becomes the Deployment's.
fn failures(mut s: DeploymentStatus, all: &[&ReplicaSet], new: Option<&ReplicaSet>) -> DeploymentStatus {
    let failure =
        |r: &ReplicaSet| r.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == REPLICA_FAILURE).cloned();
    let found = new.and_then(failure).or_else(|| all.iter().find_map(|r| failure(r)));
    match found {
        Some(c) => set(
            &mut s,
            DeploymentCondition {
                type_: REPLICA_FAILURE.into(),
                status: c.status,
                reason: c.reason,
                message: c.message,
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time,
            },
        ),
        None => remove(&mut s, REPLICA_FAILURE),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(replicas: i32, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": replicas, "selector": {}, "template": {}, "progressDeadlineSeconds": 600,
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}},
            "status": status}))
        .unwrap()
    }

    fn rs(name: &str, replicas: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"replicas": replicas, "selector": {}},
            "status": {"replicas": replicas, "readyReplicas": available, "availableReplicas": available}}))
        .unwrap()
    }

    #[test]
    fn a_rollout_is_progressing_then_complete_with_kubes_reasons() {
        let dep = d(3, json!({"replicas": 3, "updatedReplicas": 0, "availableReplicas": 3}));
        let (old, new) = (rs("web-a", 2, 2), rs("web-b", 2, 1));
        let all = [&old, &new];
        let s = rollout(&dep, calculate(&dep, &all, Some(&new), 100), &all, Some(&new), 100);
        let p = get(&s, PROGRESSING).unwrap();
        assert_eq!(
            (p.reason.as_deref(), p.message.as_deref()),
            (Some(RS_UPDATED), Some("ReplicaSet \"web-b\" is progressing."))
        );
        assert_eq!(get(&s, AVAILABLE).unwrap().status, "True", "3 available of 3, one may be unavailable");
        assert_eq!((s.updated_replicas, s.unavailable_replicas), (Some(2), Some(1)));

        let mut dep = dep;
        dep.status = Some(s);
        let new = rs("web-b", 3, 3);
        let s = rollout(&dep, calculate(&dep, &[&new], Some(&new), 200), &[&new], Some(&new), 200);
        let p = get(&s, PROGRESSING).unwrap();
        assert_eq!(p.reason.as_deref(), Some(NEW_RS_AVAILABLE));
        assert_eq!(p.last_transition_time.as_ref().unwrap().0.timestamp(), 100, "still True since the rollout began");
        assert!(complete(&dep, &s));
    }

    #[test]
    fn no_progress_past_the_deadline_times_out() {
        let mut dep = d(3, json!({"replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}));
        let stuck = rs("web-b", 1, 0);
        let old = rs("web-a", 2, 2);
        let started =
            rollout(&dep, calculate(&dep, &[&old, &stuck], Some(&stuck), 100), &[&old, &stuck], Some(&stuck), 100);
        dep.status = Some(started);
        let later = 100 + 601;
        let s =
            rollout(&dep, calculate(&dep, &[&old, &stuck], Some(&stuck), later), &[&old, &stuck], Some(&stuck), later);
        let p = get(&s, PROGRESSING).unwrap();
        assert_eq!((p.status.as_str(), p.reason.as_deref()), ("False", Some(TIMED_OUT)));
        assert_eq!(p.message.as_deref(), Some("ReplicaSet \"web-b\" has timed out progressing."));
    }
}
