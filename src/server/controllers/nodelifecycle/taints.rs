//! The taints a node's state puts on it (kube's TaintNodesByCondition and taint-based
//! eviction), and when a pod must leave a node because of NoExecute taints (kube's
//! NoExecute taint manager).

use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::server::controllers::pods::CachedPod;
use crate::server::scheduler::matching::tolerates;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const OURS: [&str; 3] = [UNREACHABLE, NOT_READY, UNSCHEDULABLE];

/// The node's taints as its state wants them: the user's kept as they are; not-ready or
/// unreachable NoSchedule by its Ready condition (False or Unknown), and NoExecute too when
/// `evict` (not during a full disruption); unschedulable NoSchedule when cordoned. Taints
/// that stay keep their timeAdded. None when nothing changes.
pub fn desired(node: &Node, ready: Option<&str>, evict: bool, now: &Time) -> Option<Vec<Taint>> {
    let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let mut want: Vec<(&str, &str)> = Vec::new();
    let by_ready = match ready {
        Some("False") => Some(NOT_READY),
        Some("Unknown") => Some(UNREACHABLE),
        _ => None,
    };
    if let Some(key) = by_ready {
        want.push((key, "NoSchedule"));
        if evict {
            want.push((key, "NoExecute"));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        want.push((UNSCHEDULABLE, "NoSchedule"));
    }
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !OURS.contains(&t.key.as_str()) || want.contains(&(t.key.as_str(), t.effect.as_str())))
        .cloned()
        .collect();
    for (key, effect) in want {
        if !out.iter().any(|t| t.key == key && t.effect == effect) {
            out.push(Taint {
                key: key.into(),
                effect: effect.into(),
                value: None,
                time_added: (effect == "NoExecute").then(|| now.clone()),
            });
        }
    }
    (out != current).then_some(out)
}

/// When a pod bound to a node with `taints` has to go.
#[derive(Debug, PartialEq, Eq)]
pub enum Eviction {
    Now,
    /// At this time (seconds since the epoch): its tolerations' shortest tolerationSeconds
    /// after the taint was added.
    At(i64),
    Never,
}

/// kube's rule: every NoExecute taint must be tolerated, else now; then the shortest
/// tolerationSeconds of the matching tolerations (those without seconds tolerate for
/// ever; 0 or less means now), counted from when the earliest of the taints was added.
pub fn eviction(pod: &CachedPod, taints: &[Taint], now: i64) -> Eviction {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
    let mut shortest: Option<i64> = None;
    let mut since: Option<i64> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let mut matching = tolerations.iter().filter(|t| tolerates(t, taint)).peekable();
        if matching.peek().is_none() {
            return Eviction::Now;
        }
        for secs in matching.filter_map(|t| t.toleration_seconds) {
            shortest = Some(shortest.map_or(secs, |s| s.min(secs)));
        }
        let added = taint.time_added.as_ref().map_or(now, |t| t.0.timestamp());
        since = Some(since.map_or(added, |s| s.min(added)));
    }
    match (shortest, since) {
        (Some(secs), Some(since)) if since.saturating_add(secs.max(0)) <= now => Eviction::Now,
        (Some(secs), Some(since)) => Eviction::At(since.saturating_add(secs)),
        _ => Eviction::Never,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(spec: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "a"}, "spec": spec})).unwrap()
    }

    fn now() -> Time {
        Time(crate::model::time::now())
    }

    #[test]
    fn the_ready_condition_and_a_cordon_taint_the_node_and_the_users_taints_stay() {
        let n = node(json!({"taints": [{"key": "gpu", "effect": "NoSchedule"}]}));
        assert!(desired(&n, Some("True"), true, &now()).is_none());
        let t = desired(&n, Some("Unknown"), true, &now()).unwrap();
        let keys: Vec<(&str, &str)> = t.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect();
        assert_eq!(keys, [("gpu", "NoSchedule"), (UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]);
        assert!(t[2].time_added.is_some() && t[1].time_added.is_none());
        // In a full disruption nothing is evicted: NoSchedule only.
        let t = desired(&n, Some("False"), false, &now()).unwrap();
        assert_eq!(t.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(), ["gpu", NOT_READY]);
        // Back: ours go, the user's stay; a cordon adds its own.
        let mut tainted = n.clone();
        tainted.spec.as_mut().unwrap().taints = Some(t);
        tainted.spec.as_mut().unwrap().unschedulable = Some(true);
        let t = desired(&tainted, Some("True"), true, &now()).unwrap();
        assert_eq!(t.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(), ["gpu", UNSCHEDULABLE]);
    }

    #[test]
    fn pods_leave_at_once_without_a_toleration_or_after_their_shortest_toleration_seconds() {
        let taint = |added: &str| Taint {
            key: UNREACHABLE.into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: Some(Time(chrono::DateTime::parse_from_rfc3339(added).unwrap().into())),
        };
        let t0 = crate::model::time::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let pod = |tolerations: serde_json::Value| -> CachedPod {
            serde_json::from_value(
                json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tolerations}}),
            )
            .unwrap()
        };
        let taints = [taint("2026-01-01T00:00:00Z")];
        assert_eq!(eviction(&pod(json!([])), &taints, t0), Eviction::Now);
        let tolerant = pod(json!([
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"operator": "Exists", "tolerationSeconds": 60}]));
        assert_eq!(eviction(&tolerant, &taints, t0), Eviction::At(t0 + 60));
        assert_eq!(eviction(&tolerant, &taints, t0 + 60), Eviction::Now);
        let forever = pod(json!([{"key": UNREACHABLE, "operator": "Exists"}]));
        assert_eq!(eviction(&forever, &taints, t0 + 1_000_000), Eviction::Never);
        // NoSchedule taints never evict.
        let soft = [Taint { effect: "NoSchedule".into(), time_added: None, ..taint("2026-01-01T00:00:00Z") }];
        assert_eq!(eviction(&pod(json!([])), &soft, t0), Eviction::Never);
    }
}
