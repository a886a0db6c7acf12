//! A PodDisruptionBudget's numbers, as kube's disruption controller computes them: how
//! many pods are expected (from the scale of the pods' controllers when the budget is a
//! percentage or a maxUnavailable), how many must be healthy, how many are, which recent
//! evictions still count, and so how many disruptions are allowed. Pure: the controller
//! gives the pods, the controllers' scales and the time.

use std::collections::BTreeMap;

use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::server::controllers::pods::{self, CachedPod};

/// How long after an eviction the evicted pod is expected to be marked for deletion; an
/// entry of disruptedPods older than this is dropped (kube's DeletionTimeout).
pub const DELETION_TIMEOUT_SECS: i64 = 120;

/// A controller of pods, as the disruption controller knows it: its uid and its scale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scale {
    pub uid: String,
    pub replicas: i32,
}

/// intstr's GetScaledValueFromIntOrPercent: an int as it is, a percentage of `total`
/// rounded up or down; anything else is refused in its words.
pub fn scaled(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let Some(number) = s.strip_suffix('%') else {
                return Err("invalid value for IntOrString: invalid type: string is not a percentage".into());
            };
            let p: i64 = number
                .parse()
                .map_err(|_| format!("invalid value for IntOrString: invalid value {s:?}: strconv.Atoi: parsing {number:?}: invalid syntax"))?;
            let product = p * i64::from(total);
            let value = if round_up {
                product.div_euclid(100) + i64::from(product.rem_euclid(100) != 0)
            } else {
                product.div_euclid(100)
            };
            Ok(value.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
        }
    }
}

/// What a budget expects of its pods.
#[derive(Debug, PartialEq, Eq)]
pub struct Expected {
    pub expected: i32,
    pub desired_healthy: i32,
    /// Pods without a controller, which a percentage or maxUnavailable cannot count.
    pub unmanaged: Vec<String>,
}

/// kube's getExpectedPodCount: with maxUnavailable, or a percentage minAvailable, the
/// expected count is the sum of the scales of the pods' controllers (`scale_of` finds a
/// controller from a pod's; None if it knows none, which is an error); an integer
/// minAvailable expects the pods there are.
pub fn expected(
    spec: &PodDisruptionBudgetSpec,
    pods: &[&CachedPod],
    scale_of: impl Fn(&CachedPod) -> Option<Scale>,
) -> Result<Expected, String> {
    let scale = || -> Result<(i32, Vec<String>), String> {
        let mut scales: BTreeMap<String, i32> = BTreeMap::new();
        let mut unmanaged = Vec::new();
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let Some(owner) = pods::controller_of(&pod.metadata) else {
                unmanaged.push(name);
                continue;
            };
            if scales.contains_key(&owner.uid) {
                continue;
            }
            let s = scale_of(pod).ok_or_else(|| format!("found no controllers for pod {name:?}"))?;
            scales.insert(s.uid, s.replicas);
        }
        Ok((scales.values().copied().fold(0i32, i32::saturating_add), unmanaged))
    };
    if let Some(max) = &spec.max_unavailable {
        let (expected, unmanaged) = scale()?;
        let max = scaled(max, expected, true)?;
        return Ok(Expected { expected, desired_healthy: expected.saturating_sub(max).max(0), unmanaged });
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => {
            Ok(Expected { expected: pods.len() as i32, desired_healthy: *n, unmanaged: Vec::new() })
        }
        Some(min) => {
            let (expected, unmanaged) = scale()?;
            Ok(Expected { expected, desired_healthy: scaled(min, expected, true)?, unmanaged })
        }
        None => Ok(Expected { expected: 0, desired_healthy: 0, unmanaged: Vec::new() }),
    }
}

/// kube's buildDisruptedPodMap: the entries of disruptedPods (pod name → eviction time, in
/// seconds) whose pod is still there, not yet marked for deletion, and evicted less than
/// [`DELETION_TIMEOUT_SECS`] ago; and when the oldest kept one runs out.
pub fn still_disrupted(
    pods: &[&CachedPod],
    recorded: &BTreeMap<String, i64>,
    now: i64,
) -> (BTreeMap<String, i64>, Option<i64>) {
    let mut kept = BTreeMap::new();
    let mut recheck: Option<i64> = None;
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(&at) = recorded.get(&name) else { continue };
        let expires = at.saturating_add(DELETION_TIMEOUT_SECS);
        if expires < now {
            continue;
        }
        recheck = Some(recheck.map_or(expires, |r| r.min(expires)));
        kept.insert(name, at);
    }
    (kept, recheck)
}

/// kube's countHealthyPods: ready pods neither being deleted nor recently evicted.
pub fn healthy(pods: &[&CachedPod], disrupted: &BTreeMap<String, i64>, now: i64) -> i32 {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            disrupted.get(&name).is_none_or(|at| at.saturating_add(DELETION_TIMEOUT_SECS) <= now)
        })
        .filter(|p| pods::is_ready(p))
        .count() as i32
}

/// Disruptions allowed: healthy beyond desired, none while no pod is expected (a budget
/// whose pods have not appeared yet stays safe until it is computed with them).
pub fn allowed(current_healthy: i32, desired_healthy: i32, expected: i32) -> i32 {
    let allowed = current_healthy.saturating_sub(desired_healthy);
    if expected <= 0 || allowed <= 0 { 0 } else { allowed }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodCondition;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

    use super::*;

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn percentages_scale_as_intstr_does_rounding_up_or_down() {
        assert_eq!(scaled(&IntOrString::Int(2), 10, true), Ok(2));
        assert_eq!(scaled(&pct("25%"), 10, true), Ok(3));
        assert_eq!(scaled(&pct("25%"), 10, false), Ok(2));
        assert_eq!(scaled(&pct("50%"), 3, true), Ok(2));
        assert_eq!(scaled(&pct("50%"), 4, true), Ok(2));
        assert_eq!(scaled(&pct("100%"), 7, true), Ok(7));
        assert_eq!(scaled(&pct("0%"), 7, true), Ok(0));
        assert_eq!(scaled(&pct("1%"), 1, true), Ok(1));
        assert_eq!(scaled(&pct("1%"), 1, false), Ok(0));
        assert!(scaled(&pct("ten"), 10, true).unwrap_err().contains("string is not a percentage"));
        assert!(scaled(&pct("x%"), 10, true).is_err());
    }

    fn pod(name: &str, owner: Option<&str>, ready: bool, deleting: bool) -> CachedPod {
        CachedPod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                owner_references: owner.map(|uid| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "ReplicaSet".into(),
                        name: format!("rs-{uid}"),
                        uid: uid.into(),
                        controller: Some(true),
                        block_owner_deletion: None,
                    }]
                }),
                deletion_timestamp: deleting.then(|| Time(crate::model::time::now())),
                ..ObjectMeta::default()
            },
            status: Some(pods::CachedStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..pods::CachedStatus::default()
            }),
            ..CachedPod::default()
        }
    }

    fn spec(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudgetSpec {
        PodDisruptionBudgetSpec { min_available: min, max_unavailable: max, ..PodDisruptionBudgetSpec::default() }
    }

    /// Controllers "a" of scale 4 and "b" of scale 6.
    fn scales(p: &CachedPod) -> Option<Scale> {
        let uid = pods::controller_of(&p.metadata)?.uid.clone();
        let replicas = match uid.as_str() {
            "a" => 4,
            "b" => 6,
            _ => return None,
        };
        Some(Scale { uid, replicas })
    }

    #[test]
    fn the_expected_count_is_the_controllers_scale_for_percentages_and_max_unavailable() {
        let ps =
            [pod("a1", Some("a"), true, false), pod("a2", Some("a"), true, false), pod("b1", Some("b"), true, false)];
        let refs: Vec<&CachedPod> = ps.iter().collect();
        // Two controllers, 4 + 6: maxUnavailable 1 wants 9 healthy, 25% rounds up to 3.
        let e = expected(&spec(None, Some(IntOrString::Int(1))), &refs, scales).unwrap();
        assert_eq!((e.expected, e.desired_healthy), (10, 9));
        let e = expected(&spec(None, Some(pct("25%"))), &refs, scales).unwrap();
        assert_eq!((e.expected, e.desired_healthy), (10, 7));
        let e = expected(&spec(Some(pct("25%")), None), &refs, scales).unwrap();
        assert_eq!((e.expected, e.desired_healthy), (10, 3));
        // An integer minAvailable expects the pods there are.
        let e = expected(&spec(Some(IntOrString::Int(2)), None), &refs, scales).unwrap();
        assert_eq!((e.expected, e.desired_healthy), (3, 2));
        // maxUnavailable beyond the scale wants none healthy, never fewer than none.
        let e = expected(&spec(None, Some(IntOrString::Int(20))), &refs, scales).unwrap();
        assert_eq!(e.desired_healthy, 0);
    }

    #[test]
    fn unmanaged_pods_are_named_and_an_unknown_controller_is_an_error() {
        let ps = [pod("a1", Some("a"), true, false), pod("loose", None, true, false)];
        let refs: Vec<&CachedPod> = ps.iter().collect();
        let e = expected(&spec(None, Some(IntOrString::Int(1))), &refs, scales).unwrap();
        assert_eq!((e.expected, e.unmanaged), (4, vec!["loose".to_string()]));
        let ps = [pod("z1", Some("z"), true, false)];
        let refs: Vec<&CachedPod> = ps.iter().collect();
        let err = expected(&spec(Some(pct("50%")), None), &refs, scales).unwrap_err();
        assert_eq!(err, "found no controllers for pod \"z1\"");
    }

    #[test]
    fn recent_evictions_and_terminating_or_unready_pods_are_not_healthy() {
        let ps = [
            pod("ok", None, true, false),
            pod("evicted", None, true, false),
            pod("long-ago", None, true, false),
            pod("going", None, true, true),
            pod("unready", None, false, false),
        ];
        let refs: Vec<&CachedPod> = ps.iter().collect();
        let now = 1_000_000;
        let recorded: BTreeMap<String, i64> =
            [("evicted", now - 10), ("long-ago", now - 500), ("going", now - 5), ("vanished", now - 1)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        let (kept, recheck) = still_disrupted(&refs, &recorded, now);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["evicted"]);
        assert_eq!(recheck, Some(now - 10 + DELETION_TIMEOUT_SECS));
        assert_eq!(healthy(&refs, &kept, now), 2);
        assert_eq!(allowed(2, 1, 5), 1);
        assert_eq!(allowed(2, 3, 5), 0);
        assert_eq!(allowed(2, 0, 0), 0);
    }
}
