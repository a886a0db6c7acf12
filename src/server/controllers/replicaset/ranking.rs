//! Which pods a ReplicaSet deletes first when it has too many, in kube's order
//! (ActivePodsWithRanks, with LogarithmicScaleDown as kube 1.32 has it on):
//! 1. not yet on a node before on a node;
//! 2. Pending before Unknown before Running;
//! 3. not ready before ready;
//! 4. a lower `controller.kubernetes.io/pod-deletion-cost` first;
//! 5. more of the same owner's pods on its node first (doubled-up pods go before lone ones);
//! 6. of two ready pods, the one ready for less time (in powers of two of nanoseconds), ties
//!    broken by uid;
//! 7. more container restarts first;
//! 8. the newer first (in powers of two again, ties by uid).

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::server::controllers::pods::{self, CachedPod};

const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// `pods` ordered so that the first ones are the first to delete; `related` are the pods
/// whose company on a node counts (the owner's own, active ones); `now` in seconds.
pub fn deletion_order<'a>(pods: &[&'a CachedPod], related: &[&CachedPod], now: i64) -> Vec<&'a CachedPod> {
    let mut on_node: HashMap<&str, i64> = HashMap::new();
    for p in related.iter().filter(|p| pods::is_active(p)) {
        if let Some(n) = node(p) {
            *on_node.entry(n).or_default() += 1;
        }
    }
    let rank = |p: &CachedPod| node(p).map_or(0, |n| on_node.get(n).copied().unwrap_or(0));
    let mut ranked: Vec<(&CachedPod, i64)> = pods.iter().map(|p| (*p, rank(p))).collect();
    ranked.sort_by(|a, b| first(a, b, now));
    ranked.into_iter().map(|(p, _)| p).collect()
}

fn node(p: &CachedPod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

fn phase_ordinal(p: &CachedPod) -> u8 {
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost(p: &CachedPod) -> i32 {
    p.metadata.annotations.as_ref().and_then(|a| a.get(DELETION_COST)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn uid(p: &CachedPod) -> &str {
    p.metadata.uid.as_deref().unwrap_or_default()
}

/// kube's logarithmicRankDiff: how the two ages compare in powers of two of nanoseconds.
fn log_rank(t: i64, now: i64) -> i64 {
    let age_ns = (now.saturating_sub(t) as f64) * 1e9;
    if age_ns > 0.0 { age_ns.log2() as i64 } else { -1 }
}

/// Newer first by logarithmic age; same bucket: by uid. A missing time counts as newest.
fn newer_first(a: (Option<i64>, &CachedPod), b: (Option<i64>, &CachedPod), now: i64) -> Ordering {
    match (a.0, b.0) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) if x == y => Ordering::Equal,
        (Some(x), Some(y)) => match log_rank(x, now).cmp(&log_rank(y, now)) {
            Ordering::Equal => uid(a.1).cmp(uid(b.1)),
            o => o,
        },
    }
}

fn first(a: &(&CachedPod, i64), b: &(&CachedPod, i64), now: i64) -> Ordering {
    let ((p, rank_p), (q, rank_q)) = (a, b);
    let created = |x: &CachedPod| x.metadata.creation_timestamp.as_ref().map(|t| t.0.timestamp());
    node(p)
        .is_some()
        .cmp(&node(q).is_some())
        .then_with(|| phase_ordinal(p).cmp(&phase_ordinal(q)))
        .then_with(|| pods::is_ready(p).cmp(&pods::is_ready(q)))
        .then_with(|| deletion_cost(p).cmp(&deletion_cost(q)))
        .then_with(|| rank_q.cmp(rank_p))
        .then_with(|| match (pods::ready_since(p), pods::ready_since(q)) {
            (Some(x), Some(y)) => newer_first((x, p), (y, q), now),
            _ => Ordering::Equal,
        })
        .then_with(|| pods::restarts(q).cmp(&pods::restarts(p)))
        .then_with(|| newer_first((created(p), p), (created(q), q), now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_000_000;

    fn pod(
        name: &str,
        node: &str,
        phase: &str,
        ready_at: Option<i64>,
        created: i64,
        extra: serde_json::Value,
    ) -> CachedPod {
        let mut p = json!({
            "metadata": {"name": name, "uid": name, "creationTimestamp": crate::model::time::format_rfc3339(created)},
            "spec": {"containers": [{"name": "c"}], "nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready_at.is_some() {"True"} else {"False"},
                "lastTransitionTime": crate::model::time::format_rfc3339(ready_at.unwrap_or(created))}]},
        });
        crate::server::registry::patch::merge_patch(&mut p, &extra);
        serde_json::from_value(p).unwrap()
    }

    fn order(pods: &[CachedPod]) -> Vec<String> {
        let refs: Vec<&CachedPod> = pods.iter().collect();
        deletion_order(&refs, &refs, NOW).iter().map(|p| p.metadata.name.clone().unwrap()).collect()
    }

    #[test]
    fn unscheduled_pending_and_unready_pods_go_before_running_ready_ones() {
        let pods = [
            pod("running-ready", "n1", "Running", Some(NOW - 100), NOW - 200, json!({})),
            pod("running-unready", "n2", "Running", None, NOW - 200, json!({})),
            pod("unknown", "n3", "Unknown", None, NOW - 200, json!({})),
            pod("pending", "n4", "Pending", None, NOW - 200, json!({})),
            pod("unscheduled", "", "Pending", None, NOW - 200, json!({})),
        ];
        assert_eq!(order(&pods), ["unscheduled", "pending", "unknown", "running-unready", "running-ready"]);
    }

    #[test]
    fn deletion_cost_then_doubled_up_then_time_ready_then_restarts_then_age_decide() {
        let cheap = json!({"metadata": {"annotations": {DELETION_COST: "-5"}}});
        let pods = [
            pod("alone-old", "n1", "Running", Some(NOW - 10_000), NOW - 20_000, json!({})),
            pod("paired-a", "n2", "Running", Some(NOW - 10_000), NOW - 20_000, json!({})),
            pod("paired-b-newly-ready", "n2", "Running", Some(NOW - 10), NOW - 20_000, json!({})),
            pod("cheap", "n3", "Running", Some(NOW - 10_000), NOW - 20_000, cheap),
        ];
        assert_eq!(order(&pods), ["cheap", "paired-b-newly-ready", "paired-a", "alone-old"]);
        let restarted = json!({"status": {"containerStatuses": [{"name": "c", "restartCount": 3, "image": "i", "imageID": "", "ready": true}]}});
        let pods = [
            pod("old", "n1", "Running", None, NOW - 100_000, json!({})),
            pod("restarted", "n2", "Running", None, NOW - 200_000, restarted),
            pod("new", "n3", "Running", None, NOW - 10, json!({})),
        ];
        assert_eq!(order(&pods), ["restarted", "new", "old"]);
    }
}
