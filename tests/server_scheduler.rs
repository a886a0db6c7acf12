//! The scheduler inside `nodectl server`, driven by the real kubectl: pods without a node
//! are bound to the nodes that fit them (spread over equal nodes), a pod that fits nowhere
//! shows kube-scheduler's reasons in its PodScheduled condition and a FailedScheduling
//! event, and is placed once a node that fits it joins. The nodes here are Node objects
//! (no daemon behind them): binding is the scheduler's whole job.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::server::{Server, free_port};
use serde_json::Value;

fn node_yaml(name: &str, memory: &str, extra_labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{kubernetes.io/hostname: {name}{extra_labels}}}\n\
         status:\n  capacity: {{cpu: '4', memory: {memory}, pods: '110'}}\n  allocatable: {{cpu: '4', memory: {memory}, pods: '110'}}\n  \
         conditions: [{{type: Ready, status: 'True', reason: KubeletReady, message: ready}}]\n"
    )
}

fn pod_yaml(name: &str, memory: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}}}\nspec:\n{extra_spec}  containers:\n  \
         - {{name: c, image: busybox, resources: {{requests: {{cpu: 100m, memory: {memory}}}}}}}\n"
    )
}

fn apply(s: &Server, dir: &std::path::Path, name: &str, yaml: &str) {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    s.ok(&["apply", "-f", path.to_str().unwrap()]);
}

fn pod(s: &Server, name: &str) -> Value {
    serde_json::from_str(&s.ok(&["get", "pod", name, "-o", "json"])).unwrap()
}

fn wait_for(s: &Server, name: &str, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let p = pod(s, name);
        if want(&p) {
            return p;
        }
        assert!(Instant::now() < end, "pod {name} never {what}: {p:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn condition<'a>(pod: &'a Value, kind: &str) -> Option<&'a Value> {
    pod["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

#[test]
fn pods_are_spread_over_the_nodes_that_fit_and_one_that_fits_nowhere_says_why_until_a_node_fits() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("server"), free_port(), &[]);
    for n in ["n1", "n2", "n3"] {
        apply(&s, tmp.path(), n, &node_yaml(n, "8Gi", ""));
    }
    for i in 0..6 {
        apply(&s, tmp.path(), &format!("web-{i}"), &pod_yaml(&format!("web-{i}"), "64Mi", ""));
    }
    let mut per_node = BTreeMap::new();
    for i in 0..6 {
        let p = wait_for(&s, &format!("web-{i}"), "got a node", |p| p["spec"]["nodeName"].is_string());
        assert_eq!(condition(&p, "PodScheduled").unwrap()["status"], "True", "{p:#}");
        *per_node.entry(p["spec"]["nodeName"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "{per_node:?}");
    let events = s.ok(&["get", "events", "--field-selector", "reason=Scheduled", "-o", "json"]);
    let events: Value = serde_json::from_str(&events).unwrap();
    let messages: Vec<&str> =
        events["items"].as_array().unwrap().iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(messages.iter().any(|m| m.starts_with("Successfully assigned default/web-0 to n")), "{messages:?}");

    // Too big for any node, and a selector only a tainted node matches.
    apply(&s, tmp.path(), "big", &pod_yaml("big", "64Gi", ""));
    let p = wait_for(&s, "big", "was found unschedulable", |p| condition(p, "PodScheduled").is_some());
    let c = condition(&p, "PodScheduled").unwrap();
    assert_eq!((c["status"].as_str(), c["reason"].as_str()), (Some("False"), Some("Unschedulable")));
    assert_eq!(c["message"], "0/3 nodes are available: 3 Insufficient memory.");
    let described = s.ok(&["describe", "pod", "big"]);
    assert!(described.contains("FailedScheduling"), "{described}");
    assert!(described.contains("0/3 nodes are available: 3 Insufficient memory."), "{described}");

    // A node with room joins: the pod goes there, without anything else happening to it.
    apply(&s, tmp.path(), "large", &node_yaml("large", "128Gi", ", size: large"));
    let p = wait_for(&s, "big", "went to the large node", |p| p["spec"]["nodeName"].is_string());
    assert_eq!(p["spec"]["nodeName"], "large");
    assert_eq!(condition(&p, "PodScheduled").unwrap()["status"], "True");

    // Taints, selectors and cordons keep pods out, each counted in the message.
    s.ok(&["taint", "node", "large", "dedicated=db:NoSchedule"]);
    s.ok(&["cordon", "n1"]);
    let selective = pod_yaml("selective", "64Mi", "  nodeSelector: {size: large}\n");
    apply(&s, tmp.path(), "selective", &selective);
    let p = wait_for(&s, "selective", "was found unschedulable", |p| condition(p, "PodScheduled").is_some());
    assert_eq!(
        condition(&p, "PodScheduled").unwrap()["message"],
        "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 1 node(s) were unschedulable, \
         2 node(s) didn't match Pod's node affinity/selector."
    );
    // Another scheduler's pods are left alone.
    let other = pod_yaml("other", "64Mi", "  schedulerName: someone-else\n");
    apply(&s, tmp.path(), "other", &other);
    s.ok(&["taint", "node", "large", "dedicated-"]);
    wait_for(&s, "selective", "went to the untainted large node", |p| p["spec"]["nodeName"] == "large");
    let other = pod(&s, "other");
    assert!(other["spec"]["nodeName"].is_null() && condition(&other, "PodScheduled").is_none(), "{other:#}");
}

/// With `--disable-scheduler` another scheduler binds pods: this server leaves them alone
/// (a ready node with room is there; the running scheduler binds such a pod at once).
#[test]
fn a_server_without_its_scheduler_leaves_pods_to_another() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("server"), free_port(), &["--disable-scheduler"]);
    apply(&s, tmp.path(), "n1", &node_yaml("n1", "8Gi", ""));
    apply(&s, tmp.path(), "web", &pod_yaml("web", "64Mi", ""));
    std::thread::sleep(Duration::from_secs(2));
    let p = pod(&s, "web");
    assert!(p["spec"]["nodeName"].is_null() && condition(&p, "PodScheduled").is_none(), "{p:#}");
    // What another scheduler does: pods/binding.
    let binding = "{\"apiVersion\": \"v1\", \"kind\": \"Binding\", \"metadata\": {\"name\": \"web\"}, \"target\": {\"kind\": \"Node\", \"name\": \"n1\"}}";
    let token = s.admin_token();
    let (code, body) = s.request(
        "POST",
        "/api/v1/namespaces/default/pods/web/binding",
        Some(&token),
        Some(("application/json", binding.as_bytes())),
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(pod(&s, "web")["spec"]["nodeName"], "n1");
}
