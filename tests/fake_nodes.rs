//! Fake nodes (`nodectl daemon --fake --count N`, as kwok's): they register, hold Leases,
//! and report their pods Running with addresses of their own, so that a Deployment rolls
//! out, spreads and scales down on them as on real nodes, with no process started.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use common::server::{FakeNodes, Server, free_port, wait_until};
use serde_json::Value;

const NODES: usize = 20;

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().unwrap().clone()
}

fn running(pods: &[Value]) -> usize {
    pods.iter().filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()).count()
}

#[test]
fn a_deployment_runs_spreads_and_scales_down_on_fake_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let kubeconfig = s.dir.join("admin.kubeconfig");
    let bad = Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .args(["--root"])
        .arg(tmp.path().join("root"))
        .args(["daemon", "--fake", "--count", "0", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--count: 0 is not between 1 and"), "{bad:?}");

    let _fake = FakeNodes::start(&tmp.path().join("root"), &kubeconfig, NODES);
    let nodes = wait_until("the fake nodes are Ready", 60, || {
        let nodes = items(&s.json(&["get", "nodes"]));
        let ready = nodes.iter().filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        (ready.count() == NODES).then_some(nodes)
    });
    let n = &nodes[0];
    assert_eq!(n["status"]["capacity"]["cpu"], "32");
    assert_eq!(n["status"]["allocatable"]["pods"], "110");
    assert!(n["status"]["addresses"][0]["address"].as_str().unwrap().starts_with("198.18.0."));
    wait_until("every fake node holds a Lease", 30, || {
        let leases = items(&s.json(&["get", "leases", "-n", "kube-node-lease"]));
        (leases
            .iter()
            .filter(|l| l["spec"]["holderIdentity"].as_str().is_some_and(|h| h.starts_with("fake-node-")))
            .count()
            == NODES)
            .then_some(())
    });

    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 60\n  selector: {matchLabels: {app: web}}\n  \
                template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: c, image: busybox, resources: {requests: {cpu: 100m}}}]\n";
    let file = tmp.path().join("web.yaml");
    std::fs::write(&file, yaml).unwrap();
    s.ok(&["apply", "-f", file.to_str().unwrap()]);
    let out = s.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert!(out.contains("successfully rolled out"), "{out}");

    let pods = items(&s.json(&["get", "pods", "-l", "app=web"]));
    assert_eq!(running(&pods), 60);
    let ips: BTreeSet<&str> = pods.iter().map(|p| p["status"]["podIP"].as_str().unwrap()).collect();
    assert_eq!(ips.len(), 60, "each pod has an address of its own");
    assert!(ips.iter().all(|ip| ip.starts_with("100.64.")), "{ips:?}");
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &pods {
        *per_node.entry(p["spec"]["nodeName"].as_str().unwrap()).or_default() += 1;
        assert_eq!(p["status"]["containerStatuses"][0]["ready"], true);
    }
    // The scheduler spreads one owner's pods: 3 on each of the 20 nodes.
    assert_eq!(per_node.len(), NODES, "{per_node:?}");
    assert!(per_node.values().all(|&c| c == 3), "{per_node:?}");

    // A fake node serves no logs: the server says why instead of hanging or 404.
    let one = pods[0]["metadata"]["name"].as_str().unwrap();
    let err = s.fails(&["logs", one]);
    assert!(err.contains("reports no daemon endpoint"), "{err}");

    // Scaled down, the pods deleted gracefully are gone for good (the fake kubelet confirms).
    s.ok(&["scale", "deployment/web", "--replicas=10"]);
    wait_until("10 pods remain, none Terminating", 60, || {
        let pods = items(&s.json(&["get", "pods", "-l", "app=web"]));
        (pods.len() == 10 && running(&pods) == 10).then_some(())
    });
}
