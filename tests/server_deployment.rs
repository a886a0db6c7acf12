//! The Deployment controller inside `nodectl server`, driven with the real kubectl as a
//! tutorial would: `rollout status`, `set image`, `rollout history|undo|pause|resume|
//! restart`, `scale`, a Recreate rollout, revisionHistoryLimit, and bad specs refused. No
//! node runs these pods; a thread plays the kubelet's part that matters here (a pod it sees
//! becomes Running and Ready through pods/status), and another watches that a rolling update
//! never has fewer ready pods than replicas - maxUnavailable, nor more than replicas +
//! maxSurge in all.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::server::{Server, free_port};
use serde_json::Value;

fn apply(s: &Server, dir: &std::path::Path, name: &str, yaml: &str) {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    s.ok(&["apply", "-f", path.to_str().unwrap()]);
}

fn deployment(name: &str, ns: &str, replicas: i64, strategy: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n{strategy}  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
         spec: {{containers: [{{name: c, image: busybox, command: [sleep, '3600']}}]}}\n"
    )
}

fn json(s: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&s.ok(&all)).unwrap()
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

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The live (not terminating) pods of namespace `ns`, over HTTP (cheaper than kubectl).
fn live_pods(s: &Server, token: &str, ns: &str) -> Vec<Value> {
    let (code, body) = s.request("GET", &format!("/api/v1/namespaces/{ns}/pods"), Some(token), None);
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    list["items"].as_array().unwrap().iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).cloned().collect()
}

/// Makes every pod of `ns` Running and Ready until `stop`, as a kubelet would report it.
fn kubelet(s: Arc<Server>, ns: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let token = s.admin_token();
        while !stop.load(Ordering::Relaxed) {
            for p in live_pods(&s, &token, ns).iter().filter(|p| !is_ready(p)) {
                let name = p["metadata"]["name"].as_str().unwrap();
                let now = chrono_now();
                let body = format!(
                    r#"{{"status":{{"phase":"Running","conditions":[{{"type":"Ready","status":"True","lastTransitionTime":"{now}"}}]}}}}"#
                );
                s.request(
                    "PATCH",
                    &format!("/api/v1/namespaces/{ns}/pods/{name}/status"),
                    Some(&token),
                    Some(("application/merge-patch+json", body.as_bytes())),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

fn chrono_now() -> String {
    let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Samples the pods of `ns` until `stop`: (fewest ready, most in all) seen.
fn watch_bounds(s: Arc<Server>, ns: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, usize)> {
    std::thread::spawn(move || {
        let token = s.admin_token();
        let (mut fewest_ready, mut most) = (usize::MAX, 0);
        while !stop.load(Ordering::Relaxed) {
            let pods = live_pods(&s, &token, ns);
            fewest_ready = fewest_ready.min(pods.iter().filter(|p| is_ready(p)).count());
            most = most.max(pods.len());
            std::thread::sleep(Duration::from_millis(20));
        }
        (fewest_ready, most)
    })
}

fn rollout_status(s: &Server, ns: &str, name: &str) {
    let out = s.ok(&["rollout", "status", &format!("deployment/{name}"), "-n", ns, "--timeout=60s"]);
    assert!(out.contains(&format!("deployment \"{name}\" successfully rolled out")), "{out}");
}

fn replica_sets(s: &Server, ns: &str) -> Vec<Value> {
    json(s, &["get", "rs", "-n", ns])["items"].as_array().unwrap().clone()
}

fn image_of(d: &Value) -> String {
    d["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap().to_string()
}

#[test]
fn a_deployment_rolls_out_scales_rolls_back_pauses_and_restarts_as_with_kubernetes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Arc::new(Server::start(&tmp.path().join("server"), free_port(), &["--disable-scheduler"]));
    s.ok(&["create", "namespace", "roll"]);
    let stop = Arc::new(AtomicBool::new(false));
    let kubelet = kubelet(s.clone(), "roll", stop.clone());

    apply(&s, tmp.path(), "web", &deployment("web", "roll", 4, ""));
    rollout_status(&s, "roll", "web");
    let d = json(&s, &["get", "deploy", "web", "-n", "roll"]);
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
    let st = &d["status"];
    assert_eq!(
        (st["replicas"].as_i64(), st["updatedReplicas"].as_i64(), st["availableReplicas"].as_i64()),
        (Some(4), Some(4), Some(4))
    );
    let reasons: BTreeSet<(String, String)> = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap().into(), c["reason"].as_str().unwrap().into()))
        .collect();
    assert!(reasons.contains(&("Available".into(), "MinimumReplicasAvailable".into())), "{reasons:?}");
    assert!(reasons.contains(&("Progressing".into(), "NewReplicaSetAvailable".into())), "{reasons:?}");
    let sets = replica_sets(&s, "roll");
    assert_eq!(sets.len(), 1);
    let first = sets[0]["metadata"]["name"].as_str().unwrap().to_string();
    let hash = sets[0]["metadata"]["labels"]["pod-template-hash"].as_str().unwrap().to_string();
    assert_eq!(first, format!("web-{hash}"));
    let table = s.ok(&["get", "deploy", "web", "-n", "roll"]);
    assert!(table.lines().nth(1).unwrap().split_whitespace().take(4).eq(["web", "4/4", "4", "4"]), "{table}");

    // A new image rolls out within maxSurge 1 and maxUnavailable 1 (25% of 4).
    let bounds_stop = Arc::new(AtomicBool::new(false));
    let bounds = watch_bounds(s.clone(), "roll", bounds_stop.clone());
    s.ok(&["set", "image", "deployment/web", "-n", "roll", "c=busybox:v2"]);
    rollout_status(&s, "roll", "web");
    bounds_stop.store(true, Ordering::Relaxed);
    let (fewest_ready, most) = bounds.join().unwrap();
    assert!(fewest_ready >= 3, "only {fewest_ready} pods were ready during the rollout (maxUnavailable 1 of 4)");
    assert!(most <= 5, "{most} pods existed during the rollout (maxSurge 1 over 4)");
    let pods = live_pods(&s, &s.admin_token(), "roll");
    assert_eq!(pods.len(), 4);
    assert!(pods.iter().all(|p| p["spec"]["containers"][0]["image"] == "busybox:v2"));
    let history = s.ok(&["rollout", "history", "deployment/web", "-n", "roll"]);
    let revisions: Vec<&str> =
        history.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| w.parse::<u32>().is_ok()).collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let described = s.ok(&["describe", "deploy", "web", "-n", "roll"]);
    for want in ["ScalingReplicaSet", &format!("Scaled down replica set {first} from 4 to"), "NewReplicaSetAvailable"] {
        assert!(described.contains(want), "no {want:?} in:\n{described}");
    }

    // Undo brings the first template back, as revision 3, on the first ReplicaSet.
    s.ok(&["rollout", "undo", "deployment/web", "-n", "roll"]);
    rollout_status(&s, "roll", "web");
    let d = json(&s, &["get", "deploy", "web", "-n", "roll"]);
    assert_eq!(image_of(&d), "busybox");
    assert_eq!(replica_sets(&s, "roll").len(), 2, "the first ReplicaSet is used again");
    let again = json(&s, &["get", "rs", &first, "-n", "roll"]);
    assert_eq!(again["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");
    assert_eq!(again["spec"]["replicas"], 4);
    let history = s.ok(&["rollout", "history", "deployment/web", "-n", "roll"]);
    let revisions: Vec<&str> =
        history.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| w.parse::<u32>().is_ok()).collect();
    assert_eq!(revisions, ["2", "3"], "{history}");

    // Scaled: the active ReplicaSet takes the new count.
    s.ok(&["scale", "deployment", "web", "-n", "roll", "--replicas=6"]);
    rollout_status(&s, "roll", "web");
    assert_eq!(live_pods(&s, &s.admin_token(), "roll").len(), 6);

    // Paused, a new image makes no ReplicaSet; resumed, it rolls out.
    s.ok(&["rollout", "pause", "deployment/web", "-n", "roll"]);
    s.ok(&["set", "image", "deployment/web", "-n", "roll", "c=busybox:v3"]);
    wait_until("the paused condition", 30, || {
        let d = json(&s, &["get", "deploy", "web", "-n", "roll"]);
        d["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused")
            .then_some(())
    });
    assert_eq!(replica_sets(&s, "roll").len(), 2);
    s.ok(&["rollout", "resume", "deployment/web", "-n", "roll"]);
    rollout_status(&s, "roll", "web");
    assert_eq!(replica_sets(&s, "roll").len(), 3);

    // A restart is a new template (an annotation with the time) and a new ReplicaSet.
    s.ok(&["rollout", "restart", "deployment/web", "-n", "roll"]);
    rollout_status(&s, "roll", "web");
    let pods = live_pods(&s, &s.admin_token(), "roll");
    assert_eq!(pods.len(), 6);
    assert!(pods.iter().all(|p| p["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string()));

    // revisionHistoryLimit 1: one old ReplicaSet is kept.
    s.ok(&["patch", "deployment", "web", "-n", "roll", "--type=merge", "-p", r#"{"spec":{"revisionHistoryLimit":1}}"#]);
    s.ok(&["set", "image", "deployment/web", "-n", "roll", "c=busybox:v4"]);
    rollout_status(&s, "roll", "web");
    wait_until("old ReplicaSets beyond the limit are deleted", 30, || {
        (replica_sets(&s, "roll").len() == 2).then_some(())
    });

    // Deleting the Deployment deletes its ReplicaSets and their pods.
    s.ok(&["delete", "deployment", "web", "-n", "roll"]);
    wait_until("everything is gone", 30, || {
        (replica_sets(&s, "roll").is_empty() && live_pods(&s, &s.admin_token(), "roll").is_empty()).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    kubelet.join().unwrap();
}

#[test]
fn a_recreate_rollout_never_runs_old_and_new_pods_together() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Arc::new(Server::start(&tmp.path().join("server"), free_port(), &["--disable-scheduler"]));
    s.ok(&["create", "namespace", "rec"]);
    let stop = Arc::new(AtomicBool::new(false));
    let kubelet = kubelet(s.clone(), "rec", stop.clone());
    apply(&s, tmp.path(), "db", &deployment("db", "rec", 3, "  strategy: {type: Recreate}\n"));
    rollout_status(&s, "rec", "db");
    let mixed = Arc::new(AtomicBool::new(false));
    let (sampler_stop, m) = (Arc::new(AtomicBool::new(false)), mixed.clone());
    let sampler = {
        let (s, stop) = (s.clone(), sampler_stop.clone());
        std::thread::spawn(move || {
            let token = s.admin_token();
            while !stop.load(Ordering::Relaxed) {
                let images: BTreeSet<String> = live_pods(&s, &token, "rec")
                    .iter()
                    .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap().to_string())
                    .collect();
                if images.len() > 1 {
                    m.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    s.ok(&["set", "image", "deployment/db", "-n", "rec", "c=busybox:v2"]);
    rollout_status(&s, "rec", "db");
    sampler_stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert!(!mixed.load(Ordering::Relaxed), "old and new pods ran together in a Recreate rollout");
    let pods = live_pods(&s, &s.admin_token(), "rec");
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| p["spec"]["containers"][0]["image"] == "busybox:v2"));
    stop.store(true, Ordering::Relaxed);
    kubelet.join().unwrap();
}

#[test]
fn bad_deployments_are_refused_with_kubes_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("server"), free_port(), &["--disable-scheduler"]);
    let path = tmp.path().join("bad.yaml");
    let cases = [
        (
            deployment("bad", "default", 1, "  strategy: {type: Sideways}\n"),
            "spec.strategy.type: Unsupported value: \"Sideways\": supported values: \"Recreate\", \"RollingUpdate\"",
        ),
        (
            deployment("bad", "default", 1, "  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 0}}\n"),
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
        ),
        (deployment("bad", "default", -1, ""), "spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
        (
            deployment("bad", "default", 1, "").replace("labels: {app: bad}", "labels: {app: other}"),
            "`selector` does not match template `labels`",
        ),
    ];
    for (yaml, want) in cases {
        std::fs::write(&path, yaml).unwrap();
        let err = s.fails(&["apply", "-f", path.to_str().unwrap()]);
        assert!(err.contains(want), "{err}");
    }
    assert!(!s.ok(&["get", "deploy", "-A"]).contains("bad"));
}
