//! One step of a Deployment's rollout, decided from its ReplicaSets alone (pure, as kube's
//! deployment controller computes it in `rolling.go`, `recreate.go` and `sync.go`): how
//! many replicas the new ReplicaSet gets, which old ones shrink and by how much. Each step
//! is one scaling; the ReplicaSets' changed status triggers the next.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

pub fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

pub fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn is_recreate(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

/// `value` (a count or a percentage of `total`) as a count, rounding up or down.
fn scaled(value: Option<&IntOrString>, default_percent: i32, total: i32, round_up: bool) -> i32 {
    match value {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(default_percent as i64);
            let exact = pct * total as i64;
            (if round_up { (exact + 99).div_euclid(100) } else { exact.div_euclid(100) }) as i32
        }
        None => scaled(Some(&IntOrString::String(format!("{default_percent}%"))), default_percent, total, round_up),
    }
}

/// kube's ResolveFenceposts: (maxSurge rounded up, maxUnavailable rounded down), and never
/// both zero (then one may be unavailable).
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    if is_recreate(d) {
        return (0, 0);
    }
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let n = desired(d);
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), 25, n, true).max(0);
    let unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), 25, n, false).max(0);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

/// kube's NewRSNewReplicas: what the new ReplicaSet may grow to now.
pub fn new_rs_replicas(d: &Deployment, all: &[&ReplicaSet], new: Option<&ReplicaSet>) -> i32 {
    let want = desired(d);
    let current_new = new.map(replicas).unwrap_or(0);
    if is_recreate(d) {
        return want;
    }
    let (surge, _) = fenceposts(d);
    let current: i32 = all.iter().map(|r| replicas(r)).sum();
    let max_total = want + surge;
    if current >= max_total {
        return current_new;
    }
    let up = (max_total - current).min(want - current_new).max(0);
    current_new + up
}

/// A change of one ReplicaSet's replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    pub name: String,
    pub replicas: i32,
}

fn name(rs: &ReplicaSet) -> String {
    rs.metadata.name.clone().unwrap_or_default()
}

/// kube's reconcileOldReplicaSets: old ReplicaSets (oldest first) scaled down as far as
/// availability allows: first their unavailable pods, then available ones down to
/// `replicas - maxUnavailable` available in all.
pub fn scale_down_old(
    d: &Deployment,
    all: &[&ReplicaSet],
    old: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
) -> Vec<Scale> {
    let old_pods: i32 = old.iter().map(|r| replicas(r)).sum();
    if old_pods == 0 {
        return Vec::new();
    }
    let all_pods: i32 = all.iter().map(|r| replicas(r)).sum();
    let (_, max_unavailable) = fenceposts(d);
    let min_available = desired(d) - max_unavailable;
    let new_unavailable = new.map_or(0, |n| replicas(n) - available(n));
    let mut budget = all_pods - min_available - new_unavailable;
    if budget <= 0 {
        return Vec::new();
    }
    let mut out: Vec<Scale> = Vec::new();
    let mut now: Vec<(String, i32, i32)> = old.iter().map(|r| (name(r), replicas(r), available(r))).collect();
    // Unhealthy replicas first: they serve nothing.
    for (n, reps, avail) in now.iter_mut() {
        if budget <= 0 {
            break;
        }
        let unhealthy = (*reps - *avail).max(0);
        if *reps == 0 || unhealthy == 0 {
            continue;
        }
        let down = budget.min(unhealthy);
        *reps -= down;
        budget -= down;
        out.push(Scale { name: n.clone(), replicas: *reps });
    }
    // Then available ones, keeping minAvailable.
    let available_all: i32 = all
        .iter()
        .map(|r| {
            let n = name(r);
            now.iter().find(|(m, ..)| *m == n).map_or(available(r), |(_, reps, avail)| (*avail).min(*reps))
        })
        .sum();
    if available_all > min_available {
        let mut to_go = available_all - min_available;
        for (n, reps, _) in now.iter_mut() {
            if to_go <= 0 {
                break;
            }
            if *reps == 0 {
                continue;
            }
            let down = (*reps).min(to_go);
            *reps -= down;
            to_go -= down;
            match out.iter_mut().find(|s| s.name == *n) {
                Some(s) => s.replicas = *reps,
                None => out.push(Scale { name: n.clone(), replicas: *reps }),
            }
        }
    }
    out
}

/// kube's scale() for a Deployment whose replicas changed (or that is paused): the only
/// active ReplicaSet takes them all; with several active, the difference is shared in
/// proportion to their sizes (largest first), within replicas + maxSurge.
pub fn proportional(d: &Deployment, active: &[&ReplicaSet], new: Option<&ReplicaSet>) -> Vec<Scale> {
    let want = desired(d);
    match active {
        [] => {
            return new
                .filter(|n| replicas(n) != want)
                .map(|n| Scale { name: name(n), replicas: want })
                .into_iter()
                .collect();
        }
        [only] => {
            return if replicas(only) == want { Vec::new() } else { vec![Scale { name: name(only), replicas: want }] };
        }
        _ => {}
    }
    if is_recreate(d) {
        return Vec::new();
    }
    let (surge, _) = fenceposts(d);
    let allowed = want + surge;
    let current: i32 = active.iter().map(|r| replicas(r)).sum();
    let to_add = allowed - current;
    if to_add == 0 || current == 0 {
        return Vec::new();
    }
    let mut sorted: Vec<&ReplicaSet> = active.to_vec();
    // Largest first; among equals the newer first (kube's ReplicaSetsBySizeNewer).
    sorted.sort_by(|a, b| {
        replicas(b).cmp(&replicas(a)).then_with(|| b.metadata.creation_timestamp.cmp(&a.metadata.creation_timestamp))
    });
    let mut out = Vec::new();
    let mut added = 0;
    for rs in &sorted {
        let share = if to_add > 0 {
            (replicas(rs) as i64 * to_add as i64 / current as i64) as i32
        } else {
            -((replicas(rs) as i64 * (-to_add) as i64 / current as i64) as i32)
        };
        let share = if to_add > 0 { share.min(to_add - added) } else { share.max(to_add - added) };
        added += share;
        out.push(Scale { name: name(rs), replicas: replicas(rs) + share });
    }
    // What rounding left goes to the largest.
    if added != to_add
        && let Some(first) = out.first_mut()
    {
        first.replicas = (first.replicas + to_add - added).max(0);
    }
    out.retain(|s| sorted.iter().any(|r| name(r) == s.name && replicas(r) != s.replicas));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i32, surge: serde_json::Value, unavailable: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {"replicas": replicas, "selector": {},
            "template": {}, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}}))
        .unwrap()
    }

    fn rs(name: &str, replicas: i32, available: i32, created: i64) -> ReplicaSet {
        serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": crate::model::time::format_rfc3339(created)},
            "spec": {"replicas": replicas, "selector": {}}, "status": {"replicas": replicas, "availableReplicas": available}}))
        .unwrap()
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down_and_are_never_both_zero() {
        assert_eq!(fenceposts(&deployment(10, json!("25%"), json!("25%"))), (3, 2));
        assert_eq!(fenceposts(&deployment(6, json!(1), json!(0))), (1, 0));
        assert_eq!(fenceposts(&deployment(3, json!(0), json!("10%"))), (0, 1));
    }

    #[test]
    fn a_rolling_update_surges_then_scales_old_down_within_max_unavailable() {
        // 6 replicas, maxSurge 1, maxUnavailable 0: the new one grows by one at a time.
        let d = deployment(6, json!(1), json!(0));
        let old = rs("old", 6, 6, 1);
        assert_eq!(new_rs_replicas(&d, &[&old], None), 1);
        let new = rs("new", 1, 0, 2);
        assert_eq!(new_rs_replicas(&d, &[&old, &new], Some(&new)), 1, "7 pods already: no more surge");
        // Nothing old may go while the new pod is not available.
        assert_eq!(scale_down_old(&d, &[&old, &new], &[&old], Some(&new)), []);
        let new = rs("new", 1, 1, 2);
        assert_eq!(scale_down_old(&d, &[&old, &new], &[&old], Some(&new)), [Scale { name: "old".into(), replicas: 5 }]);
    }

    #[test]
    fn unavailable_old_pods_go_first_and_recreate_takes_all_at_once() {
        let d = deployment(4, json!(0), json!(1));
        let broken = rs("broken", 2, 0, 1);
        let good = rs("good", 2, 2, 2);
        let new = rs("new", 0, 0, 3);
        let plan = scale_down_old(&d, &[&broken, &good, &new], &[&broken, &good], Some(&new));
        // One may be unavailable: one of the broken pods goes, the good ones stay.
        assert_eq!(plan, [Scale { name: "broken".into(), replicas: 1 }]);
        let mut r: Deployment = d.clone();
        r.spec.as_mut().unwrap().strategy = serde_json::from_value(json!({"type": "Recreate"})).unwrap();
        assert_eq!(new_rs_replicas(&r, &[&good], None), 4);
    }

    #[test]
    fn scaling_mid_rollout_shares_the_difference_in_proportion() {
        let d = deployment(20, json!(0), json!(1));
        let a = rs("a", 6, 6, 1);
        let b = rs("b", 4, 4, 2);
        let plan = proportional(&d, &[&a, &b], Some(&b));
        assert_eq!(plan, [Scale { name: "a".into(), replicas: 12 }, Scale { name: "b".into(), replicas: 8 }]);
        let only = rs("a", 6, 6, 1);
        assert_eq!(proportional(&d, &[&only], None), [Scale { name: "a".into(), replicas: 20 }]);
    }
}
