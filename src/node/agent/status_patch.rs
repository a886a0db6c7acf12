//! What a pod's status write sends: a JSON merge patch (RFC 7386) of `status` from the last
//! status written to the one now, or nothing when they are the same, so a node that has
//! nothing new to say says nothing (the kubelet's status manager does the same).

use k8s_openapi::api::core::v1::PodStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value, json};

/// The merge patch `{"status": {...}}` that turns `last` (None: nothing written yet) into
/// `now`, or None when there is nothing to change. Fields gone since `last` are set to null
/// (a merge patch removes them); lists are sent whole, as merge patches replace lists.
pub fn status_patch(last: Option<&PodStatus>, now: &PodStatus) -> Option<Value> {
    let now_v = serde_json::to_value(now).ok()?;
    let last_v = last.and_then(|l| serde_json::to_value(l).ok()).unwrap_or_else(|| json!({}));
    let empty = Map::new();
    let now_m = now_v.as_object().unwrap_or(&empty);
    let last_m = last_v.as_object().unwrap_or(&empty);
    let mut patch = Map::new();
    for (k, v) in now_m {
        if last_m.get(k) != Some(v) {
            patch.insert(k.clone(), v.clone());
        }
    }
    for k in last_m.keys() {
        if !now_m.contains_key(k) {
            patch.insert(k.clone(), Value::Null);
        }
    }
    (!patch.is_empty()).then(|| json!({ "status": patch }))
}

/// Gives each condition of `now` its lastTransitionTime as the kubelet does: the time of the
/// same condition in `before` while its status is the same, else `at`. Readers count from
/// it (a ReplicaSet's minReadySeconds: a pod is available once Ready that long).
pub fn stamp_transitions(before: Option<&PodStatus>, now: &mut PodStatus, at: &Time) {
    for c in now.conditions.iter_mut().flatten() {
        let kept = before
            .and_then(|b| b.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|p| p.type_ == c.type_ && p.status == c.status))
            .and_then(|p| p.last_transition_time.clone());
        c.last_transition_time = Some(kept.unwrap_or_else(|| at.clone()));
    }
}

/// Whether the API's copy of the status says something else than `ours` about the phase or
/// a condition we set: someone else wrote it (the node lifecycle controller marks the pods
/// of a node it lost NotReady). The next write then goes against the API's copy, so that it
/// is put right, as the kubelet's status manager reconciles with the API.
pub fn drifted(api: &PodStatus, ours: &PodStatus) -> bool {
    let condition =
        |s: &PodStatus, kind: &str| s.conditions.iter().flatten().find(|c| c.type_ == kind).map(|c| c.status.clone());
    api.phase != ours.phase
        || ours.conditions.iter().flatten().any(|c| condition(api, &c.type_).as_ref() != Some(&c.status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodCondition;

    fn ready(s: &str, reason: Option<&str>) -> PodCondition {
        PodCondition { type_: "Ready".into(), status: s.into(), reason: reason.map(String::from), ..Default::default() }
    }

    #[test]
    fn a_condition_set_by_someone_else_is_drift_and_a_field_we_leave_alone_is_not() {
        let mut ours = status("Running", Some("10.0.0.2"));
        ours.conditions = Some(vec![ready("True", None)]);
        let mut api = ours.clone();
        assert!(!drifted(&api, &ours));
        // The server's own additions (a message, another condition) are not ours to undo.
        api.message = Some("kept".into());
        api.conditions.as_mut().unwrap().push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            ..Default::default()
        });
        assert!(!drifted(&api, &ours));
        api.conditions.as_mut().unwrap()[0] = ready("False", Some("NodeNotReady"));
        assert!(drifted(&api, &ours));
        // Against the API's copy, the patch sends our conditions back.
        let patch = status_patch(Some(&api), &ours).unwrap();
        assert_eq!(patch["status"]["conditions"][0]["status"], "True");
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let t = |s: i64| Time(chrono::DateTime::from_timestamp(s, 0).unwrap());
        let mut first = status("Running", None);
        first.conditions = Some(vec![ready("False", Some("ContainersNotReady"))]);
        stamp_transitions(None, &mut first, &t(100));
        assert_eq!(first.conditions.as_ref().unwrap()[0].last_transition_time, Some(t(100)));
        let mut same = first.clone();
        stamp_transitions(Some(&first), &mut same, &t(200));
        assert_eq!(same.conditions.as_ref().unwrap()[0].last_transition_time, Some(t(100)));
        assert!(status_patch(Some(&first), &same).is_none(), "nothing new to say");
        let mut now_ready = status("Running", None);
        now_ready.conditions = Some(vec![ready("True", None)]);
        stamp_transitions(Some(&same), &mut now_ready, &t(300));
        assert_eq!(now_ready.conditions.as_ref().unwrap()[0].last_transition_time, Some(t(300)));
    }

    fn status(phase: &str, ip: Option<&str>) -> PodStatus {
        PodStatus { phase: Some(phase.into()), pod_ip: ip.map(String::from), ..Default::default() }
    }

    #[test]
    fn the_same_status_is_not_written_again() {
        let s = status("Running", Some("10.0.0.2"));
        assert_eq!(status_patch(Some(&s), &s.clone()), None);
    }

    #[test]
    fn the_first_status_is_written_whole() {
        let s = status("Pending", None);
        assert_eq!(status_patch(None, &s), Some(json!({"status": {"phase": "Pending"}})));
    }

    #[test]
    fn only_what_changed_is_sent_and_what_went_is_removed() {
        let before = PodStatus { message: Some("x".into()), ..status("Pending", None) };
        let after = status("Running", Some("10.0.0.2"));
        assert_eq!(
            status_patch(Some(&before), &after),
            Some(json!({"status": {"phase": "Running", "podIP": "10.0.0.2", "message": null}}))
        );
    }
}
