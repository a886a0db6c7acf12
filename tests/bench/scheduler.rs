//! `make bench`: the scheduler's decisions alone (no store, no API, no bindings), on an
//! in-memory snapshot of fake nodes: 10,000 pods of one ReplicaSet on 1,000 and on 5,000
//! nodes, each decision recorded before the next (as the scheduler loop records it before
//! writing the binding). The end-to-end figure (the loop, bindings in the store, fake node
//! daemons) comes with the scheduler loop; this one says what the decision core allows.
//!
//! Not a test: it asserts nothing about time.

use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod};
use nodectl::server::scheduler::{Scheduler, Snapshot};
use serde_json::json;

fn node(i: usize) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": format!("fake-{i}"), "labels": {"kubernetes.io/hostname": format!("fake-{i}"), "topology.kubernetes.io/zone": format!("z{}", i % 3)}},
        "spec": {},
        "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .unwrap()
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("web-{i}"), "namespace": "default", "uid": format!("uid-{i}"), "labels": {"app": "web"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs", "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    }))
    .unwrap()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    const PODS: usize = 10_000;
    let pods: Vec<Pod> = (0..PODS).map(pod).collect();
    println!("scheduler decisions (filters and scores on an in-memory snapshot), {PODS} pods:");
    for nodes in [1_000, 5_000] {
        let mut snapshot = Snapshot::default();
        for i in 0..nodes {
            snapshot.put_node(&node(i));
        }
        let mut scheduler = Scheduler::default();
        let start = Instant::now();
        for p in &pods {
            let at = scheduler.decide(&snapshot, p).expect("room for every pod");
            snapshot.place(&at, p);
        }
        let took = start.elapsed();
        println!(
            "  {nodes:>6} nodes   {:>10.0} pods/s   {:>8.1} us/pod   (aim: 5,000 pods/s end to end; kube-scheduler's CI floor 680 at 5,000 nodes)",
            PODS as f64 / took.as_secs_f64(),
            took.as_micros() as f64 / PODS as f64
        );
    }
}
