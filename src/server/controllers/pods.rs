//! What workload controllers read from a pod: whether it still counts (active), whether it
//! is ready and since when, and who controls it; as kube's `pkg/controller` and
//! `podutil` helpers answer them.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// Neither finished (Succeeded, Failed) nor being deleted: kube's FilterActivePods.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    phase != Some("Succeeded") && phase != Some("Failed") && pod.metadata.deletion_timestamp.is_none()
}

/// When the pod's Ready condition became True, if it is True now.
pub fn ready_since(pod: &Pod) -> Option<Option<i64>> {
    let c = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| c.last_transition_time.as_ref().map(|t| t.0.timestamp()))
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now` (seconds since the epoch): kube's
/// IsPodAvailable. A Ready condition without a transition time counts only when no wait
/// is asked.
pub fn is_available(pod: &Pod, min_ready_seconds: i64, now: i64) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(Some(since)) => since.saturating_add(min_ready_seconds) <= now,
        Some(None) => false,
    }
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true))
}

/// The most restarts of any of the pod's containers.
pub fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}
