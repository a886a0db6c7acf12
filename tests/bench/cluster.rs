//! `make bench`: the cluster at scale on fake nodes (`nodectl daemon --fake`), end to end
//! through the API, the store (SQLite) and the scheduler loop:
//! - scheduling throughput: 10,000 pending pods, then a server with its scheduler started
//!   on them, on 1,000 and on 5,000 nodes; pods/s from the server's start to the last
//!   binding seen on a watch (the start includes the server's own list), and from the
//!   first binding to the last;
//! - the server's resident memory with 5,000 nodes and 50,000 pods bound and Running;
//! - the time from `apply` of a 1,000-replica Deployment to 1,000 ready replicas, on 1,000
//!   nodes.
//!
//! Not a test: it asserts nothing about time. The fake nodes (Lease renewals, pod
//! status), the client and the server share the machine's cores.

#[path = "../common/server.rs"]
#[allow(dead_code)]
mod server;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use server::{Api, FakeNodes, Server, free_port};

const PENDING: usize = 10_000;
const MANY: usize = 50_000;
/// Concurrent creates.
const CLIENTS: usize = 32;

impl Api {
    async fn get(&self, path: &str) -> Option<Value> {
        self.get_or_why(path).await.ok()
    }

    /// GET `path`: the body, or what went wrong (the status and the server's message).
    async fn get_or_why(&self, path: &str) -> Result<Value, String> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| format!("GET {path}: {status}, body: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET {path}: {status}: {}", String::from_utf8_lossy(&body)));
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {path}: {status}, {} bytes: {e}", body.len()))
    }

    async fn post(&self, path: &str, body: &Value) -> u16 {
        let resp = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(body).send().await;
        resp.map(|r| r.status().as_u16()).unwrap_or(0)
    }

    /// Waits until `n` nodes report Ready.
    async fn nodes_ready(&self, n: usize) {
        loop {
            if let Some(list) = self.get("/api/v1/nodes").await {
                let ready = list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|n| {
                        n["status"]["conditions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                    .count();
                if ready >= n {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Creates pods `from..to` (bare pods, one label), `CLIENTS` at a time.
    async fn create_pods(&self, from: usize, to: usize) {
        futures_util::stream::iter(from..to)
            .map(|i| {
                let api = self.clone();
                async move {
                    let pod = json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": format!("p-{i}"), "labels": {"app": "bench"}},
                        "spec": {"containers": [{"name": "c", "image": "busybox",
                                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
                    });
                    loop {
                        match api.post("/api/v1/namespaces/default/pods", &pod).await {
                            201 | 409 => break,
                            _ => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                }
            })
            .buffer_unordered(CLIENTS)
            .collect::<()>()
            .await;
    }

    async fn revision(&self) -> String {
        let list = self.get_or_why("/api/v1/namespaces/default/pods?limit=1").await.unwrap_or_else(|e| panic!("{e}"));
        list["metadata"]["resourceVersion"].as_str().unwrap().to_string()
    }

    /// Follows the pods from `rv` (none: from a list of them all) until `n` are bound (and,
    /// with `running`, reported Running); answers when the first and the last were bound.
    async fn until_bound(&self, rv: Option<&str>, n: usize, running: bool) -> (Instant, Instant) {
        let (mut bound, mut up) = (HashSet::new(), HashSet::new());
        let (mut first, mut last) = (None, None);
        let mut rv = match rv {
            Some(rv) => rv.to_string(),
            None => {
                let list = self.get_or_why("/api/v1/namespaces/default/pods").await.unwrap_or_else(|e| panic!("{e}"));
                for p in list["items"].as_array().unwrap() {
                    let uid = p["metadata"]["uid"].as_str().unwrap_or_default().to_string();
                    if p["spec"]["nodeName"].is_string() {
                        bound.insert(uid.clone());
                    }
                    if p["status"]["phase"] == "Running" {
                        up.insert(uid);
                    }
                }
                list["metadata"]["resourceVersion"].as_str().unwrap().to_string()
            }
        };
        let now = Instant::now();
        if bound.len() >= n && (!running || up.len() >= n) {
            return (now, now);
        }
        loop {
            let url = format!("{}/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}", self.base);
            let Ok(resp) = self.http.get(url).bearer_auth(&self.token).send().await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let done = server::for_each_event(resp, |event, at| {
                let obj = &event["object"];
                if let Some(v) = obj["metadata"]["resourceVersion"].as_str() {
                    rv = v.to_string();
                }
                let uid = obj["metadata"]["uid"].as_str().unwrap_or_default().to_string();
                if obj["spec"]["nodeName"].is_string() && bound.insert(uid.clone()) {
                    first.get_or_insert(at);
                    last = Some(at);
                }
                if obj["status"]["phase"] == "Running" {
                    up.insert(uid);
                }
                !(bound.len() >= n && (!running || up.len() >= n))
            })
            .await;
            if done {
                // Every pod may have been bound before the list (only Running was awaited).
                return (first.unwrap_or(now), last.unwrap_or(now));
            }
        }
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Pending pods on `nodes` fake nodes, then the scheduler; with `then_many`, the pods up to
/// [`MANY`] follow and the server's memory is read.
fn scheduling(rt: &tokio::runtime::Runtime, nodes: usize, then_many: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, port) = (tmp.path().join("data"), free_port());
    let quiet = ["--leader-elect=false", "--controllers=-nodelifecycle"];
    let s = Server::start(&dir, port, &[&quiet[..], &["--disable-scheduler"]].concat());
    let api = Api::new(&s, usize::MAX);
    let _fake = FakeNodes::start(&s.dir.join("fake-nodes"), &s.dir.join("admin.kubeconfig"), nodes);
    let t = Instant::now();
    rt.block_on(api.nodes_ready(nodes));
    let registered = t.elapsed();
    let t = Instant::now();
    rt.block_on(api.create_pods(0, PENDING));
    let created = t.elapsed();
    let rv = rt.block_on(api.revision());
    s.terminate();
    let start = Instant::now();
    let s = Server::start(&dir, port, &quiet);
    let (first, last) = rt.block_on(api.until_bound(Some(&rv), PENDING, false));
    println!(
        "  {nodes:>5} nodes  {:>7.0} pods/s from the server's start ({:.2} s)   {:>7.0} pods/s first to last binding   \
         (nodes registered in {:.1} s, {PENDING} pods created in {:.1} s)",
        PENDING as f64 / (last - start).as_secs_f64(),
        (last - start).as_secs_f64(),
        (PENDING - 1) as f64 / (last - first).as_secs_f64().max(1e-9),
        registered.as_secs_f64(),
        created.as_secs_f64(),
    );
    if then_many {
        let t = Instant::now();
        rt.block_on(api.create_pods(PENDING, MANY));
        rt.block_on(api.until_bound(None, MANY, true));
        println!(
            "  server memory with {nodes} nodes and {MANY} pods bound and Running: {:.0} MiB VmRSS (aim: under 500 MB; \
             {} more pods created, bound and Running in {:.1} s)",
            rss_mib(s.pid()),
            MANY - PENDING,
            t.elapsed().as_secs_f64()
        );
    }
}

fn deployment(rt: &tokio::runtime::Runtime, nodes: usize, replicas: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &["--leader-elect=false"]);
    let api = Api::new(&s, usize::MAX);
    let _fake = FakeNodes::start(&s.dir.join("fake-nodes"), &s.dir.join("admin.kubeconfig"), nodes);
    rt.block_on(api.nodes_ready(nodes));
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    });
    let start = Instant::now();
    assert_eq!(rt.block_on(api.post("/apis/apps/v1/namespaces/default/deployments", &d)), 201);
    rt.block_on(async {
        loop {
            let d = api.get("/apis/apps/v1/namespaces/default/deployments/web").await;
            if d.is_some_and(|d| d["status"]["readyReplicas"].as_u64() == Some(replicas as u64)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    println!(
        "  a {replicas}-replica Deployment on {nodes} nodes: all ready {:.2} s after apply",
        start.elapsed().as_secs_f64()
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // Thousands of watches and connections on both sides.
    // SAFETY: getrlimit/setrlimit only read and write this process's limits.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("the cluster on fake nodes (nodectl daemon --fake), SQLite store, end to end:");
    // `cargo bench --bench cluster -- PART…` runs only the parts named (`1000`, `5000`,
    // `deployment`); none named, all of them.
    let parts: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    println!("scheduling {PENDING} pending pods (aim: 5,000 pods/s; kube-scheduler's CI floor 680 at 5,000 nodes):");
    if run("1000") {
        scheduling(&rt, 1_000, false);
    }
    if run("5000") {
        scheduling(&rt, 5_000, true);
    }
    if run("deployment") {
        deployment(&rt, 1_000, 1_000);
    }
}
