//! Two servers on one etcd (Debian's etcd-server on loopback): exactly one of them runs the
//! scheduler and the controllers, by the Leases `kube-scheduler` and
//! `kube-controller-manager` in kube-system; when it is killed the other takes over within
//! 15 s of its death, and one stopped with SIGTERM hands over at once.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::etcd::Cluster;
use common::server::{Server, free_port};
use serde_json::Value;

const LEASES: [&str; 2] = ["kube-controller-manager", "kube-scheduler"];

fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lease's spec, if it exists.
fn lease(s: &Server, name: &str) -> Option<Value> {
    let out = s.kubectl(&["get", "lease", "-n", "kube-system", name, "-o", "json"]);
    out.status.success().then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap()["spec"].clone())
}

fn holder(s: &Server, name: &str) -> String {
    lease(s, name).and_then(|l| l["holderIdentity"].as_str().map(String::from)).unwrap_or_default()
}

/// Waits until both leases are held by one identity other than `not`; answers it.
fn leader_other_than(s: &Server, not: &str, secs: u64) -> String {
    wait_until("one server holds both leases", secs, || {
        let (a, b) = (holder(s, LEASES[0]), holder(s, LEASES[1]));
        (!a.is_empty() && a != not && a == b).then_some(a)
    })
}

fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().into()
}

fn pods(s: &Server) -> usize {
    let out = s.ok(&["get", "pods", "-n", "default", "-l", "app=web", "-o", "json"]);
    serde_json::from_str::<Value>(&out).unwrap()["items"].as_array().unwrap().len()
}

fn scale(s: &Server, n: usize) {
    s.ok(&["scale", "replicaset", "web", &format!("--replicas={n}")]);
    wait_until(&format!("{n} pods"), 60, || (pods(s) == n).then_some(()));
}

/// A second server shares the first one's CA and tokens, as servers of one cluster do.
fn share_credentials(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["ca.crt", "ca.key", "admin-token", "node-token"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn of_two_servers_on_one_etcd_one_leads_and_the_other_takes_over_within_15_s() {
    let c = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let endpoints = c.endpoints().join(",");
    let etcd = ["--etcd", endpoints.as_str()];

    let a = Server::start(&a_dir, free_port(), &etcd);
    let first = leader_other_than(&a, "", 30);
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert!(first.starts_with(&format!("{host}_")), "{first}");
    share_credentials(&a_dir, &b_dir);
    let b = Server::start(&b_dir, free_port(), &etcd);

    // Only the leader's ReplicaSet controller acts: a ReplicaSet made through the follower
    // gets exactly its replicas, and stays at that.
    let rs = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  \
              template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: c, image: busybox}]\n";
    let file = tmp.path().join("rs.yaml");
    std::fs::write(&file, rs).unwrap();
    b.ok(&["apply", "-f", file.to_str().unwrap()]);
    wait_until("3 pods", 60, || (pods(&b) == 3).then_some(()));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pods(&b), 3);
    for l in LEASES {
        let spec = lease(&b, l).unwrap();
        assert_eq!(
            (spec["holderIdentity"].as_str(), spec["leaseTransitions"].as_i64()),
            (Some(first.as_str()), Some(0))
        );
        assert_eq!(spec["leaseDurationSeconds"], 10, "{l}");
    }

    // The leader is killed: the other server takes over within 15 s of its death.
    let killed = chrono::Utc::now();
    a.stop();
    let second = leader_other_than(&b, &first, 60);
    for l in LEASES {
        let spec = lease(&b, l).unwrap();
        assert_eq!(spec["leaseTransitions"], 1, "{l}");
        let took = time(&spec["acquireTime"]) - killed;
        eprintln!("{l}: taken over {} ms after the leader was killed", took.num_milliseconds());
        assert!(took <= chrono::Duration::seconds(15), "{l} was taken over after {took}");
    }
    // Its controllers carry on with the same ReplicaSet.
    scale(&b, 5);

    // A server that stops normally gives its leases up: the other (the first, back with a
    // new identity) takes them at its next try rather than after the lease runs out.
    let a = Server::start(&a_dir, free_port(), &etcd);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(holder(&a, LEASES[0]), second, "a returning server waits for the lease");
    let stopped = chrono::Utc::now();
    b.terminate();
    let third = leader_other_than(&a, &second, 30);
    assert_ne!(third, first, "a restarted server stands under a new identity");
    for l in LEASES {
        let spec = lease(&a, l).unwrap();
        let took = time(&spec["acquireTime"]) - stopped;
        eprintln!("{l}: handed over {} ms after SIGTERM", took.num_milliseconds());
        // One try (2 s, 2.4 s with jitter) at most, well short of the 10 s lease.
        assert!(took < chrono::Duration::seconds(5), "{l} was handed over after {took}");
    }
    scale(&a, 2);
}
