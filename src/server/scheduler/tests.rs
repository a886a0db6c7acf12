use serde_json::{Value, json};

use super::*;
use k8s_openapi::api::core::v1::Node;

fn node(name: &str, cpu: &str, memory: &str, extra: Value) -> Node {
    let mut n = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]},
    });
    merge(&mut n, extra);
    serde_json::from_value(n).unwrap()
}

fn pod(name: &str, extra: Value) -> Pod {
    let mut p = json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    });
    merge(&mut p, extra);
    serde_json::from_value(p).unwrap()
}

fn merge(base: &mut Value, extra: Value) {
    crate::server::registry::patch::merge_patch(base, &extra);
}

fn owned(name: &str) -> Pod {
    pod(
        name,
        json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "rs-1", "controller": true}]}}),
    )
}

fn cluster(nodes: &[Node]) -> Snapshot {
    let mut s = Snapshot::default();
    for n in nodes {
        s.put_node(n);
    }
    s
}

/// Schedules `pods` one after the other, placing each; the node each went to.
fn place_all(s: &mut Snapshot, pods: &[Pod]) -> Vec<Result<String, Unschedulable>> {
    let mut sched = Scheduler::default();
    pods.iter()
        .map(|p| {
            let d = sched.decide(s, p);
            if let Ok(n) = &d {
                s.place(n, p);
            }
            d
        })
        .collect()
}

#[test]
fn six_replicas_of_one_owner_spread_two_by_two_over_three_equal_nodes() {
    let mut s = cluster(&[
        node("a", "4", "8Gi", json!({})),
        node("b", "4", "8Gi", json!({})),
        node("c", "4", "8Gi", json!({})),
    ]);
    let pods: Vec<Pod> = (0..6).map(|i| owned(&format!("web-{i}"))).collect();
    let mut per_node = BTreeMap::new();
    for d in place_all(&mut s, &pods) {
        *per_node.entry(d.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "{per_node:?}");
}

#[test]
fn a_pod_that_fits_nowhere_names_each_nodes_reason_as_kube_scheduler_does() {
    let s = cluster(&[
        node("a", "4", "1Gi", json!({})),
        node("b", "4", "1Gi", json!({})),
        node(
            "c",
            "4",
            "64Gi",
            json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
        ),
    ]);
    let big = pod(
        "big",
        json!({"spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"memory": "2Gi"}}}]}}),
    );
    let err = Scheduler::default().decide(&s, &big).unwrap_err();
    assert_eq!(
        err.to_string(),
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 2 Insufficient memory."
    );
    let tolerant = pod(
        "t",
        json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}],
        "containers": [{"name": "c", "image": "x", "resources": {"requests": {"memory": "2Gi"}}}]}}),
    );
    assert_eq!(Scheduler::default().decide(&s, &tolerant).unwrap(), "c");
    assert_eq!(
        Scheduler::default().decide(&Snapshot::default(), &big).unwrap_err().to_string(),
        "no nodes available to schedule pods"
    );
}

#[test]
fn every_shortage_of_a_node_is_counted_and_requests_add_up_as_pods_are_placed() {
    let mut s = cluster(&[node("a", "1", "1Gi", json!({}))]);
    let half = |n: &str| {
        pod(
            n,
            json!({"spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}]}}),
        )
    };
    let got = place_all(&mut s, &[half("p1"), half("p2"), half("p3")]);
    assert!(got[0].is_ok() && got[1].is_ok());
    assert_eq!(
        got[2].as_ref().unwrap_err().to_string(),
        "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."
    );
    s.unplace("uid-p1");
    assert!(Scheduler::default().decide(&s, &half("p3")).is_ok(), "a deleted pod's requests are given back");
}

#[test]
fn node_selectors_required_affinity_and_cordons_are_obeyed() {
    let s = cluster(&[
        node("a", "4", "8Gi", json!({"metadata": {"labels": {"disk": "ssd", "zone": "z1"}}})),
        node("b", "4", "8Gi", json!({"metadata": {"labels": {"disk": "hdd", "zone": "z2"}}})),
        node("c", "4", "8Gi", json!({"metadata": {"labels": {"disk": "ssd"}}, "spec": {"unschedulable": true}})),
    ]);
    let ssd = pod("p", json!({"spec": {"nodeSelector": {"disk": "ssd"}}}));
    assert_eq!(Scheduler::default().decide(&s, &ssd).unwrap(), "a");
    let z2 = pod(
        "p",
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z2"]}]}]}}}}}),
    );
    assert_eq!(Scheduler::default().decide(&s, &z2).unwrap(), "b");
    let nowhere = pod("p", json!({"spec": {"nodeSelector": {"disk": "nvme"}}}));
    assert_eq!(
        Scheduler::default().decide(&s, &nowhere).unwrap_err().to_string(),
        "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector."
    );
}

#[test]
fn a_host_port_goes_once_per_node() {
    let mut s = cluster(&[node("a", "4", "8Gi", json!({})), node("b", "4", "8Gi", json!({}))]);
    let web = |n: &str| {
        pod(
            n,
            json!({"spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        )
    };
    let got = place_all(&mut s, &[web("w1"), web("w2"), web("w3")]);
    assert_ne!(got[0].as_ref().unwrap(), got[1].as_ref().unwrap());
    assert_eq!(
        got[2].as_ref().unwrap_err().to_string(),
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports."
    );
}

#[test]
fn anti_affinity_keeps_pods_apart_and_affinity_brings_them_together() {
    let mut s = cluster(&[node("a", "4", "8Gi", json!({})), node("b", "4", "8Gi", json!({}))]);
    let apart = |n: &str| {
        pod(
            n,
            json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}}),
        )
    };
    let got = place_all(&mut s, &[apart("x1"), apart("x2"), apart("x3")]);
    assert_ne!(got[0].as_ref().unwrap(), got[1].as_ref().unwrap());
    assert_eq!(
        got[2].as_ref().unwrap_err().reasons.keys().next().unwrap(),
        "node(s) didn't match pod anti-affinity rules"
    );

    let mut s = cluster(&[
        node("a", "4", "8Gi", json!({})),
        node("b", "4", "8Gi", json!({})),
        node("c", "4", "8Gi", json!({})),
    ]);
    let with = |n: &str| {
        pod(
            n,
            json!({"metadata": {"labels": {"app": "cache"}}, "spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "kubernetes.io/hostname"}]}}}}),
        )
    };
    let got = place_all(&mut s, &[with("c1"), with("c2"), with("c3")]);
    let first = got[0].as_ref().unwrap();
    assert!(got.iter().all(|g| g.as_ref().unwrap() == first), "{got:?}");
    // A plain pod the placed ones' anti-affinity selects stays away from them (symmetry).
    let mut s = cluster(&[node("a", "4", "8Gi", json!({})), node("b", "4", "8Gi", json!({}))]);
    let loner = pod(
        "l",
        json!({"metadata": {"labels": {"app": "loner"}}, "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}}),
    );
    s.place("a", &loner);
    assert_eq!(Scheduler::default().decide(&s, &pod("w", json!({}))).unwrap(), "b");
}

#[test]
fn a_do_not_schedule_spread_constraint_keeps_zones_within_the_skew() {
    let zone = |n: &str, z: &str| node(n, "4", "8Gi", json!({"metadata": {"labels": {"zone": z}}}));
    let mut s = cluster(&[zone("a", "z1"), zone("b", "z1"), zone("c", "z2")]);
    let spread = |n: &str| {
        pod(
            n,
            json!({"spec": {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}}),
        )
    };
    let got = place_all(&mut s, &(0..4).map(|i| spread(&format!("s{i}"))).collect::<Vec<_>>());
    let in_z2 = got.iter().filter(|g| g.as_ref().unwrap() == "c").count();
    assert_eq!(in_z2, 2, "two of four pods in the one-node zone: {got:?}");
}

#[test]
fn prefer_no_schedule_taints_and_preferred_affinity_steer_but_do_not_forbid() {
    let s = cluster(&[
        node("a", "4", "8Gi", json!({"spec": {"taints": [{"key": "spot", "effect": "PreferNoSchedule"}]}})),
        node("b", "4", "8Gi", json!({})),
    ]);
    assert_eq!(Scheduler::default().decide(&s, &pod("p", json!({}))).unwrap(), "b");
    let s = cluster(&[node("a", "4", "8Gi", json!({})), node("b", "4", "8Gi", json!({}))]);
    let likes_a = pod(
        "p",
        json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}}]}}}}),
    );
    assert_eq!(Scheduler::default().decide(&s, &likes_a).unwrap(), "a");
}

#[test]
fn removing_a_node_forgets_its_pods_and_keeps_the_others_counted() {
    let mut s = cluster(&[
        node("a", "1", "1Gi", json!({})),
        node("b", "1", "1Gi", json!({})),
        node("c", "1", "1Gi", json!({})),
    ]);
    s.place("a", &owned("p1"));
    s.place("c", &owned("p2"));
    s.remove_node("a");
    assert!(!s.is_placed("uid-p1"));
    assert!(s.is_placed("uid-p2"));
    assert_eq!(s.node("c").unwrap().requested.milli_cpu, 100);
    s.unplace("uid-p2");
    assert_eq!(s.node("c").unwrap().requested.milli_cpu, 0);
}

#[test]
fn large_clusters_score_a_share_of_their_nodes() {
    assert_eq!(feasible_to_find(50), 50);
    assert_eq!(feasible_to_find(1000), 420);
    assert_eq!(feasible_to_find(5000), 500);
    assert_eq!(feasible_to_find(100_000), 5000);
}

#[test]
fn a_node_that_is_not_ready_takes_only_pods_that_tolerate_it() {
    let s =
        cluster(&[node("a", "4", "8Gi", json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}))]);
    assert_eq!(
        Scheduler::default().decide(&s, &pod("p", json!({}))).unwrap_err().to_string(),
        "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
    );
    let tolerant =
        pod("p", json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]}}));
    assert_eq!(Scheduler::default().decide(&s, &tolerant).unwrap(), "a");
}

#[test]
fn a_node_update_counts_as_a_change_only_if_a_decision_reads_it() {
    let mut s = Snapshot::default();
    assert!(s.put_node(&node("a", "4", "8Gi", json!({}))), "a new node");
    let heartbeat = node(
        "a",
        "4",
        "8Gi",
        json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-12-02T17:00:00Z"}]}}),
    );
    assert!(!s.put_node(&heartbeat), "a heartbeat changes nothing a decision reads");
    assert!(s.put_node(&node("a", "8", "8Gi", json!({}))), "more cpu");
    assert!(s.put_node(&node("a", "8", "8Gi", json!({"spec": {"unschedulable": true}}))), "a cordon");
    assert!(
        s.put_node(&node("a", "8", "8Gi", json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}))),
        "not ready"
    );
}
