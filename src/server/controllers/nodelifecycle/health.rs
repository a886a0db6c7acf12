//! Whether a node is still heard from, as kube's node lifecycle controller judges it: a
//! node's heartbeats are its Lease's renewTime and its Ready condition's
//! lastHeartbeatTime; when either changes, this server's own clock records the moment
//! (so a node's clock being off does not matter), and a node not heard from for the grace
//! period has its conditions set to Unknown.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The conditions the kubelet reports, which an unreachable node has Unknown.
const REPORTED: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The last heartbeats seen of each node, and when they were seen.
#[derive(Default)]
pub struct Probes {
    seen: HashMap<String, Seen>,
}

struct Seen {
    heartbeats: (Option<String>, Option<String>),
    at: Instant,
}

impl Probes {
    /// Records the node's heartbeats (its Lease's renewTime, its Ready condition's
    /// lastHeartbeatTime) at `now`; answers how long ago they last changed. A node seen for
    /// the first time counts as heard from now, as kube's controller starts its grace at
    /// its own start.
    pub fn observe(&mut self, node: &str, lease: Option<String>, ready: Option<String>, now: Instant) -> Duration {
        let heartbeats = (lease, ready);
        let seen =
            self.seen.entry(node.to_string()).or_insert_with(|| Seen { heartbeats: heartbeats.clone(), at: now });
        if seen.heartbeats != heartbeats {
            *seen = Seen { heartbeats, at: now };
        }
        now.saturating_duration_since(seen.at)
    }

    /// Forgets nodes that are gone.
    pub fn retain(&mut self, alive: impl Fn(&str) -> bool) {
        self.seen.retain(|name, _| alive(name));
    }
}

/// The node's Ready condition status ("True", "False", "Unknown"), if it has one.
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

pub fn ready_heartbeat(node: &Node) -> Option<String> {
    condition(node, "Ready").and_then(|c| c.last_heartbeat_time.as_ref()).map(|t| t.0.to_rfc3339())
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// The node's conditions with every reported one Unknown, as kube writes them for a node
/// not heard from; None when they already are.
pub fn unknown(node: &Node, now: Time) -> Option<Vec<NodeCondition>> {
    let mut conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let mut changed = false;
    for type_ in REPORTED {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(now.clone());
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_is_heard_from_when_either_heartbeat_changes_by_this_servers_clock() {
        let mut p = Probes::default();
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        assert_eq!(p.observe("a", Some("r1".into()), None, s(0)), Duration::ZERO);
        assert_eq!(p.observe("a", Some("r1".into()), None, s(30)), Duration::from_secs(30));
        assert_eq!(p.observe("a", Some("r2".into()), None, s(35)), Duration::ZERO);
        assert_eq!(p.observe("a", Some("r2".into()), Some("h".into()), s(50)), Duration::ZERO);
        assert_eq!(p.observe("a", Some("r2".into()), Some("h".into()), s(91)), Duration::from_secs(41));
        p.retain(|n| n != "a");
        assert_eq!(p.observe("a", Some("r2".into()), Some("h".into()), s(100)), Duration::ZERO);
    }

    #[test]
    fn an_unheard_node_has_its_reported_conditions_unknown_once() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "2026-01-01T00:01:00Z"},
                {"type": "MemoryPressure", "status": "False"}]}}))
        .unwrap();
        let now = Time(crate::model::time::now());
        let c = unknown(&node, now.clone()).unwrap();
        assert_eq!(c.len(), 4);
        assert!(c.iter().all(|c| c.status == "Unknown"));
        assert_eq!(c[0].reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(c[0].last_heartbeat_time.as_ref().unwrap().0.to_rfc3339(), "2026-01-01T00:01:00+00:00");
        assert_eq!(c[2].reason.as_deref(), Some("NodeStatusNeverUpdated"));
        let mut again = node.clone();
        again.status.as_mut().unwrap().conditions = Some(c);
        assert!(unknown(&again, now).is_none());
    }
}
