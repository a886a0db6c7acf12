//! PodDisruptionBudgets, the eviction API and `kubectl drain`, on one server and three fake
//! nodes shared by the cases (run in order in one test): the disruption controller computes
//! a budget's status from its Deployment's scale; an eviction the budget allows takes one
//! disruption in the budget's first write and deletes the pod; one it does not allow is a
//! 429 naming the budget's numbers; a pod under two budgets is kube's 500; `kubectl drain`
//! of a node under a Deployment whose budget allows nothing retries until the budget is
//! relaxed to `maxUnavailable: 1`, then finishes, never with fewer ready pods than the
//! budget wants; a drain with no budget finishes too.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::server::{FakeNodes, Server, free_port, wait_until};
use serde_json::{Value, json};

const NODES: usize = 3;

fn apply(s: &Server, dir: &std::path::Path, yaml: &str) {
    let path = dir.join("apply.yaml");
    std::fs::write(&path, yaml).unwrap();
    s.ok(&["apply", "-f", path.to_str().unwrap()]);
}

fn deployment(name: &str, ns: &str, replicas: usize) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
         spec: {{containers: [{{name: c, image: busybox}}]}}\n---\n"
    )
}

fn budget(name: &str, ns: &str, app: &str, rule: &str) -> String {
    format!(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec: {{{rule}, selector: {{matchLabels: {{app: {app}}}}}}}\n---\n"
    )
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The pods of `ns` (over HTTP: cheaper than kubectl, for the watching thread).
fn pods(s: &Server, token: &str, ns: &str) -> Vec<Value> {
    let (code, body) = s.request("GET", &format!("/api/v1/namespaces/{ns}/pods"), Some(token), None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["items"].as_array().unwrap().clone()
}

fn live_ready(pods: &[Value]) -> Vec<&Value> {
    pods.iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null() && is_ready(p)).collect()
}

fn pdb(s: &Server, ns: &str, name: &str) -> Value {
    s.json(&["get", "pdb", "-n", ns, name])
}

/// Waits until the budget's status is computed for its generation with these numbers.
fn settled(s: &Server, ns: &str, name: &str, expected: i64, desired: i64, allowed: i64) -> Value {
    wait_until(&format!("budget {name} has {expected} expected, {desired} desired, {allowed} allowed"), 60, || {
        let b = pdb(s, ns, name);
        let st = &b["status"];
        (st["observedGeneration"] == b["metadata"]["generation"]
            && st["expectedPods"] == expected
            && st["desiredHealthy"] == desired
            && st["currentHealthy"] == expected
            && st["disruptionsAllowed"] == allowed)
            .then_some(b)
    })
}

fn evict(s: &Server, token: &str, ns: &str, pod: &str) -> (u16, Value) {
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": ns}});
    let (code, out) = s.request(
        "POST",
        &format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction"),
        Some(token),
        Some(("application/json", body.to_string().as_bytes())),
    );
    (code, serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}")))
}

fn names(pods: &[&Value]) -> Vec<String> {
    pods.iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn budgets_are_computed_and_honoured_by_evictions_and_kubectl_drain() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Arc::new(Server::start(&tmp.path().join("data"), free_port(), &[]));
    let _fake = FakeNodes::start(&tmp.path().join("root"), &s.dir.join("admin.kubeconfig"), NODES);
    let nodes: Vec<String> = wait_until("the fake nodes are Ready", 60, || {
        let nodes = s.json(&["get", "nodes"])["items"].as_array().unwrap().clone();
        let ready: Vec<String> =
            nodes.iter().filter(|n| is_ready(n)).map(|n| n["metadata"]["name"].as_str().unwrap().to_string()).collect();
        (ready.len() == NODES).then_some(ready)
    });
    let token = s.admin_token();
    discovery_lists_eviction_as_kubectl_drain_looks_for_it(&s, &token);
    status_and_evictions(&s, tmp.path(), &token);
    drain_under_a_budget(&s, tmp.path(), &token, &nodes[0]);
    drain_without_a_budget(&s, tmp.path(), &token, &nodes[1]);
}

fn discovery_lists_eviction_as_kubectl_drain_looks_for_it(s: &Server, token: &str) {
    let (code, body) = s.request("GET", "/api/v1", Some(token), None);
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    let eviction = list["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods/eviction").unwrap();
    assert_eq!(
        (&eviction["group"], &eviction["version"], &eviction["kind"], &eviction["verbs"]),
        (&json!("policy"), &json!("v1"), &json!("Eviction"), &json!(["create"]))
    );
}

fn status_and_evictions(s: &Server, dir: &std::path::Path, token: &str) {
    s.ok(&["create", "namespace", "budgets"]);
    let mut yaml = deployment("web", "budgets", 3);
    yaml += &deployment("pct", "budgets", 4);
    yaml += &deployment("tight", "budgets", 2);
    yaml += &deployment("two", "budgets", 2);
    yaml += &budget("web", "budgets", "web", "minAvailable: 2");
    yaml += &budget("pct", "budgets", "pct", "maxUnavailable: 50%");
    yaml += &budget("tight", "budgets", "tight", "minAvailable: 2");
    yaml += &budget("two-a", "budgets", "two", "maxUnavailable: 1");
    yaml += &budget("two-b", "budgets", "two", "maxUnavailable: 1");
    apply(s, dir, &yaml);
    for d in ["web", "pct", "tight", "two"] {
        s.ok(&["rollout", "status", "-n", "budgets", &format!("deployment/{d}"), "--timeout=120s"]);
    }

    // Status, from the pods and (for a percentage) the Deployment's scale.
    let web = settled(s, "budgets", "web", 3, 2, 1);
    let cond =
        web["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "DisruptionAllowed").unwrap();
    assert_eq!((&cond["status"], &cond["reason"]), (&json!("True"), &json!("SufficientPods")), "{web}");
    settled(s, "budgets", "pct", 4, 2, 2);
    let tight = settled(s, "budgets", "tight", 2, 2, 0);
    let cond = &tight["status"]["conditions"][0];
    assert_eq!((&cond["status"], &cond["reason"]), (&json!("False"), &json!("InsufficientPods")), "{tight}");
    let table = s.ok(&["get", "pdb", "-n", "budgets"]);
    let header: Vec<&str> =
        table.lines().next().unwrap().split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["NAME", "MIN AVAILABLE", "MAX UNAVAILABLE", "ALLOWED DISRUPTIONS", "AGE"], "{table}");
    let pct_row = table.lines().find(|l| l.starts_with("pct ")).unwrap();
    assert_eq!(pct_row.split_whitespace().take(4).collect::<Vec<_>>(), ["pct", "N/A", "50%", "2"], "{table}");

    // Refused by the budget: 429 with kube's words and the budget's numbers.
    let all = pods(s, token, "budgets");
    let of = |app: &str| -> Vec<String> {
        names(&live_ready(&all).into_iter().filter(|p| p["metadata"]["labels"]["app"] == app).collect::<Vec<_>>())
    };
    let (code, status) = evict(s, token, "budgets", &of("tight")[0]);
    assert_eq!(code, 429, "{status}");
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["message"], "Cannot evict pod as it would violate the pod's disruption budget.");
    assert_eq!(
        status["details"]["causes"],
        json!([{"reason": "DisruptionBudget", "message": "The disruption budget tight needs 2 healthy pods and has 2 currently"}])
    );
    assert!(pdb(s, "budgets", "tight")["status"]["disruptedPods"].is_null());

    // Two budgets over one pod: kube's 500.
    let (code, status) = evict(s, token, "budgets", &of("two")[0]);
    assert_eq!(code, 500, "{status}");
    assert_eq!(
        (&status["status"], &status["message"]),
        (
            &json!("Failure"),
            &json!("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.")
        )
    );

    // Allowed: the budget's next write spends the disruption on this pod, then it goes.
    let before = web["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let victim = of("web")[0].clone();
    let (code, status) = evict(s, token, "budgets", &victim);
    assert_eq!((code, &status["status"]), (201, &json!("Success")), "{status}");
    let (code, events) = s.request(
        "GET",
        &format!(
            "/apis/policy/v1/namespaces/budgets/poddisruptionbudgets?watch=1&resourceVersion={before}&timeoutSeconds=2&fieldSelector=metadata.name%3Dweb"
        ),
        Some(token),
        None,
    );
    assert_eq!(code, 200, "{events}");
    let first: Value = serde_json::from_str(events.lines().next().unwrap()).unwrap();
    let st = &first["object"]["status"];
    assert_eq!(st["disruptionsAllowed"], 0, "{first}");
    assert!(st["disruptedPods"][&victim].is_string(), "{first}");
    assert_eq!(st["conditions"][0]["reason"], "InsufficientPods", "{first}");
    wait_until("the evicted pod is gone", 60, || {
        pods(s, token, "budgets").iter().all(|p| p["metadata"]["name"] != victim.as_str()).then_some(())
    });
    // Replaced, the budget allows one again, and the eviction is no longer counted.
    let web = settled(s, "budgets", "web", 3, 2, 1);
    assert!(web["status"]["disruptedPods"].as_object().is_none_or(|m| m.is_empty()), "{web}");

    // Bad budgets are refused as kube refuses them.
    let path = dir.join("bad.yaml");
    std::fs::write(&path, budget("bad", "budgets", "web", "minAvailable: 1, maxUnavailable: 1")).unwrap();
    let err = s.fails(&["apply", "-f", path.to_str().unwrap()]);
    assert!(err.contains("minAvailable and maxUnavailable cannot be both set"), "{err}");
    std::fs::write(&path, budget("bad", "budgets", "web", "maxUnavailable: 120%")).unwrap();
    let err = s.fails(&["apply", "-f", path.to_str().unwrap()]);
    assert!(err.contains("spec.maxUnavailable: Invalid value: \"120%\": must not be greater than 100%"), "{err}");

    s.ok(&["delete", "namespace", "budgets", "--timeout=120s"]);
}

/// Counts the ready, live pods of `ns` every 100 ms until stopped; answers the fewest seen.
fn watch_ready(
    s: Arc<Server>,
    token: String,
    ns: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut fewest = usize::MAX;
        while !stop.load(Ordering::SeqCst) {
            fewest = fewest.min(live_ready(&pods(&s, &token, ns)).len());
            std::thread::sleep(Duration::from_millis(100));
        }
        fewest
    })
}

fn drain_under_a_budget(s: &Arc<Server>, dir: &std::path::Path, token: &str, node: &str) {
    s.ok(&["create", "namespace", "drained"]);
    // First a budget that allows nothing: the drain must wait.
    apply(s, dir, &(deployment("app", "drained", 6) + &budget("app", "drained", "app", "minAvailable: 6")));
    s.ok(&["rollout", "status", "-n", "drained", "deployment/app", "--timeout=120s"]);
    settled(s, "drained", "app", 6, 6, 0);
    let mine = |all: &[Value]| all.iter().filter(|p| p["spec"]["nodeName"] == node).count();
    let on_node = mine(&pods(s, token, "drained"));
    assert!(on_node >= 2, "the scheduler spreads 6 pods over 3 nodes: {on_node} on {node}");

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_ready(s.clone(), token.to_string(), "drained", stop.clone());
    let (out_path, err_path) = (dir.join("drain.out"), dir.join("drain.err"));
    let mut drain = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(s.dir.join("admin.kubeconfig"))
        .args(["drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=180s"])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    wait_until("drain is refused by the budget and retries", 60, || {
        std::fs::read_to_string(&err_path)
            .unwrap()
            .contains("(will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.")
            .then_some(())
    });
    assert_eq!(drain.try_wait().unwrap(), None, "drain waits while the budget allows nothing");
    assert_eq!(mine(&pods(s, token, "drained")), on_node, "nothing left the node meanwhile");
    // The budget relaxed (a new generation), the retries go through.
    let relax = json!({"spec": {"minAvailable": null, "maxUnavailable": 1}}).to_string();
    s.ok(&["patch", "pdb", "-n", "drained", "app", "--type=merge", "-p", &relax]);
    let end = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = drain.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < end, "drain did not end");
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, Ordering::SeqCst);
    let fewest = watcher.join().unwrap();
    let (stdout, stderr) = (std::fs::read_to_string(&out_path).unwrap(), std::fs::read_to_string(&err_path).unwrap());
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("node/{node} cordoned")), "{stdout}");
    assert!(stdout.contains(&format!("node/{node} drained")), "{stdout}");
    // Through the eviction API (a drain without it says "deleting pod").
    assert!(stdout.contains("evicting pod drained/"), "{stdout}");
    assert_eq!(stdout.matches(" evicted").count(), on_node, "{stdout}");
    assert!(fewest >= 5, "{fewest} ready pods at one time, the budget wants 5");

    let n = s.json(&["get", "node", node]);
    assert_eq!(n["spec"]["unschedulable"], true);
    let all = pods(s, token, "drained");
    let ready = live_ready(&all);
    assert_eq!(ready.len(), 6, "{all:?}");
    assert!(ready.iter().all(|p| p["spec"]["nodeName"] != node), "{ready:?}");
    s.ok(&["delete", "namespace", "drained", "--timeout=120s"]);
}

fn drain_without_a_budget(s: &Arc<Server>, dir: &std::path::Path, token: &str, node: &str) {
    s.ok(&["create", "namespace", "plain"]);
    apply(s, dir, &deployment("free", "plain", 4));
    s.ok(&["rollout", "status", "-n", "plain", "deployment/free", "--timeout=120s"]);
    let out = s.ok(&["drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s"]);
    assert!(out.contains(&format!("node/{node} drained")), "{out}");
    wait_until("the free pods are ready on the nodes left", 60, || {
        let all = pods(s, token, "plain");
        let ready = live_ready(&all);
        (ready.len() == 4 && ready.iter().all(|p| p["spec"]["nodeName"] != node)).then_some(())
    });
}
