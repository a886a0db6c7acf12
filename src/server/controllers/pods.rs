//! Pods as the controllers' shared cache keeps them ([`CachedPod`]), and what workload
//! controllers read from one: whether it still counts (active), whether it is ready and
//! since when, and who controls it; as kube's `pkg/controller` and `podutil` helpers
//! answer them.

use k8s_openapi::api::core::v1::{ContainerPort, PodCondition, PodIP, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Deserialize;

/// Neither finished (Succeeded, Failed) nor being deleted: kube's FilterActivePods.
pub fn is_active(pod: &CachedPod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    phase != Some("Succeeded") && phase != Some("Failed") && pod.metadata.deletion_timestamp.is_none()
}

/// When the pod's Ready condition became True, if it is True now.
pub fn ready_since(pod: &CachedPod) -> Option<Option<i64>> {
    let c = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| c.last_transition_time.as_ref().map(|t| t.0.timestamp()))
}

pub fn is_ready(pod: &CachedPod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now` (seconds since the epoch): kube's
/// IsPodAvailable. A Ready condition without a transition time counts only when no wait
/// is asked.
pub fn is_available(pod: &CachedPod, min_ready_seconds: i64, now: i64) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(Some(since)) => since.saturating_add(min_ready_seconds) <= now,
        Some(None) => false,
    }
}

/// A pod as the shared pod cache keeps it: only what the controllers read (as client-go's
/// informer transforms trim, but by type; see [`crate::model::pod_view`]): tens of
/// thousands of k8s-openapi `Pod`s cost hundreds of megabytes, and decoding straight into
/// this skips the rest of each pod (volumes, commands, environment, probes) as well.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPod {
    #[serde(default, deserialize_with = "crate::model::pod_view::meta_without_managed_fields")]
    pub metadata: ObjectMeta,
    pub spec: Option<CachedSpec>,
    pub status: Option<CachedStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedSpec {
    pub node_name: Option<String>,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default)]
    pub containers: Vec<CachedContainer>,
    pub init_containers: Option<Vec<CachedContainer>>,
}

/// A container's name and ports (a Service's named targetPort), and its restartPolicy (an
/// init container with Always is a sidecar).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedContainer {
    pub name: String,
    pub ports: Option<Vec<ContainerPort>>,
    pub restart_policy: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedStatus {
    pub phase: Option<String>,
    pub conditions: Option<Vec<PodCondition>>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<PodIP>>,
    pub container_statuses: Option<Vec<CachedContainerStatus>>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedContainerStatus {
    pub name: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub restart_count: i32,
}

crate::model::pod_view::pod_view!(CachedPod);

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true))
}

/// The most restarts of any of the pod's containers.
pub fn restarts(pod: &CachedPod) -> i32 {
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
    use k8s_openapi::api::core::v1::Pod;

    use super::*;

    #[test]
    fn a_cached_pod_keeps_what_controllers_read() {
        let json = serde_json::json!({
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
        });
        let pod: CachedPod = serde_json::from_value(json.clone()).unwrap();
        let spec = pod.spec.as_ref().unwrap();
        let c = &spec.containers[0];
        assert_eq!(c.name, "c");
        assert_eq!(c.ports.as_ref().unwrap()[0].name.as_deref(), Some("http"));
        assert_eq!(spec.init_containers.as_ref().unwrap()[0].name, "i");
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("h"), Some("s")));
        assert_eq!(spec.tolerations.as_ref().unwrap().len(), 1);
        assert!(pod.metadata.annotations.as_ref().unwrap().contains_key("controller.kubernetes.io/pod-deletion-cost"));
        assert!(is_ready(&pod));
        assert!(is_active(&pod));
        assert_eq!(restarts(&pod), 3);
        assert_eq!(pod.status.as_ref().unwrap().pod_ip.as_deref(), Some("10.0.0.1"));
        // The same pod by way of k8s-openapi's type: the field names agree with its.
        let whole: Pod = serde_json::from_value(json).unwrap();
        assert_eq!(serde_json::from_value::<CachedPod>(serde_json::to_value(&whole).unwrap()).unwrap(), pod);
    }
}
