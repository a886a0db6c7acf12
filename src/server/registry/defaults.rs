//! The defaults kube-apiserver fills in on every create and update (its `SetDefaults_*`
//! functions of pkg/apis/*/v1/defaults.go), for the fields tutorials leave out: what a
//! client reads back is what it would read from Kubernetes (a Service has its `type`, a
//! Deployment its `strategy`), and validation and the controllers see complete objects.

use serde_json::{Value, json};

use super::resources::Resource;

/// Sets `obj[key]` to `value` if it is absent or null.
fn or_set(obj: &mut Value, key: &str, value: Value) {
    if let Some(o) = obj.as_object_mut() {
        let slot = o.entry(key.to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// `obj[key]`, made an object if it is absent or null (None if it is something else,
/// which the schema check refuses).
fn object<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    or_set(obj, key, json!({}));
    obj.get_mut(key).filter(|v| v.is_object())
}

fn each<'a>(obj: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    obj.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten()
}

/// Fills in `obj`'s defaults (of `r`'s kind and version), as kube-apiserver does before
/// validating a create or an update.
pub fn apply(r: &Resource, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match r.kind {
        "Pod" => {
            if let Some(spec) = object(obj, "spec") {
                pod_spec(spec);
            }
        }
        "Service" => {
            if let Some(spec) = object(obj, "spec") {
                service_spec(spec);
            }
        }
        "Deployment" => {
            if let Some(spec) = object(obj, "spec") {
                or_set(spec, "replicas", json!(1));
                or_set(spec, "revisionHistoryLimit", json!(10));
                or_set(spec, "progressDeadlineSeconds", json!(600));
                if let Some(strategy) = object(spec, "strategy") {
                    or_set(strategy, "type", json!("RollingUpdate"));
                    if strategy["type"] == "RollingUpdate"
                        && let Some(ru) = object(strategy, "rollingUpdate")
                    {
                        or_set(ru, "maxUnavailable", json!("25%"));
                        or_set(ru, "maxSurge", json!("25%"));
                    }
                }
                template(spec);
            }
        }
        "ReplicaSet" => {
            if let Some(spec) = object(obj, "spec") {
                or_set(spec, "replicas", json!(1));
                template(spec);
            }
        }
        "DaemonSet" => {
            if let Some(spec) = object(obj, "spec") {
                or_set(spec, "revisionHistoryLimit", json!(10));
                if let Some(strategy) = object(spec, "updateStrategy") {
                    or_set(strategy, "type", json!("RollingUpdate"));
                    if strategy["type"] == "RollingUpdate"
                        && let Some(ru) = object(strategy, "rollingUpdate")
                    {
                        or_set(ru, "maxUnavailable", json!(1));
                        or_set(ru, "maxSurge", json!(0));
                    }
                }
                template(spec);
            }
        }
        "StatefulSet" => {
            if let Some(spec) = object(obj, "spec") {
                or_set(spec, "replicas", json!(1));
                or_set(spec, "podManagementPolicy", json!("OrderedReady"));
                or_set(spec, "revisionHistoryLimit", json!(10));
                if let Some(strategy) = object(spec, "updateStrategy") {
                    or_set(strategy, "type", json!("RollingUpdate"));
                    if strategy["type"] == "RollingUpdate"
                        && let Some(ru) = object(strategy, "rollingUpdate")
                    {
                        or_set(ru, "partition", json!(0));
                    }
                }
                if let Some(policy) = object(spec, "persistentVolumeClaimRetentionPolicy") {
                    or_set(policy, "whenDeleted", json!("Retain"));
                    or_set(policy, "whenScaled", json!("Retain"));
                }
                template(spec);
            }
        }
        "Job" => {
            if let Some(spec) = object(obj, "spec") {
                job_spec(spec);
            }
        }
        "CronJob" => {
            if let Some(spec) = object(obj, "spec") {
                or_set(spec, "concurrencyPolicy", json!("Allow"));
                or_set(spec, "suspend", json!(false));
                or_set(spec, "successfulJobsHistoryLimit", json!(3));
                or_set(spec, "failedJobsHistoryLimit", json!(1));
                if let Some(job) = object(spec, "jobTemplate").and_then(|t| object(t, "spec")) {
                    job_spec(job);
                }
            }
        }
        "PersistentVolume" => {
            if let Some(spec) = object(obj, "spec") {
                or_set(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                or_set(spec, "volumeMode", json!("Filesystem"));
            }
        }
        "PersistentVolumeClaim" => {
            if let Some(spec) = object(obj, "spec") {
                or_set(spec, "volumeMode", json!("Filesystem"));
            }
        }
        "StorageClass" => {
            or_set(obj, "reclaimPolicy", json!("Delete"));
            or_set(obj, "volumeBindingMode", json!("Immediate"));
        }
        "NetworkPolicy" => {
            if let Some(spec) = object(obj, "spec") {
                // Ingress always, Egress when egress rules are given.
                let egress = spec.get("egress").and_then(Value::as_array).is_some_and(|e| !e.is_empty());
                or_set(spec, "policyTypes", if egress { json!(["Ingress", "Egress"]) } else { json!(["Ingress"]) });
                for rule in each(spec, "ingress") {
                    for p in each(rule, "ports") {
                        or_set(p, "protocol", json!("TCP"));
                    }
                }
                for rule in each(spec, "egress") {
                    for p in each(rule, "ports") {
                        or_set(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
        "HorizontalPodAutoscaler" if r.version == "v2" => {
            if let Some(spec) = object(obj, "spec") {
                or_set(spec, "minReplicas", json!(1));
                if spec.get("metrics").and_then(Value::as_array).is_none_or(Vec::is_empty) {
                    spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]);
                }
            }
        }
        "HorizontalPodAutoscaler" => {
            if let Some(spec) = object(obj, "spec") {
                or_set(spec, "minReplicas", json!(1));
            }
        }
        "PriorityClass" => or_set(obj, "preemptionPolicy", json!("PreemptLowerPriority")),
        "EndpointSlice" => {
            for p in each(obj, "ports") {
                or_set(p, "protocol", json!("TCP"));
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            // Users and groups are RBAC's; service accounts are core's.
            for s in each(obj, "subjects") {
                if s["kind"] != "ServiceAccount" {
                    or_set(s, "apiGroup", json!("rbac.authorization.k8s.io"));
                }
            }
        }
        _ => {}
    }
}

/// The pod template of a workload's spec.
fn template(spec: &mut Value) {
    if let Some(pod) = object(spec, "template").and_then(|t| object(t, "spec")) {
        pod_spec(pod);
    }
}

fn job_spec(spec: &mut Value) {
    if spec.get("completions").is_none_or(Value::is_null) && spec.get("parallelism").is_none_or(Value::is_null) {
        spec["completions"] = json!(1);
    }
    or_set(spec, "parallelism", json!(1));
    or_set(spec, "backoffLimit", json!(6));
    or_set(spec, "completionMode", json!("NonIndexed"));
    or_set(spec, "suspend", json!(false));
    or_set(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    template(spec);
}

/// A container image's pull policy when none is given: Always for `:latest` or no tag,
/// IfNotPresent otherwise (a digest counts as a tag).
pub fn image_pull_policy(image: &str) -> &'static str {
    // The tag is after the last '/', so that a registry's port is not taken for one.
    let last = image.rsplit('/').next().unwrap_or(image);
    match (image.contains('@'), last.split_once(':')) {
        (true, _) => "IfNotPresent",
        (false, Some((_, "latest")) | None) => "Always",
        (false, Some(_)) => "IfNotPresent",
    }
}

fn pod_spec(spec: &mut Value) {
    or_set(spec, "restartPolicy", json!("Always"));
    or_set(spec, "dnsPolicy", json!("ClusterFirst"));
    or_set(spec, "terminationGracePeriodSeconds", json!(30));
    or_set(spec, "securityContext", json!({}));
    or_set(spec, "schedulerName", json!("default-scheduler"));
    or_set(spec, "enableServiceLinks", json!(true));
    let host_network = spec["hostNetwork"].as_bool() == Some(true);
    for list in ["initContainers", "containers"] {
        for c in each(spec, list) {
            container(c, host_network);
        }
    }
    for v in each(spec, "volumes") {
        for source in ["secret", "configMap", "downwardAPI", "projected"] {
            if let Some(s) = v.get_mut(source).filter(|s| s.is_object()) {
                or_set(s, "defaultMode", json!(420));
            }
        }
    }
}

fn probe(p: &mut Value) {
    or_set(p, "timeoutSeconds", json!(1));
    or_set(p, "periodSeconds", json!(10));
    or_set(p, "successThreshold", json!(1));
    or_set(p, "failureThreshold", json!(3));
}

fn container(c: &mut Value, host_network: bool) {
    or_set(c, "terminationMessagePath", json!("/dev/termination-log"));
    or_set(c, "terminationMessagePolicy", json!("File"));
    let policy = image_pull_policy(c.get("image").and_then(Value::as_str).unwrap_or_default());
    or_set(c, "imagePullPolicy", json!(policy));
    or_set(c, "resources", json!({}));
    for p in each(c, "ports") {
        or_set(p, "protocol", json!("TCP"));
        if host_network && let Some(port) = p.get("containerPort").cloned() {
            or_set(p, "hostPort", port);
        }
    }
    for which in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(which).filter(|p| p.is_object()) {
            probe(p);
        }
    }
    for e in each(c, "env") {
        if let Some(f) = e.pointer_mut("/valueFrom/fieldRef").filter(|f| f.is_object()) {
            or_set(f, "apiVersion", json!("v1"));
        }
    }
}

fn service_spec(spec: &mut Value) {
    or_set(spec, "type", json!("ClusterIP"));
    or_set(spec, "sessionAffinity", json!("None"));
    let ty = spec["type"].as_str().unwrap_or_default().to_string();
    if ty != "ExternalName" {
        or_set(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
        or_set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    for p in each(spec, "ports") {
        or_set(p, "protocol", json!("TCP"));
        // targetPort defaults to the port (0 and "" count as unset).
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if unset && let Some(port) = p.get("port").cloned() {
            p["targetPort"] = port;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_without_a_tag_or_latest_are_pulled_always_others_if_not_present() {
        assert_eq!(image_pull_policy("busybox"), "Always");
        assert_eq!(image_pull_policy("busybox:latest"), "Always");
        assert_eq!(image_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(image_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(image_pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }
}
