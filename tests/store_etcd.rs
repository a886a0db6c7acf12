//! The control plane's etcd store, against real etcd members on loopback (Debian's
//! etcd-server, /usr/bin/etcd): the checks every backend passes (tests/store_checks), the
//! live feed resuming after its member is killed and restarted, a three-member cluster that
//! loses its leader to SIGKILL, compaction by policy, and `nodectl server --etcd` driven by
//! kubectl.

mod common;
mod store_checks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::Cluster;
use common::server::{Server, free_port};
use nodectl::server::store::etcd::Etcd;
use nodectl::server::store::{Backend, CompactionPolicy, EventKind, StoreError, watch};

/// A compactor that never wakes during a test unless asked.
fn manual() -> CompactionPolicy {
    CompactionPolicy { retain: 1_000_000, interval: Duration::from_secs(3600) }
}

fn connect(c: &Cluster) -> Arc<Etcd> {
    Arc::new(Etcd::connect(&c.endpoints(), manual()).unwrap())
}

// The checks every backend passes, on a one-member etcd each.

#[test]
fn writes_get_revisions_and_conflicts_are_refused() {
    let c = Cluster::start(1);
    store_checks::writes_get_revisions_and_conflicts_are_refused(&*connect(&c));
}

#[test]
fn lists_page_and_read_the_past() {
    let c = Cluster::start(1);
    store_checks::lists_page_and_read_the_past(&*connect(&c));
}

#[test]
fn racing_compare_and_swap_writers_lose_no_increment() {
    let c = Cluster::start(1);
    store_checks::racing_compare_and_swap_writers_lose_no_increment(connect(&c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_see_every_write_once_in_order_under_concurrent_writers() {
    let c = Cluster::start(1);
    store_checks::watches_see_every_write_once_in_order_under_concurrent_writers(connect(&c)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_reads_the_log_and_loses_nothing() {
    let c = Cluster::start(1);
    store_checks::a_lagging_watcher_reads_the_log_and_loses_nothing(connect(&c)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_polled_with_short_timeouts_still_catches_up() {
    let c = Cluster::start(1);
    store_checks::a_watcher_polled_with_short_timeouts_still_catches_up(connect(&c)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_of_a_quiet_prefix_lagging_behind_others_loses_nothing() {
    let c = Cluster::start(1);
    store_checks::a_watcher_of_a_quiet_prefix_lagging_behind_others_loses_nothing(connect(&c)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_answers_compacted_and_keeps_the_present() {
    let c = Cluster::start(1);
    let reopen = |s: Arc<Etcd>| {
        drop(s);
        connect(&c)
    };
    store_checks::compaction_answers_compacted_and_keeps_the_present(connect(&c), reopen).await;
}

// What only etcd has to show.

/// The live feed's watch breaks when its member dies; it resumes from the last revision it
/// delivered, so a subscriber sees every write of before and after, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_resumes_after_its_member_is_killed_and_restarted() {
    let mut c = Cluster::start(1);
    let s = connect(&c);
    let mut feed = s.subscribe();
    let mut written = Vec::new();
    for i in 0..20 {
        written.push(s.create(&format!("/k/before-{i}"), b"v").unwrap());
    }
    c.kill(0);
    c.restart(0);
    // The first of these waits, trying again, until the member answers.
    for i in 0..20 {
        written.push(s.create(&format!("/k/after-{i}"), b"v").unwrap());
    }
    let (d, _) = s.delete("/k/after-0", None).unwrap();
    written.push(d);
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        let e = tokio::time::timeout(Duration::from_secs(30), feed.recv()).await.expect("the feed stalled").unwrap();
        seen.push(e.revision);
        if e.revision == d {
            assert_eq!(
                (e.kind, e.kv.key.as_str(), e.prev.as_ref().map(|p| p.value.as_slice())),
                (EventKind::Delete, "/k/after-0", Some(&b"v"[..]))
            );
        }
    }
    assert_eq!(seen, written);
}

/// Three members; the leader is killed with SIGKILL. The store, given all three, goes on
/// answering through the other two: reads at once (tried again through the election),
/// writes once a new leader is elected, and a watch started before misses nothing. A write
/// in flight during the election may fail with its outcome unknown (etcd: "request timed
/// out, possibly due to previous leader failure"); the store does not repeat such a write,
/// so that test waits for the new leader before it writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_cluster_survives_the_loss_of_its_leader() {
    let mut c = Cluster::start(3);
    let s = connect(&c);
    let first = s.create("/registry/configmaps/ns/before", b"0").unwrap();
    let mut w = watch(s.clone(), "/registry/configmaps/", Some(first - 1)).unwrap();
    let leader = c.leader();
    c.kill(leader);

    for _ in 0..10 {
        assert_eq!(s.get("/registry/configmaps/ns/before").unwrap().unwrap().value, b"0");
        assert_eq!(s.list("/registry/configmaps/", None, 0, None).unwrap().items.len(), 1);
    }
    assert_ne!(c.leader(), leader, "another member leads");

    let mut written = vec![first];
    for i in 0..30 {
        let key = format!("/registry/configmaps/ns/cm{i}");
        written.push(s.create(&key, b"1").unwrap());
        let kv = s.get(&key).unwrap().expect("a write just acknowledged is read back");
        written.push(s.update(&key, b"2", Some(kv.mod_revision)).unwrap());
    }
    let list = s.list("/registry/configmaps/ns/", None, 0, None).unwrap();
    assert_eq!(list.items.len(), 31);
    assert!(list.items.iter().filter(|kv| kv.key != "/registry/configmaps/ns/before").all(|kv| kv.value == b"2"));

    for want in &written {
        let e = tokio::time::timeout(Duration::from_secs(30), w.next()).await.expect("the watch stalled").unwrap();
        assert_eq!(e.revision, *want);
    }
}

/// The store keeps itself bounded by the policy, as the SQLite store does: history beyond the
/// newest `retain` revisions is compacted away, and reading there answers Compacted.
#[test]
fn the_compactor_keeps_the_newest_revisions() {
    let c = Cluster::start(1);
    let s =
        Etcd::connect(&c.endpoints(), CompactionPolicy { retain: 20, interval: Duration::from_millis(200) }).unwrap();
    let first = s.create("/k/a", b"0").unwrap();
    for i in 0..100 {
        s.update("/k/a", format!("{i}").as_bytes(), None).unwrap();
    }
    let current = s.current_revision().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.compacted_revision().unwrap() < current - 20 {
        assert!(Instant::now() < deadline, "no compaction to {} in 30 s", current - 20);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(s.compacted_revision().unwrap() <= current - 20, "more history dropped than the policy says");
    assert!(matches!(s.list("/k/", None, 0, Some(first)), Err(StoreError::Compacted { .. })));
    assert_eq!(s.list("/k/", None, 0, Some(current - 20)).unwrap().items.len(), 1);
    assert_eq!(s.get("/k/a").unwrap().unwrap().value, b"99");
}

/// `nodectl server --etcd` keeps its objects in etcd: kubectl creates and reads a configmap
/// through it, the object is in etcd under its key, and no SQLite file is made.
#[test]
fn nodectl_server_with_etcd_serves_kubectl() {
    let c = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let server = Server::start(&data, port, &["--etcd", &c.endpoints().join(",")]);

    let out = server.kubectl(&["create", "configmap", "cfg", "--from-literal=greeting=hello"]);
    assert!(out.status.success(), "kubectl create: {}", String::from_utf8_lossy(&out.stderr));
    let out = server.kubectl(&["get", "configmap", "cfg", "-o", "json"]);
    assert!(out.status.success(), "kubectl get: {}", String::from_utf8_lossy(&out.stderr));
    let cm: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cm["data"]["greeting"], "hello");

    let s = connect(&c);
    let kv = s.get("/registry/core/configmaps/default/cfg").unwrap().expect("the configmap is in etcd");
    assert_eq!(cm["metadata"]["resourceVersion"], kv.mod_revision.to_string(), "resourceVersion is etcd's revision");
    assert!(!data.join("state.db").exists(), "the server made a SQLite store beside etcd");
}

/// With etcd gone, the API answers as kube-apiserver does, with a Status and a 5xx that
/// says "try again" rather than a 500: killed (connections refused), reads and writes are
/// 503 ServiceUnavailable once the store's retry window is over; hung (SIGSTOP: connections
/// open, no answers), 504 Timeout, or 503 if the client's keepalive gave up on the
/// connection first. Brought back, the same server answers again.
#[test]
fn the_api_answers_503_or_504_while_etcd_is_down_and_recovers() {
    let mut c = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), free_port(), &["--etcd", &c.endpoints().join(",")]);
    let token = server.admin_token();
    let cm = |name: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}).to_string()
    };
    let (code, body) = server.request(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(&token),
        Some(("application/json", cm("before").as_bytes())),
    );
    assert_eq!(code, 201, "{body}");

    // A read and a write at once, each waiting out the store's retry window.
    let (server, token) = (&server, token.as_str());
    let read_and_write = |name: &str| {
        std::thread::scope(|scope| {
            let read = scope.spawn(move || {
                server.request("GET", "/api/v1/namespaces/default/configmaps/before", Some(token), None)
            });
            let body = cm(name);
            let write = scope.spawn(move || {
                server.request(
                    "POST",
                    "/api/v1/namespaces/default/configmaps",
                    Some(token),
                    Some(("application/json", body.as_bytes())),
                )
            });
            [read.join().unwrap(), write.join().unwrap()]
        })
    };
    let status = |body: &str| -> serde_json::Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not a Status ({e}): {body}"))
    };
    let back = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, body) = server.request("GET", "/api/v1/namespaces/default/configmaps/before", Some(token), None);
            if code == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "the API did not recover after {what}: {code} {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    c.kill(0);
    for (code, body) in read_and_write("while-killed") {
        let s = status(&body);
        assert_eq!(
            (code, s["kind"].as_str(), s["code"].as_i64(), s["reason"].as_str()),
            (503, Some("Status"), Some(503), Some("ServiceUnavailable")),
            "{body}"
        );
    }
    c.restart(0);
    back("a restart of etcd");
    let (code, body) = server.request(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(token),
        Some(("application/json", cm("after-restart").as_bytes())),
    );
    assert_eq!(code, 201, "{body}");

    c.signal(0, nix::sys::signal::Signal::SIGSTOP);
    for (code, body) in read_and_write("while-stopped") {
        let s = status(&body);
        let reason = s["reason"].as_str();
        assert!(matches!((code, reason), (504, Some("Timeout")) | (503, Some("ServiceUnavailable"))), "{code} {body}");
        assert_eq!(s["code"].as_i64(), Some(code as i64), "{body}");
    }
    c.signal(0, nix::sys::signal::Signal::SIGCONT);
    back("SIGCONT");
    let (code, body) = server.request("GET", "/api/v1/namespaces/default/configmaps", Some(token), None);
    assert_eq!(code, 200, "{body}");
}

/// `kill -9` of `nodectl server --etcd` (not of etcd) under a steady write load over HTTPS:
/// started again on the same etcd, it has every acknowledged write at its revision.
#[test]
fn kill_9_of_the_server_under_load_loses_no_acknowledged_write() {
    let c = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    common::server::kill_9_under_load_loses_no_acknowledged_write(
        &tmp.path().join("data"),
        &["--etcd", &c.endpoints().join(",")],
    );
}

/// Node credentials live in the store: a node registered through one server is known to
/// another sharing its etcd (each with a CA of its own), and revoked through either.
#[test]
fn servers_sharing_an_etcd_share_node_credentials() {
    let c = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let etcd = c.endpoints().join(",");
    let a = Server::start(&tmp.path().join("a"), free_port(), &["--etcd", &etcd]);
    let b = Server::start(&tmp.path().join("b"), free_port(), &["--etcd", &etcd]);
    let join = std::fs::read_to_string(a.dir.join("node-token")).unwrap().trim().to_string();
    let body = serde_json::json!({"nodeName": "n1", "password": "pw"}).to_string();
    let (code, creds) =
        a.request("POST", "/v1-nodectl/register", Some(&join), Some(("application/json", body.as_bytes())));
    assert_eq!(code, 201, "{creds}");
    let creds: serde_json::Value = serde_json::from_str(&creds).unwrap();
    let token = creds["token"].as_str().unwrap();
    let (code, body) = b.request("GET", "/api/v1/nodes", Some(token), None);
    assert_eq!(code, 200, "{body}");
    let (code, body) = b.request("GET", "/api/v1/namespaces/default/configmaps", Some(token), None);
    assert_eq!(code, 403, "{body}");
    let (code, body) = b.request("DELETE", "/v1-nodectl/register/n1", Some(&b.admin_token()), None);
    assert_eq!(code, 200, "{body}");
    let (code, body) = b.request("GET", "/api/v1/nodes", Some(token), None);
    assert_eq!(code, 401, "{body}");
}
