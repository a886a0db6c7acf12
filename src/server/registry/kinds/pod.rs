//! Pods: the kubelet-facing defaults of every container, the pod spec rules `nodectl run`
//! applies too, and graceful deletion through the pod's node.

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::fill::{each, or_set, spec};
use super::{PLAIN, Problem, Strategy};
use crate::model::podspec::problems as pod_spec_problems;

pub const POD: Strategy = Strategy {
    status: true,
    categories: &["all"],
    on_create: |obj| {
        pending(obj);
        default_tolerations(obj);
    },
    defaults: |obj, _| {
        if let Some(s) = spec(obj) {
            pod_spec(s);
        }
    },
    validate: |obj, _| validate(obj),
    grace,
    awaits_node,
    delete_answers_object: true,
    ..PLAIN
};

/// A new pod (and volume, claim) is Pending until something says otherwise.
pub fn pending(obj: &mut Value) {
    if obj.pointer("/status/phase").is_none() {
        obj["status"]["phase"] = json!("Pending");
    }
}

fn validate(obj: &Value) -> Vec<Problem> {
    pod_spec_problems(&obj["spec"], "spec")
}

/// tolerationSeconds of the not-ready and unreachable tolerations pods get when they have
/// none (kube-apiserver's --default-not-ready-toleration-seconds and
/// --default-unreachable-toleration-seconds), set once at the server's start.
static DEFAULT_TOLERATIONS: OnceLock<(i64, i64)> = OnceLock::new();

pub fn set_default_tolerations(not_ready: i64, unreachable: i64) {
    // A second call (tests in one process) keeps the first values.
    let _ = DEFAULT_TOLERATIONS.set((not_ready, unreachable));
}

/// kube-apiserver's DefaultTolerationSeconds admission: a pod that does not tolerate the
/// not-ready or unreachable NoExecute taint gets a toleration of it for a while (300 s by
/// default), so that its node's brief trouble does not evict it at once.
fn default_tolerations(pod: &mut Value) {
    let (not_ready, unreachable) = DEFAULT_TOLERATIONS.get().copied().unwrap_or((300, 300));
    let Some(spec) = pod.get_mut("spec").filter(|s| s.is_object()) else { return };
    let mut list = match spec.get("tolerations") {
        Some(Value::Array(l)) => l.clone(),
        None | Some(Value::Null) => Vec::new(),
        // Not a list: validation answers it.
        Some(_) => return,
    };
    let has = |list: &[Value], key: &str| {
        list.iter().any(|t| {
            let effect = t["effect"].as_str().unwrap_or_default();
            let k = t["key"].as_str().unwrap_or_default();
            (effect.is_empty() || effect == "NoExecute") && (k == key || (k.is_empty() && t["operator"] == "Exists"))
        })
    };
    for (key, secs) in [("node.kubernetes.io/not-ready", not_ready), ("node.kubernetes.io/unreachable", unreachable)] {
        if !has(&list, key) {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs}));
        }
    }
    spec["tolerations"] = Value::Array(list);
}

/// The client's grace period, else the pod's terminationGracePeriodSeconds, else 30.
fn grace(pod: &Value, requested: Option<i64>) -> i64 {
    requested
        .or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
        .unwrap_or(30)
        .max(0)
}

/// A pod on a node with grace left is deleted by its kubelet, once its containers stopped.
fn awaits_node(pod: &Value) -> bool {
    pod.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty())
        && pod.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).is_some_and(|g| g > 0)
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

/// A pod spec's defaults (a pod's, or a workload template's).
pub fn pod_spec(spec: &mut Value) {
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

/// The pod template of a workload's (or a Job's) spec.
pub fn template(spec: &mut Value) {
    if let Some(pod) = super::fill::object(spec, "template").and_then(|t| super::fill::object(t, "spec")) {
        pod_spec(pod);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_not_ready_and_unreachable_tolerations_unless_they_tolerate_them() {
        let mut p = json!({"spec": {"containers": []}});
        default_tolerations(&mut p);
        let t = p["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[1],
            json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
        );
        let mut own = json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}});
        default_tolerations(&mut own);
        let t = own["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(
            (t.len(), &t[0]["tolerationSeconds"], &t[1]["key"]),
            (2, &json!(5), &json!("node.kubernetes.io/unreachable"))
        );
        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_tolerations(&mut all);
        assert_eq!(all["spec"]["tolerations"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn images_without_a_tag_or_latest_are_pulled_always_others_if_not_present() {
        assert_eq!(image_pull_policy("busybox"), "Always");
        assert_eq!(image_pull_policy("busybox:latest"), "Always");
        assert_eq!(image_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(image_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(image_pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn a_bound_pod_with_grace_left_waits_for_its_node_and_an_unbound_one_does_not() {
        let bound = json!({"spec": {"nodeName": "n1"}, "metadata": {"deletionGracePeriodSeconds": 30}});
        assert!(awaits_node(&bound));
        assert!(!awaits_node(&json!({"spec": {}, "metadata": {"deletionGracePeriodSeconds": 30}})));
        assert!(!awaits_node(&json!({"spec": {"nodeName": "n1"}, "metadata": {"deletionGracePeriodSeconds": 0}})));
        assert_eq!(grace(&json!({"spec": {"terminationGracePeriodSeconds": 5}}), None), 5);
        assert_eq!(grace(&json!({"spec": {}}), None), 30);
        assert_eq!(grace(&json!({"spec": {}}), Some(-3)), 0);
    }
}
