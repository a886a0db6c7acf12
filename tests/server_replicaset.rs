//! The ReplicaSet controller inside `nodectl server`, driven with the real kubectl: a
//! ReplicaSet keeps its replicas (scaled up and down, a deleted pod replaced), adopts a
//! matching orphan and releases a pod relabelled away, deletes not-ready pods before ready
//! ones, reports its status and events as Kubernetes does, and after a kill -9 in the middle
//! of creating 1,000 pods ends with exactly 1,000 and never deleted one (the proof that it never
//! created one too many). No node runs these pods: a pod's readiness is written through
//! pods/status as a kubelet would.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::server::{Server, free_port};
use serde_json::Value;

fn apply(s: &Server, dir: &std::path::Path, name: &str, yaml: &str) {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    s.ok(&["apply", "-f", path.to_str().unwrap()]);
}

fn replicaset(name: &str, ns: &str, replicas: i64) -> String {
    format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}, tier: front}}}}\n    \
         spec: {{containers: [{{name: c, image: busybox, command: [sleep, '3600']}}]}}\n"
    )
}

fn json(s: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&s.ok(&all)).unwrap()
}

/// The pods of namespace `ns` labelled app=`app`.
fn pods(s: &Server, ns: &str, app: &str) -> Vec<Value> {
    let l = format!("app={app}");
    json(s, &["get", "pods", "-n", ns, "-l", &l])["items"].as_array().unwrap().clone()
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap().to_string()
}

fn controller_uid(p: &Value) -> Option<String> {
    p["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .map(|r| r["uid"].as_str().unwrap().to_string())
}

fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the ReplicaSet owns exactly `n` live pods and its status says so; answers them.
fn settled(s: &Server, ns: &str, rs: &str, n: usize) -> Vec<Value> {
    let uid = json(s, &["get", "rs", rs, "-n", ns])["metadata"]["uid"].as_str().unwrap().to_string();
    wait_until(&format!("{rs} owns {n} pods"), 60, || {
        let owned: Vec<Value> = pods(s, ns, rs)
            .into_iter()
            .filter(|p| controller_uid(p).as_deref() == Some(&uid) && p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let status = json(s, &["get", "rs", rs, "-n", ns])["status"].clone();
        (owned.len() == n && status["replicas"] == n).then_some(owned)
    })
}

fn make_ready(s: &Server, ns: &str, pod: &str) {
    let patch = r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#;
    s.ok(&["patch", "pod", pod, "-n", ns, "--subresource=status", "--type=merge", "-p", patch]);
}

#[test]
fn a_replicaset_keeps_its_replicas_adopts_releases_and_deletes_unready_pods_first() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("server"), free_port(), &["--disable-scheduler"]);
    s.ok(&["create", "namespace", "rs1"]);
    apply(&s, tmp.path(), "web", &replicaset("web", "rs1", 3));
    let rs = json(&s, &["get", "rs", "web", "-n", "rs1"]);
    let first = settled(&s, "rs1", "web", 3);
    for p in &first {
        assert!(name(p).starts_with("web-") && name(p).len() == "web-".len() + 5, "{}", name(p));
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&owner["kind"], &owner["name"], &owner["blockOwnerDeletion"]),
            (&Value::from("ReplicaSet"), &Value::from("web"), &Value::from(true))
        );
        assert_eq!(p["metadata"]["labels"]["tier"], "front");
        assert_eq!(p["spec"]["containers"][0]["command"][1], "3600");
    }
    let status = json(&s, &["get", "rs", "web", "-n", "rs1"])["status"].clone();
    assert_eq!(status["fullyLabeledReplicas"], 3);
    assert_eq!(status["observedGeneration"], rs["metadata"]["generation"]);

    // Scaled up, and a deleted pod replaced.
    s.ok(&["scale", "rs", "web", "-n", "rs1", "--replicas=5"]);
    let five = settled(&s, "rs1", "web", 5);
    let gone = name(&five[0]);
    s.ok(&["delete", "pod", &gone, "-n", "rs1"]);
    let five = settled(&s, "rs1", "web", 5);
    assert!(five.iter().all(|p| name(p) != gone));

    // Two pods become ready; scaled down to two, those two stay and readiness is counted.
    let ready: BTreeSet<String> = five.iter().take(2).map(name).collect();
    for p in &ready {
        make_ready(&s, "rs1", p);
    }
    s.ok(&["scale", "rs", "web", "-n", "rs1", "--replicas=2"]);
    let two: BTreeSet<String> = settled(&s, "rs1", "web", 2).iter().map(name).collect();
    assert_eq!(two, ready, "the not-ready pods go first");
    wait_until("the status counts 2 ready", 30, || {
        let st = json(&s, &["get", "rs", "web", "-n", "rs1"])["status"].clone();
        (st["readyReplicas"] == 2 && st["availableReplicas"] == 2).then_some(())
    });
    let table = s.ok(&["get", "rs", "web", "-n", "rs1"]);
    assert!(table.lines().nth(1).unwrap().split_whitespace().take(4).eq(["web", "2", "2", "2"]), "{table}");

    // A matching orphan is adopted, which makes one too many: the orphan (not ready) goes.
    apply(
        &s,
        tmp.path(),
        "stray",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: stray, namespace: rs1, labels: {app: web}}\n\
         spec: {containers: [{name: c, image: busybox}]}\n",
    );
    wait_until("the orphan is adopted and deleted", 30, || {
        let out = s.kubectl(&["get", "pod", "stray", "-n", "rs1"]);
        (!out.status.success()).then_some(())
    });
    let two: BTreeSet<String> = settled(&s, "rs1", "web", 2).iter().map(name).collect();
    assert_eq!(two, ready);

    // A pod relabelled away is released (no owner any more) and replaced.
    let moved = ready.iter().next().unwrap().clone();
    s.ok(&["label", "pod", &moved, "-n", "rs1", "app=elsewhere", "--overwrite"]);
    let after = settled(&s, "rs1", "web", 2);
    assert!(after.iter().all(|p| name(p) != moved));
    let released = wait_until("the relabelled pod is released", 30, || {
        let p = json(&s, &["get", "pod", &moved, "-n", "rs1"]);
        p["metadata"]["ownerReferences"].is_null().then_some(p)
    });
    assert_eq!(released["metadata"]["labels"]["app"], "elsewhere");

    // Kubernetes' events, as `kubectl describe` shows them.
    let described = s.ok(&["describe", "rs", "web", "-n", "rs1"]);
    for want in ["SuccessfulCreate", "Created pod: web-", "SuccessfulDelete", "Deleted pod: stray"] {
        assert!(described.contains(want), "no {want:?} in:\n{described}");
    }

    // Deleting the ReplicaSet deletes its pods (the garbage collector), not the released one.
    s.ok(&["delete", "rs", "web", "-n", "rs1"]);
    wait_until("the owned pods are gone", 30, || pods(&s, "rs1", "web").is_empty().then_some(()));
    s.ok(&["get", "pod", &moved, "-n", "rs1"]);
}

#[test]
fn bad_replicasets_are_refused_with_kubes_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("server"), free_port(), &["--disable-scheduler"]);
    let path = tmp.path().join("bad.yaml");
    let good = replicaset("bad", "default", 1);
    std::fs::write(&path, good.replace("app: bad, tier", "app: other, tier")).unwrap();
    let err = s.fails(&["apply", "-f", path.to_str().unwrap()]);
    assert!(
        err.contains("spec.template.metadata.labels") && err.contains("`selector` does not match template `labels`"),
        "{err}"
    );
    std::fs::write(&path, good.replace("replicas: 1", "replicas: -2")).unwrap();
    let err = s.fails(&["apply", "-f", path.to_str().unwrap()]);
    assert!(err.contains("spec.replicas: Invalid value: -2: must be greater than or equal to 0"), "{err}");
    assert!(s.ok(&["get", "rs", "-A"]).trim().is_empty() || !s.ok(&["get", "rs", "-A"]).contains("bad"));
}

#[test]
fn a_server_killed_while_creating_1000_pods_ends_with_exactly_1000_and_deletes_none() {
    const N: usize = 1000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("server");
    let port = free_port();
    let s = Server::start(&dir, port, &["--disable-scheduler"]);
    s.ok(&["create", "namespace", "big"]);
    let token = s.admin_token();
    apply(&s, tmp.path(), "many", &replicaset("many", "big", N as i64));
    // Killed as soon as the first pod exists: in the middle of the creations.
    wait_until("the first pod exists", 60, || {
        let (code, body) = s.request("GET", "/api/v1/namespaces/big/pods?limit=1", Some(&token), None);
        (code == 200 && body.contains("many-")).then_some(())
    });
    s.stop();
    let s = Server::start(&dir, port, &["--disable-scheduler"]);
    let at_restart = pods(&s, "big", "many").len();
    assert!(at_restart < N, "the kill came after all {N} creations; nothing was tested");
    settled(&s, "big", "many", N);
    assert_eq!(pods(&s, "big", "many").len(), N);
    let events = json(&s, &["get", "events", "-n", "big"]);
    let deletes: Vec<&Value> =
        events["items"].as_array().unwrap().iter().filter(|e| e["reason"] == "SuccessfulDelete").collect();
    assert!(
        deletes.is_empty(),
        "pods were deleted, so too many were created ({at_restart} at the restart): {deletes:#?}"
    );
}
