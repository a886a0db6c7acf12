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

/// Drops from a pod what no controller reads before the shared pod cache keeps it (as
/// client-go's informer transforms do): its volumes (every pod carries the projected
/// `kube-api-access` volume) and each container's command, arguments, environment, mounts,
/// probes, lifecycle hooks and security context. Names, images, ports, resources, the
/// node, tolerations, metadata and status stay. With tens of thousands of pods, this is
/// most of the cache.
pub fn trim_for_cache(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else { return };
    spec.volumes = None;
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        c.command = None;
        c.args = None;
        c.env = None;
        c.env_from = None;
        c.volume_mounts = None;
        c.volume_devices = None;
        c.liveness_probe = None;
        c.readiness_probe = None;
        c.startup_probe = None;
        c.lifecycle = None;
        c.security_context = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_what_controllers_read_and_drops_the_rest() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "labels": {"app": "a"}, "annotations": {"controller.kubernetes.io/pod-deletion-cost": "5"}},
            "spec": {
                "nodeName": "n1", "hostname": "h", "subdomain": "s",
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "volumes": [{"name": "kube-api-access-x", "projected": {"sources": []}}],
                "initContainers": [{"name": "i", "image": "busybox", "command": ["true"]}],
                "containers": [{"name": "c", "image": "busybox", "command": ["sh"], "args": ["-c", "x"],
                                "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80, "name": "http"}],
                                "resources": {"requests": {"cpu": "100m"}},
                                "volumeMounts": [{"name": "kube-api-access-x", "mountPath": "/var/run/secrets"}],
                                "readinessProbe": {"exec": {"command": ["true"]}}}],
            },
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "", "ready": true, "restartCount": 3}]},
        }))
        .unwrap();
        trim_for_cache(&mut pod);
        let spec = pod.spec.as_ref().unwrap();
        assert!(spec.volumes.is_none());
        let c = &spec.containers[0];
        assert!(c.command.is_none() && c.args.is_none() && c.env.is_none());
        assert!(c.volume_mounts.is_none() && c.readiness_probe.is_none());
        assert!(spec.init_containers.as_ref().unwrap()[0].command.is_none());
        // What the controllers read stays.
        assert_eq!(c.ports.as_ref().unwrap()[0].name.as_deref(), Some("http"));
        assert!(c.resources.is_some());
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("h"), Some("s")));
        assert_eq!(spec.tolerations.as_ref().unwrap().len(), 1);
        assert!(pod.metadata.annotations.as_ref().unwrap().contains_key("controller.kubernetes.io/pod-deletion-cost"));
        assert!(is_ready(&pod));
        assert_eq!(pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0].restart_count, 3);
    }
}
