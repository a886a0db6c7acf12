//! `make bench`: the control plane's API under load, on the embedded SQLite store and on
//! etcd (Debian's etcd-server, one member on loopback). With 1, 16 and 64 concurrent
//! clients (HTTPS/1.1 keep-alive, the admin token, the server's own CA): create, get and
//! list latency (p50, p99) and throughput, and the time from a create to its event on a
//! watch open meanwhile. Then a paced load of 1,000 creates a second, against the issue's
//! aim, and the time from a write to its event on 1,000 open watches (p50, p99 across
//! them).
//!
//! Not a test: it asserts nothing about time. Client and server share the machine's cores,
//! so the client's own work (TLS, JSON, 1,000 streams) is in the numbers too.

#[path = "../common/server.rs"]
#[allow(dead_code)]
mod server;

use std::collections::HashMap;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server::{Api, Server, free_port};

const CLIENTS: [usize; 3] = [1, 16, 64];
const CREATES: usize = 600;
const GETS: usize = 2_000;
const LISTS: usize = 200;
/// Objects in the namespace each list reads.
const LISTED: usize = 100;
const PACED_RATE: u64 = 1_000;
const PACED_FOR: Duration = Duration::from_secs(3);
const WATCHES: usize = 1_000;
/// The pods one big list reads, and how many such lists 64 clients make.
const BIG_LIST: usize = 10_000;
const BIG_LISTS: usize = 128;
/// The objects stored when the server's memory is read.
const STORED: usize = 100_000;
const FAN_WRITES: usize = 20;
/// Waits that end a phase whose events never came, so that the bench always finishes.
const EVENT_WAIT: Duration = Duration::from_secs(20);

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One etcd member on loopback, killed on drop (and with us, should we die first).
struct Etcd {
    child: Child,
    url: String,
}

impl Etcd {
    fn start(dir: &Path) -> Etcd {
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new("etcd");
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .args(["--name", "bench", "--data-dir"])
            .arg(dir)
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}"), "--logger", "zap", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is installed (rootfs-tools/install-deps.sh)");
        let mut e = Etcd { child, url };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", client)).is_err() {
            if let Ok(Some(status)) = e.child.try_wait() {
                panic!("etcd exited: {status}");
            }
            assert!(Instant::now() < deadline, "etcd did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        e
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp
    }

    async fn create(&self, ns: &str, name: &str) {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}});
        self.send(reqwest::Method::POST, &format!("/api/v1/namespaces/{ns}/configmaps"), Some(body))
            .await
            .bytes()
            .await
            .unwrap();
    }

    /// A pod no scheduler of ours takes (`schedulerName` another's), so that it stays as
    /// written and nothing else writes meanwhile.
    async fn pod(&self, ns: &str, name: &str) {
        let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "big"}},
            "spec": {"schedulerName": "bench-scheduler", "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}});
        self.send(reqwest::Method::POST, &format!("/api/v1/namespaces/{ns}/pods"), Some(body))
            .await
            .bytes()
            .await
            .unwrap();
    }

    async fn namespace(&self, ns: &str) {
        self.send(reqwest::Method::POST, "/api/v1/namespaces", Some(json!({"metadata": {"name": ns}})))
            .await
            .bytes()
            .await
            .unwrap();
    }

    async fn revision(&self, ns: &str) -> String {
        let list: Value = self
            .send(reqwest::Method::GET, &format!("/api/v1/namespaces/{ns}/configmaps?limit=1"), None)
            .await
            .json()
            .await
            .unwrap();
        list["metadata"]["resourceVersion"].as_str().unwrap().to_string()
    }

    /// Opens a watch on the namespace's configmaps from `rv`; each event's object name is
    /// passed to `seen` with the moment its line arrived, until `seen` says stop.
    async fn watch(&self, ns: &str, rv: &str, opened: impl FnOnce(), mut seen: impl FnMut(&str, Instant) -> bool) {
        let resp = self
            .send(
                reqwest::Method::GET,
                &format!("/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={rv}"),
                None,
            )
            .await;
        opened();
        server::for_each_event(resp, |event, at| {
            event.pointer("/object/metadata/name").and_then(Value::as_str).is_none_or(|name| seen(name, at))
        })
        .await;
    }
}

/// Latencies and the wall time of one phase.
struct Phase {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Phase {
    fn row(mut self, backend: &str, clients: &str, op: &str) -> String {
        let n = self.latencies.len();
        let rate = n as f64 / self.wall.as_secs_f64();
        let (p50, p99) = (pct(&mut self.latencies, 0.5), pct(&mut self.latencies, 0.99));
        format!("{backend:<7} {clients:>7} {op:<7} {n:>6} {:>9.2} {:>9.2} {rate:>9.0}", ms(p50), ms(p99))
    }
}

/// `total` operations spread over `clients` tasks, each timed.
async fn run<F, Fut>(clients: usize, total: usize, op: F) -> Phase
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (next, op) = (next.clone(), op.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return lat;
                    }
                    let t = Instant::now();
                    op(i).await;
                    lat.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    Phase { latencies, wall: start.elapsed() }
}

/// Creates, gets and lists with `clients` clients, and the create-to-event time on one watch.
async fn levels(api: &Api, backend: &str, rows: &mut Vec<String>) {
    for &clients in &CLIENTS {
        let ns = format!("bench-{clients}");
        api.namespace(&ns).await;
        let rv = api.revision(&ns).await;
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let arrived: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let watcher = {
            let (api, ns, arrived) = (api.clone(), ns.clone(), arrived.clone());
            tokio::spawn(async move {
                api.watch(
                    &ns,
                    &rv,
                    move || {
                        let _ = ready_tx.send(());
                    },
                    |name, at| {
                        let mut a = arrived.lock().unwrap();
                        a.push((name.to_string(), at));
                        a.len() < CREATES
                    },
                )
                .await
            })
        };
        ready_rx.await.unwrap();
        let create = {
            let (api, ns, sent) = (api.clone(), ns.clone(), sent.clone());
            run(clients, CREATES, move |i| {
                let (api, ns, sent) = (api.clone(), ns.clone(), sent.clone());
                async move {
                    let name = format!("cm-{i}");
                    sent.lock().unwrap().insert(name.clone(), Instant::now());
                    api.create(&ns, &name).await;
                }
            })
            .await
        };
        let _ = tokio::time::timeout(EVENT_WAIT, watcher).await;
        let watch = {
            let sent = sent.lock().unwrap();
            let latencies = arrived
                .lock()
                .unwrap()
                .iter()
                .filter_map(|(n, at)| sent.get(n).map(|t| at.saturating_duration_since(*t)))
                .collect();
            Phase { latencies, wall: create.wall }
        };
        let get = {
            let (api, ns) = (api.clone(), ns.clone());
            run(clients, GETS, move |i| {
                let (api, ns) = (api.clone(), ns.clone());
                async move {
                    api.send(
                        reqwest::Method::GET,
                        &format!("/api/v1/namespaces/{ns}/configmaps/cm-{}", i % CREATES),
                        None,
                    )
                    .await
                    .bytes()
                    .await
                    .unwrap();
                }
            })
            .await
        };
        let list = {
            let api = api.clone();
            run(clients, LISTS, move |_| {
                let api = api.clone();
                async move {
                    api.send(reqwest::Method::GET, "/api/v1/namespaces/listed/configmaps", None)
                        .await
                        .bytes()
                        .await
                        .unwrap();
                }
            })
            .await
        };
        let c = clients.to_string();
        rows.push(create.row(backend, &c, "create"));
        rows.push(get.row(backend, &c, "get"));
        rows.push(list.row(backend, &c, &format!("list{LISTED}")));
        rows.push(watch.row(backend, &c, "watch"));
    }
}

/// Creates paced at PACED_RATE a second (open loop: a slow answer does not delay the next
/// write), timed from each write's sending; answers the rate achieved too.
async fn paced(api: &Api) -> (Phase, f64) {
    api.namespace("paced").await;
    let total = (PACED_RATE * PACED_FOR.as_secs()) as usize;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / PACED_RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tick.tick().await;
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            api.create("paced", &format!("p-{i}")).await;
            t.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for t in tasks {
        latencies.push(t.await.unwrap());
    }
    let wall = start.elapsed();
    (Phase { latencies, wall }, total as f64 / wall.as_secs_f64())
}

/// WATCHES watches open on one namespace, then FAN_WRITES creates one at a time, each
/// once every watch has its event (or EVENT_WAIT passed): write-to-event time per watch.
async fn fan_out(api: &Api) -> (Vec<Duration>, usize) {
    api.namespace("fan").await;
    let rv = api.revision("fan").await;
    let opened = Arc::new(AtomicUsize::new(0));
    let got: Arc<Vec<AtomicUsize>> = Arc::new((0..FAN_WRITES).map(|_| AtomicUsize::new(0)).collect());
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    let mut watchers = Vec::new();
    for _ in 0..WATCHES {
        let (api, rv, opened, got, gate) = (api.clone(), rv.clone(), opened.clone(), got.clone(), gate.clone());
        watchers.push(tokio::spawn(async move {
            // Connections are opened a few at a time: a thousand handshakes at once measure
            // the handshakes.
            let permit = gate.acquire_owned().await.unwrap();
            let mut arrivals = Vec::new();
            api.watch(
                "fan",
                &rv,
                || {
                    drop(permit);
                    opened.fetch_add(1, Ordering::SeqCst);
                },
                |name, at| {
                    if let Some(k) =
                        name.strip_prefix("fan-").and_then(|k| k.parse::<usize>().ok()).filter(|k| *k < FAN_WRITES)
                    {
                        arrivals.push((k, at));
                        got[k].fetch_add(1, Ordering::SeqCst);
                    }
                    arrivals.len() < FAN_WRITES
                },
            )
            .await;
            arrivals
        }));
    }
    let deadline = Instant::now() + EVENT_WAIT * 3;
    while opened.load(Ordering::SeqCst) < WATCHES && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let open = opened.load(Ordering::SeqCst);
    let mut sent = Vec::new();
    for (k, seen) in got.iter().enumerate() {
        sent.push(Instant::now());
        api.create("fan", &format!("fan-{k}")).await;
        let deadline = Instant::now() + EVENT_WAIT;
        while seen.load(Ordering::SeqCst) < open && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut latencies = Vec::new();
    for w in watchers {
        w.abort();
        if let Ok(arrivals) = w.await {
            latencies.extend(arrivals.into_iter().map(|(k, at)| at.saturating_duration_since(sent[k])));
        }
    }
    (latencies, open)
}

/// BIG_LIST pods in one namespace, then BIG_LISTS lists of all of them by 64 clients.
async fn big_list(api: &Api) -> Phase {
    api.namespace("big").await;
    run(64, BIG_LIST, {
        let api = api.clone();
        move |i| {
            let api = api.clone();
            async move { api.pod("big", &format!("pod-{i}")).await }
        }
    })
    .await;
    run(64, BIG_LISTS, {
        let api = api.clone();
        move |_| {
            let api = api.clone();
            async move {
                let body =
                    api.send(reqwest::Method::GET, "/api/v1/namespaces/big/pods", None).await.bytes().await.unwrap();
                assert!(body.len() > BIG_LIST * 100, "a list of {BIG_LIST} pods came back with {} bytes", body.len());
            }
        }
    })
    .await
}

/// The server's VmRSS in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// ConfigMaps created by 64 clients until STORED objects are stored in all (counting
/// what earlier phases left), over ten namespaces; the server's VmRSS then, and after one
/// list of all of them.
async fn stored(api: &Api, pid: u32, already: usize) -> String {
    for n in 0..10 {
        api.namespace(&format!("stored-{n}")).await;
    }
    let more = STORED.saturating_sub(already);
    run(64, more, {
        let api = api.clone();
        move |i| {
            let api = api.clone();
            async move { api.create(&format!("stored-{}", i % 10), &format!("cm-{i}")).await }
        }
    })
    .await;
    let after_writes = rss_mib(pid);
    api.send(reqwest::Method::GET, "/api/v1/configmaps", None).await.bytes().await.unwrap();
    format!(
        "sqlite: {STORED} objects stored: server VmRSS {after_writes:.0} MiB; {:.0} MiB after one list of every ConfigMap",
        rss_mib(pid)
    )
}

fn raise_fd_limit() {
    // A thousand watches are a thousand connections, here and in the server we start.
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    raise_fd_limit();
    // `cargo bench --bench api -- big`: the big list and the memory phases alone.
    let only_big = std::env::args().any(|a| a == "big");
    // `cargo bench --bench api -- paced`: the paced creates on SQLite alone.
    let only_paced = std::env::args().any(|a| a == "paced");
    let work = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for backend in ["sqlite", "etcd"] {
        if (only_big || only_paced) && backend != "sqlite" {
            continue;
        }
        let etcd = (backend == "etcd").then(|| Etcd::start(&work.path().join("etcd")));
        let extra: Vec<&str> = etcd.as_ref().map(|e| vec!["--etcd", e.url.as_str()]).unwrap_or_default();
        let s = Server::start(&work.path().join(backend), free_port(), &extra);
        let api = Api::new(&s, 2 * WATCHES);
        rt.block_on(async {
            if only_paced {
                let (phase, rate) = paced(&api).await;
                rows.push(phase.row(backend, "paced", "create"));
                notes.push(format!("{backend}: paced creates at {PACED_RATE}/s for {}s: {rate:.0}/s achieved", PACED_FOR.as_secs()));
                return;
            }
            if backend == "sqlite" {
                let big = big_list(&api).await;
                rows.push(big.row(backend, "64", "list10k"));
                notes.push(stored(&api, s.pid(), BIG_LIST).await);
            }
            if only_big {
                return;
            }
            api.namespace("listed").await;
            for i in 0..LISTED {
                api.create("listed", &format!("l-{i}")).await;
            }
            levels(&api, backend, &mut rows).await;
            let (phase, rate) = paced(&api).await;
            rows.push(phase.row(backend, "paced", "create"));
            notes.push(format!("{backend}: paced creates at {PACED_RATE}/s for {}s: {rate:.0}/s achieved", PACED_FOR.as_secs()));
            let (mut fan, open) = fan_out(&api).await;
            notes.push(format!(
                "{backend}: {open} watches open, {FAN_WRITES} writes: write-to-event p50 {:.2} ms, p99 {:.2} ms over {} events",
                ms(pct(&mut fan, 0.5)),
                ms(pct(&mut fan, 0.99)),
                fan.len()
            ));
        });
        drop(api);
        drop(s);
        drop(etcd);
    }
    drop(rt);
    println!("nodectl server API: ConfigMaps over HTTPS/1.1 keep-alive with the admin token; latency in ms");
    println!("{:<7} {:>7} {:<7} {:>6} {:>9} {:>9} {:>9}", "backend", "clients", "op", "n", "p50", "p99", "ops/s");
    for r in &rows {
        println!("{r}");
    }
    println!(
        "(watch: from sending a create to its event on a watch open meanwhile; list{LISTED}: a namespace of {LISTED} ConfigMaps; list10k: a namespace of {BIG_LIST} pods, {BIG_LISTS} lists)"
    );
    for n in &notes {
        println!("{n}");
    }
    println!(
        "aim (issue 5): p99 under 10 ms at 1,000 writes/s on SQLite (the 'sqlite paced create' row); Kubernetes' SLO is 1 s p99 per write"
    );
}
