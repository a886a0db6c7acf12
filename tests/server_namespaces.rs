//! Namespace finalization, driven by the real kubectl: a deleted namespace is Terminating
//! (deletionTimestamp, status.phase, spec.finalizers [kubernetes]) while the namespace
//! controller deletes every object in it, refuses new objects with the API server's 403,
//! and goes once it is empty; `kubectl delete ns` waits for that and returns.

mod common;

use std::fs;
use std::path::Path;

use common::server::{Server, free_port};
use serde_json::Value;

/// One object of each kind the server serves in a namespace.
fn contents(ns: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg, namespace: {ns}}}\ndata: {{a: b}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: {ns}}}\nstringData: {{p: q}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: solo, namespace: {ns}}}\nspec:\n  containers: [{{name: c, image: busybox}}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80}}]\n---\n\
         apiVersion: v1\nkind: Endpoints\nmetadata: {{name: web, namespace: {ns}}}\n---\n\
         apiVersion: v1\nkind: Event\nmetadata: {{name: ev, namespace: {ns}}}\ninvolvedObject: {{kind: Pod, name: solo, namespace: {ns}}}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers: [{{name: c, image: busybox}}]\n---\n\
         apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers: [{{name: c, image: busybox}}]\n---\n\
         apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: lock, namespace: {ns}}}\n---\n"
    )
}

const KINDS: &str = "configmaps,secrets,pods,services,endpoints,events,deployments,replicasets,leases";

fn apply(s: &Server, dir: &Path, yaml: &str) {
    let file = dir.join("apply.yaml");
    fs::write(&file, yaml).unwrap();
    s.ok(&["apply", "-f", file.to_str().unwrap()]);
}

/// A namespace's objects of [`KINDS`], less the `kubernetes` Service and its endpoints,
/// which every server keeps in `default`.
fn names(s: &Server, ns: &str) -> Vec<String> {
    s.ok(&["-n", ns, "get", KINDS, "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name} {end}"])
        .split_whitespace()
        .filter(|n| !n.ends_with("/kubernetes"))
        .map(String::from)
        .collect()
}

/// These tests count a namespace's objects: without nodes, the scheduler would add its
/// FailedScheduling events for the pods (as kube-scheduler does) at moments of its own, and
/// the workload controllers their ReplicaSets, pods and events.
const NO_SCHEDULER: &[&str] = &["--disable-scheduler", "--controllers=-deployment,-replicaset"];

#[test]
fn kubectl_delete_namespace_waits_until_its_objects_are_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), NO_SCHEDULER);
    s.ok(&["create", "namespace", "quick"]);
    apply(&s, tmp.path(), &contents("quick"));
    assert_eq!(names(&s, "quick").len(), 9, "{:?}", names(&s, "quick"));

    assert!(s.ok(&["delete", "namespace", "quick", "--timeout=60s"]).contains("namespace \"quick\" deleted"));
    assert!(s.fails(&["get", "namespace", "quick"]).contains("not found"));
    // The objects are gone from the store, not hidden: a new namespace of that name is empty.
    s.ok(&["create", "namespace", "quick"]);
    assert!(names(&s, "quick").is_empty(), "{:?}", names(&s, "quick"));
    // Other namespaces keep theirs.
    apply(&s, tmp.path(), &contents("default"));
    s.ok(&["delete", "namespace", "quick", "--timeout=60s"]);
    assert_eq!(names(&s, "default").len(), 9);
}

#[test]
fn a_terminating_namespace_refuses_new_objects_until_it_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), NO_SCHEDULER);
    s.ok(&["create", "namespace", "demo"]);
    apply(&s, tmp.path(), &contents("demo"));
    // An object held by a finalizer of its own keeps the namespace terminating.
    apply(
        &s,
        tmp.path(),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, namespace: demo, finalizers: [example.com/hold]}\n",
    );

    s.ok(&["delete", "namespace", "demo", "--wait=false"]);
    let ns: Value = serde_json::from_str(&s.ok(&["get", "namespace", "demo", "-o", "json"])).unwrap();
    assert!(ns["metadata"]["deletionTimestamp"].is_string(), "{ns}");
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert_eq!(ns["spec"]["finalizers"], serde_json::json!(["kubernetes"]));
    assert!(s.ok(&["get", "namespace", "demo"]).contains("Terminating"));

    // Everything else goes; the held object is marked and stays.
    s.ok(&[
        "-n",
        "demo",
        "wait",
        "--for=delete",
        "configmap/cfg",
        "secret/creds",
        "pod/solo",
        "deployment/web",
        "lease/lock",
        "--timeout=60s",
    ]);
    assert_eq!(names(&s, "demo"), ["ConfigMap/held"]);
    let held: Value = serde_json::from_str(&s.ok(&["-n", "demo", "get", "cm", "held", "-o", "json"])).unwrap();
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");

    let err = s.fails(&["-n", "demo", "create", "configmap", "late", "--from-literal=a=b"]);
    assert!(err.contains("Forbidden") || err.contains("forbidden"), "{err}");
    assert!(err.contains("unable to create new content in namespace demo because it is being terminated"), "{err}");
    // spec.finalizers change only through /finalize: an update cannot drop them.
    s.ok(&["patch", "namespace", "demo", "--type=merge", "-p", r#"{"spec":{"finalizers":[]}}"#]);
    assert!(s.ok(&["get", "namespace", "demo", "-o", "jsonpath={.spec.finalizers}"]).contains("kubernetes"));

    s.ok(&["-n", "demo", "patch", "cm", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    s.ok(&["wait", "--for=delete", "namespace/demo", "--timeout=60s"]);
    assert!(s.fails(&["get", "namespace", "demo"]).contains("not found"));
}

#[test]
fn the_system_namespaces_may_not_be_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), NO_SCHEDULER);
    for ns in ["default", "kube-system", "kube-public"] {
        let err = s.fails(&["delete", "namespace", ns]);
        assert!(err.contains("this namespace may not be deleted"), "{err}");
    }
    assert!(s.ok(&["get", "namespace", "default"]).contains("Active"));
}
