//! The garbage collector and propagation policies, driven by the real kubectl: a
//! ReplicaSet owning Pods through ownerReferences set in the manifests, deleted with
//! `--cascade=background|foreground|orphan`; objects whose owner never existed or went
//! while the server was down are collected; kubectl's waits return. The workload
//! controllers are off (`--controllers=*,-replicaset,-deployment`): these pods are the test's own.

mod common;

use std::fs;
use std::path::Path;

use common::server::{Server, free_port};
use serde_json::Value;

const RS: &str = "
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers: [{name: c, image: busybox}]
";

/// A Pod owned by the ReplicaSet `uid`; `extra` goes into its metadata.
fn pod(name: &str, owner_uid: &str, block: bool, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: web}}\n{extra}  ownerReferences:\n  - {{apiVersion: apps/v1, kind: ReplicaSet, name: web, uid: \"{owner_uid}\", controller: true, blockOwnerDeletion: {block}}}\nspec:\n  containers: [{{name: c, image: busybox}}]\n---\n"
    )
}

fn apply(s: &Server, dir: &Path, yaml: &str) {
    let file = dir.join("apply.yaml");
    fs::write(&file, yaml).unwrap();
    s.ok(&["apply", "-f", file.to_str().unwrap()]);
}

/// The ReplicaSet, and the uid the pods name as their owner.
fn replicaset(s: &Server, dir: &Path) -> String {
    apply(s, dir, RS);
    s.ok(&["get", "rs", "web", "-o", "jsonpath={.metadata.uid}"])
}

fn json(s: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&s.ok(&all)).unwrap()
}

fn pod_names(s: &Server) -> Vec<String> {
    s.ok(&["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]).split_whitespace().map(String::from).collect()
}

#[test]
fn background_deletes_the_owner_at_once_and_collects_its_dependents() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &["--controllers=*,-replicaset,-deployment"]);
    let uid = replicaset(&s, tmp.path());
    apply(&s, tmp.path(), &[pod("web-a", &uid, true, ""), pod("web-b", &uid, false, "")].concat());
    apply(
        &s,
        tmp.path(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: solo}\nspec:\n  containers: [{name: c, image: busybox}]\n",
    );

    // kubectl's default cascade is background.
    assert!(s.ok(&["delete", "rs", "web"]).contains("replicaset.apps \"web\" deleted"));
    assert!(s.fails(&["get", "rs", "web"]).contains("not found"));
    s.ok(&["wait", "--for=delete", "pod/web-a", "pod/web-b", "--timeout=60s"]);
    assert_eq!(pod_names(&s), ["solo"], "a pod without an owner stays");
}

#[test]
fn foreground_deletes_dependents_first_and_blocking_ones_hold_the_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &["--controllers=*,-replicaset,-deployment"]);
    let uid = replicaset(&s, tmp.path());
    let held = "  finalizers: [example.com/hold]\n";
    apply(
        &s,
        tmp.path(),
        &[pod("web-a", &uid, true, held), pod("web-b", &uid, true, ""), pod("web-c", &uid, false, "")].concat(),
    );

    s.ok(&["delete", "rs", "web", "--cascade=foreground", "--wait=false"]);
    // The dependents go; the owner stays, marked, while web-a (blocking, held by its own
    // finalizer) is still there.
    s.ok(&["wait", "--for=delete", "pod/web-b", "pod/web-c", "--timeout=60s"]);
    let a = json(&s, &["get", "pod", "web-a"]);
    assert!(a["metadata"]["deletionTimestamp"].is_string(), "web-a was not deleted: {a}");
    let rs = json(&s, &["get", "rs", "web"]);
    assert!(rs["metadata"]["deletionTimestamp"].is_string(), "{rs}");
    assert_eq!(rs["metadata"]["finalizers"], serde_json::json!(["foregroundDeletion"]));

    // Releasing web-a releases the owner; kubectl's wait sees both go.
    s.ok(&["patch", "pod", "web-a", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    s.ok(&["wait", "--for=delete", "rs/web", "pod/web-a", "--timeout=60s"]);
    assert!(pod_names(&s).is_empty());

    // kubectl delete waits for a foreground deletion: when it returns, the blocking
    // dependents are gone already.
    let uid = replicaset(&s, tmp.path());
    apply(&s, tmp.path(), &[pod("web-d", &uid, true, ""), pod("web-e", &uid, true, "")].concat());
    assert!(s.ok(&["delete", "rs", "web", "--cascade=foreground", "--timeout=60s"]).contains("deleted"));
    assert!(pod_names(&s).is_empty(), "{:?}", pod_names(&s));
}

#[test]
fn orphan_keeps_the_dependents_and_drops_their_owner_references() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &["--controllers=*,-replicaset,-deployment"]);
    let uid = replicaset(&s, tmp.path());
    apply(&s, tmp.path(), &[pod("web-a", &uid, true, ""), pod("web-b", &uid, false, "")].concat());
    // A second owner that stays: web-b keeps its reference to it.
    apply(&s, tmp.path(), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keeper}\n");
    let keeper = s.ok(&["get", "cm", "keeper", "-o", "jsonpath={.metadata.uid}"]);
    s.ok(&[
        "patch", "pod", "web-b", "--type=json", "-p",
        &format!(r#"[{{"op":"add","path":"/metadata/ownerReferences/-","value":{{"apiVersion":"v1","kind":"ConfigMap","name":"keeper","uid":"{keeper}"}}}}]"#),
    ]);

    // kubectl waits for the owner to go, which it does only after its dependents let go of it.
    assert!(s.ok(&["delete", "rs", "web", "--cascade=orphan", "--timeout=60s"]).contains("deleted"));
    assert!(s.fails(&["get", "rs", "web"]).contains("not found"));
    assert_eq!(pod_names(&s), ["web-a", "web-b"]);
    let a = json(&s, &["get", "pod", "web-a"]);
    assert!(a["metadata"].get("ownerReferences").is_none(), "{a}");
    let b = json(&s, &["get", "pod", "web-b"]);
    let refs: Vec<&str> =
        b["metadata"]["ownerReferences"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(refs, ["keeper"]);

    // The orphans are nobody's now: deleting the ConfigMap takes web-b only.
    s.ok(&["delete", "cm", "keeper"]);
    s.ok(&["wait", "--for=delete", "pod/web-b", "--timeout=60s"]);
    assert_eq!(pod_names(&s), ["web-a"]);
}

#[test]
fn dependents_of_owners_that_never_were_or_went_while_the_server_was_down_are_collected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_port();
    let s = Server::start(&dir, port, &["--controllers=*,-replicaset,-deployment"]);
    // An owner reference to a uid that no object has.
    apply(&s, tmp.path(), &pod("stray", "00000000-0000-0000-0000-000000000000", false, ""));
    s.ok(&["wait", "--for=delete", "pod/stray", "--timeout=60s"]);

    let uid = replicaset(&s, tmp.path());
    apply(&s, tmp.path(), &[pod("web-a", &uid, true, ""), pod("web-b", &uid, false, "")].concat());
    s.stop();
    // The owner goes behind the server's back: no event will ever tell the next server.
    {
        use nodectl::server::store::Backend;
        use nodectl::server::store::sqlite::{CompactionPolicy, Sqlite};
        let store = Sqlite::open(&dir.join("state.db"), CompactionPolicy::default()).unwrap();
        store.delete("/registry/apps/replicasets/default/web", None).unwrap();
    }
    let s = Server::start(&dir, port, &["--controllers=*,-replicaset,-deployment"]);
    s.ok(&["wait", "--for=delete", "pod/web-a", "pod/web-b", "--timeout=60s"]);
    assert!(pod_names(&s).is_empty());
}
