//! `--event-ttl`: Events (core/v1 and events.k8s.io/v1) go away that long after their last
//! write, as ordinary deletes that watchers see, and nothing else does.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::server::{Server, free_port, wait_until};

const EVENTS: &str = r#"
apiVersion: v1
kind: Event
metadata: {name: core-event, namespace: ttl}
involvedObject: {kind: ConfigMap, name: keep, namespace: ttl, apiVersion: v1}
reason: Testing
message: a core/v1 Event
type: Normal
source: {component: the-test}
---
apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: new-event, namespace: ttl}
eventTime: "2026-01-01T00:00:00.000000Z"
reportingController: example.com/the-test
reportingInstance: the-test-1
action: Testing
reason: Testing
note: an events.k8s.io/v1 Event
type: Normal
regarding: {kind: ConfigMap, name: keep, namespace: ttl, apiVersion: v1}
"#;

#[test]
fn events_expire_after_the_event_ttl_and_a_watch_sees_them_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &["--event-ttl", "2s"]);
    s.ok(&["create", "namespace", "ttl"]);
    let rv = s.ok(&["-n", "ttl", "create", "configmap", "keep", "-o", "jsonpath={.metadata.resourceVersion}"]);
    // A watch from before the Events were made sees them come and go.
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(s.dir.join("admin.kubeconfig"))
        .args(["get", "--raw", &format!("/api/v1/namespaces/ttl/events?watch=true&resourceVersion={rv}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(watch.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
    let reader = std::thread::spawn(move || {
        for line in lines.lines() {
            let Ok(line) = line else { break };
            let Ok(e) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            let (kind, name) =
                (e["type"].as_str().unwrap_or(""), e["object"]["metadata"]["name"].as_str().unwrap_or(""));
            if tx.send((kind.to_string(), name.to_string())).is_err() {
                break;
            }
        }
    });
    let file = tmp.path().join("events.yaml");
    std::fs::write(&file, EVENTS).unwrap();
    s.ok(&["create", "-f", file.to_str().unwrap()]);
    let mut seen = Vec::new();
    wait_until("the watch sees both Events added and deleted", 120, || {
        seen.extend(rx.try_iter());
        let has = |kind: &str, name: &str| seen.iter().any(|(k, n)| k == kind && n == name);
        (has("ADDED", "core-event")
            && has("ADDED", "new-event")
            && has("DELETED", "core-event")
            && has("DELETED", "new-event"))
        .then_some(())
    });
    wait_until("no Event is left", 60, || {
        s.ok(&["-n", "ttl", "get", "events", "-o", "name"]).trim().is_empty().then_some(())
    });
    assert!(s.ok(&["-n", "ttl", "get", "events.v1.events.k8s.io", "-o", "name"]).trim().is_empty());
    // Other kinds stay.
    assert_eq!(s.ok(&["-n", "ttl", "get", "configmap", "keep", "-o", "name"]).trim(), "configmap/keep");
    watch.kill().unwrap();
    watch.wait().unwrap();
    reader.join().unwrap();
}
