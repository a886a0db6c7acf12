//! The node lifecycle controller inside `nodectl server`, with short periods: two nodes
//! whose heartbeats (Leases in kube-node-lease) the test writes as kubelets would; one
//! stops. It becomes Ready=Unknown and tainted unreachable, its pods are marked not ready
//! and evicted after their tolerationSeconds (pods get 300 s by default, as from
//! kube-apiserver), a ReplicaSet's pod is replaced on the healthy node, and when the node is
//! back its taints go. Cordon and uncordon taint and untaint; when every node is silent
//! nothing is evicted.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::server::{Server, free_port};
use serde_json::{Value, json};

const FLAGS: &[&str] = &["--node-monitor-period=500ms", "--node-monitor-grace-period=3s", "--node-eviction-rate=10"];

fn apply(s: &Server, dir: &std::path::Path, yaml: &str) {
    let path = dir.join("apply.yaml");
    std::fs::write(&path, yaml).unwrap();
    s.ok(&["apply", "-f", path.to_str().unwrap()]);
}

fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn get(s: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&s.ok(&all)).unwrap()
}

fn now_micro() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A node with room for pods, Ready as a kubelet reports it.
fn node(s: &Server, dir: &std::path::Path, name: &str) {
    apply(
        s,
        dir,
        &format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n---\n\
         apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {name}, namespace: kube-node-lease}}\n\
         spec: {{holderIdentity: {name}, leaseDurationSeconds: 40, renewTime: \"{}\"}}\n",
            now_micro()
        ),
    );
    ready(s, name);
}

fn ready(s: &Server, name: &str) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let status = json!({"status": {
        "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    s.ok(&["patch", "node", name, "--subresource=status", "--type=merge", "-p", &status.to_string()]);
}

/// Renews the nodes' Leases every half second while their flag is up.
fn kubelets(
    s: Arc<Server>,
    nodes: Vec<(&'static str, Arc<AtomicBool>)>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let token = s.admin_token();
        while !stop.load(Ordering::SeqCst) {
            for (name, alive) in &nodes {
                if alive.load(Ordering::SeqCst) {
                    let body = json!({"spec": {"renewTime": now_micro()}}).to_string();
                    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}");
                    let (code, out) = s.request(
                        "PATCH",
                        &path,
                        Some(&token),
                        Some(("application/merge-patch+json", body.as_bytes())),
                    );
                    assert_eq!(code, 200, "{out}");
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })
}

fn pod(name: &str, node: &str, tolerations: &str, owner: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {name}}}{owner}}}\nspec:\n  nodeName: {node}\n  \
         tolerations: {tolerations}\n  containers: [{{name: c, image: busybox}}]\n---\n"
    )
}

fn set_running(s: &Server, name: &str) {
    let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
    s.ok(&["patch", "pod", name, "--subresource=status", "--type=merge", "-p", &status.to_string()]);
}

fn taints(s: &Server, node: &str) -> Vec<String> {
    let n = get(s, &["get", "node", node]);
    let mut t: Vec<String> = n["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{}:{}", t["key"].as_str().unwrap(), t["effect"].as_str().unwrap()))
        .collect();
    t.sort();
    t
}

fn ready_status(s: &Server, node: &str) -> String {
    let n = get(s, &["get", "node", node]);
    let c = n["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    c["status"].as_str().unwrap().to_string()
}

fn terminating(s: &Server, name: &str) -> bool {
    !get(s, &["get", "pod", name])["metadata"]["deletionTimestamp"].is_null()
}

#[test]
fn a_silent_node_is_unknown_tainted_and_its_pods_evicted_after_their_tolerations() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Arc::new(Server::start(&tmp.path().join("data"), free_port(), FLAGS));
    node(&s, tmp.path(), "good");
    node(&s, tmp.path(), "bad");
    let (good, bad, stop) =
        (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(false)));
    let renewer = kubelets(s.clone(), vec![("good", good.clone()), ("bad", bad.clone())], stop.clone());

    let fast = "[{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}]";
    let forever = "[{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute}]";
    let rs = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  \
              template:\n    metadata: {labels: {app: web}}\n    spec:\n      tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}]\n      \
              containers: [{name: c, image: busybox}]\n---\n";
    apply(
        &s,
        tmp.path(),
        &[
            rs,
            &pod("web", "bad", fast, ""),
            &pod("fast", "bad", fast, ""),
            &pod("forever", "bad", forever, ""),
            &pod("default", "bad", "[]", ""),
            &pod("safe", "good", "[]", ""),
        ]
        .concat(),
    );
    for p in ["web", "fast", "forever", "default", "safe"] {
        set_running(&s, p);
    }
    // The ReplicaSet adopts the pod "web" on the bad node and needs no other.
    wait_until("the ReplicaSet adopts web", || {
        (get(&s, &["get", "pod", "web"])["metadata"]["ownerReferences"][0]["name"] == "web").then_some(())
    });
    // kube-apiserver's DefaultTolerationSeconds: 300 s for a pod that had none.
    let tolerations = get(&s, &["get", "pod", "default"])["spec"]["tolerations"].clone();
    assert_eq!(
        tolerations,
        json!([
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}])
    );
    // Both nodes are heard from: no taints.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!((taints(&s, "good"), taints(&s, "bad")), (vec![], vec![]));

    bad.store(false, Ordering::SeqCst);
    wait_until("the silent node is Unknown", || (ready_status(&s, "bad") == "Unknown").then_some(()));
    let n = get(&s, &["get", "node", "bad"]);
    let c = n["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!(
        (c["reason"].as_str(), c["message"].as_str()),
        (Some("NodeStatusUnknown"), Some("Kubelet stopped posting node status."))
    );
    wait_until("the silent node is tainted", || {
        (taints(&s, "bad") == ["node.kubernetes.io/unreachable:NoExecute", "node.kubernetes.io/unreachable:NoSchedule"])
            .then_some(())
    });
    assert_eq!(ready_status(&s, "good"), "True");
    assert!(taints(&s, "good").is_empty());
    // Its pods are not ready; those on the good node are.
    wait_until("the silent node's pods are not ready", || {
        let p = get(&s, &["get", "pod", "forever"]);
        p["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "False")
            .then_some(())
    });
    // Evicted after their tolerationSeconds; tolerated for ever, or for 300 s, they stay.
    wait_until("fast is evicted", || terminating(&s, "fast").then_some(()));
    wait_until("the ReplicaSet's pod is evicted", || terminating(&s, "web").then_some(()));
    let events = s.ok(&["get", "events", "--field-selector", "reason=TaintManagerEviction"]);
    assert!(events.contains("Marking for deletion Pod default/fast"), "{events}");
    // The replacement runs on the healthy node (the silent one is tainted NoSchedule).
    let replacement = wait_until("the ReplicaSet's pod is replaced on the good node", || {
        let list = get(&s, &["get", "pods", "-l", "app=web"]);
        list["items"]
            .as_array()?
            .iter()
            .find(|p| p["metadata"]["name"] != "web" && p["spec"]["nodeName"] == "good")
            .cloned()
    });
    assert!(replacement["metadata"]["name"].as_str().unwrap().starts_with("web-"));
    assert!(!terminating(&s, "forever") && !terminating(&s, "default") && !terminating(&s, "safe"));

    // The node comes back: its taints go.
    bad.store(true, Ordering::SeqCst);
    ready(&s, "bad");
    wait_until("the node's taints go", || taints(&s, "bad").is_empty().then_some(()));

    // A cordon taints the node unschedulable; uncordon takes it away.
    s.ok(&["cordon", "good"]);
    wait_until("a cordoned node is tainted", || {
        (taints(&s, "good") == ["node.kubernetes.io/unschedulable:NoSchedule"]).then_some(())
    });
    s.ok(&["uncordon", "good"]);
    wait_until("an uncordoned node is not", || taints(&s, "good").is_empty().then_some(()));

    // A drain cordons the node and deletes its pods; the ReplicaSet's pod comes back on the
    // other node. (Without a kubelet here the pods go at once with a zero grace period.)
    let out = s.ok(&["drain", "good", "--force", "--grace-period=0", "--timeout=30s"]);
    assert!(out.contains("node/good drained"), "{out}");
    wait_until("the drained node's pods are gone", || {
        let list = get(&s, &["get", "pods", "--field-selector", "spec.nodeName=good"]);
        list["items"].as_array()?.is_empty().then_some(())
    });
    wait_until("the ReplicaSet's pod runs on the other node", || {
        let list = get(&s, &["get", "pods", "-l", "app=web"]);
        let items = list["items"].as_array()?;
        items
            .iter()
            .any(|p| p["spec"]["nodeName"] == "bad" && p["metadata"]["deletionTimestamp"].is_null())
            .then_some(())
    });
    s.ok(&["uncordon", "good"]);

    // Every node silent: more likely the server is cut off than all nodes dead; nothing
    // gets a NoExecute taint.
    good.store(false, Ordering::SeqCst);
    bad.store(false, Ordering::SeqCst);
    wait_until("both nodes are Unknown", || {
        (ready_status(&s, "good") == "Unknown" && ready_status(&s, "bad") == "Unknown").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    for n in ["good", "bad"] {
        assert_eq!(taints(&s, n), ["node.kubernetes.io/unreachable:NoSchedule"], "{n}");
    }
    stop.store(true, Ordering::SeqCst);
    renewer.join().unwrap();
}
