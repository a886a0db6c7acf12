//! The pod garbage collector inside `nodectl server`, with a short period
//! (`--pod-gc-period=1s`) and `--terminated-pod-gc-threshold=2`: the oldest finished pods
//! beyond two go; a pod bound to a node that does not exist is marked Failed and deleted
//! after the quarantine; a pod being deleted on a node declared out of service goes at once;
//! a running pod on a node that exists is left alone. The node lifecycle controller is off,
//! so that the nodes the test writes are judged by their records alone.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::server::{Server, free_port};
use serde_json::{Value, json};

fn apply(s: &Server, dir: &Path, yaml: &str) {
    let path = dir.join("apply.yaml");
    std::fs::write(&path, yaml).unwrap();
    s.ok(&["apply", "-f", path.to_str().unwrap()]);
}

fn exists(s: &Server, pod: &str) -> bool {
    let out = s.kubectl(&["get", "pod", pod, "--ignore-not-found", "-o", "name"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    !out.stdout.is_empty()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  \
         containers: [{{name: c, image: busybox}}]\n---\n"
    )
}

fn set_phase(s: &Server, name: &str, phase: &str) {
    let status = json!({"status": {"phase": phase}}).to_string();
    s.ok(&["patch", "pod", name, "--subresource=status", "--type=merge", "-p", &status]);
}

/// A Node record with the Ready condition `ready`, and `taints`.
fn node(s: &Server, dir: &Path, name: &str, ready: &str, taints: &str) {
    apply(s, dir, &format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{taints: {taints}}}\n"));
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady"}]}});
    s.ok(&["patch", "node", name, "--subresource=status", "--type=merge", "-p", &status.to_string()]);
}

#[test]
fn pods_no_kubelet_will_remove_are_collected() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = [
        "--leader-elect=false",
        "--controllers=*,-nodelifecycle",
        "--pod-gc-period=1s",
        "--terminated-pod-gc-threshold=2",
    ];
    let s = Server::start(&tmp.path().join("data"), free_port(), &flags);
    let dir = tmp.path();
    node(&s, dir, "live", "True", "[]");

    // Four finished pods, created a second apart: the two oldest go.
    for i in 0..4 {
        apply(&s, dir, &pod(&format!("done-{i}"), "live"));
        set_phase(&s, &format!("done-{i}"), if i % 2 == 0 { "Succeeded" } else { "Failed" });
        std::thread::sleep(Duration::from_millis(1100));
    }
    apply(&s, dir, &pod("running", "live"));
    set_phase(&s, "running", "Running");
    wait_until("the two oldest finished pods are gone", || !exists(&s, "done-0") && !exists(&s, "done-1"));
    assert!(exists(&s, "done-2") && exists(&s, "done-3"), "only the finished pods beyond the threshold go");

    // Bound to a node that never joined: marked Failed, then deleted once the node has been
    // missing for the quarantine. Watched from before, to see the Failed mark.
    let mut watch = std::process::Command::new("kubectl")
        .args(["--kubeconfig", s.dir.join("admin.kubeconfig").to_str().unwrap()])
        .args(["get", "pods", "--watch", "--output-watch-events", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    apply(&s, dir, &pod("orphan", "ghost"));
    set_phase(&s, "orphan", "Running");
    wait_until("the orphaned pod is gone", || !exists(&s, "orphan"));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let events: Vec<Value> =
        serde_json::Deserializer::from_slice(&out.stdout).into_iter().map(Result::unwrap).collect();
    let failed = events
        .iter()
        .find(|e| e["object"]["metadata"]["name"] == "orphan" && e["object"]["status"]["phase"] == "Failed")
        .expect("the pod was marked Failed first");
    let target = failed["object"]["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DisruptionTarget")
        .expect("a DisruptionTarget condition");
    assert_eq!(target["reason"], "DeletionByPodGC");
    assert_eq!(target["message"], "PodGC: node no longer exists");

    // Being deleted on a node an operator declared out of service: gone at once, where it
    // would otherwise wait for that node's kubelet forever.
    node(&s, dir, "dead", "False", "[{key: node.kubernetes.io/out-of-service, effect: NoExecute}]");
    apply(&s, dir, &pod("stuck", "dead"));
    set_phase(&s, "stuck", "Running");
    s.ok(&["delete", "pod", "stuck", "--wait=false"]);
    wait_until("the pod on the out-of-service node is gone", || !exists(&s, "stuck"));

    // Nothing else was touched.
    assert!(exists(&s, "running"));
    assert!(exists(&s, "done-2") && exists(&s, "done-3"));
}
