//! `make bench`: Services and cluster DNS on a node (issue 12). `nodectl server` and one
//! joined node daemon in a network namespace of its own (as tests/cluster_services.rs);
//! the bench measures:
//!
//! 1. Rule latency. N selector-less ClusterIP Services (N = 1,000, then 10,000: 9,000
//!    more), each with a hand-written EndpointSlice of two endpoints, created through the
//!    API (HTTPS keep-alive, up to 32 requests in flight) 20 Services at a time, each 20
//!    waited for in the node's table `nodectl_svc_<bridge>` before the next (written when
//!    a burst of 50 Services made a sync larger than the netlink socket's buffers; that
//!    is fixed, tests/services.rs, but the steps keep the creation measurable). (Listing
//!    the table with `nft` at 10,000 Services takes nft itself many minutes here, so
//!    the bench never lists it then: a chunk is in when `nft monitor` has shown each of
//!    its Services' endpoint rules added.) Then, 150 times: one
//!    Service's slice gets a new endpoint address (a merge patch), and the bench times
//!    from sending the patch to the moment a line of `nft monitor` (one process in the
//!    node's namespace, started before the first create) names the new address: the
//!    kernel sends that event when the batch is committed, so nothing lists the table per
//!    change. The time includes the API's write, the watch to the daemon,
//!    the daemon's sync and its netlink batch. Changes are 300 ms apart, more than the
//!    daemon's least time between syncs (250 ms, kube-proxy's minSyncPeriod), so each is
//!    a sync of its own. p50 / p99 for each N.
//!    kube-proxy (nftables mode) cannot be installed here (no registry has it, nor
//!    Debian); KEP-3866 publishes no latency figure to set beside ours (see below).
//! 2. HTTP through a ClusterIP against the pod IP. One busybox `httpd` pod behind a
//!    Service; from the node's namespace, 4 client threads each send HTTP/1.0 GETs, a new
//!    connection per request (busybox httpd closes each; the first packet of each
//!    connection is where the DNAT costs), to POD_IP:8080 and CLUSTER_IP:80 in turn,
//!    20 rounds of 300 requests each, interleaved so drift hits both alike: requests/s, p50 / p99
//!    latency of a whole request (connect, send, read to the close), and the ratio.
//! 3. DNS. UDP A queries, 8 in flight (8 threads, one outstanding each), in the node's
//!    namespace, for `web.default.svc.cluster.local` against the daemon's cluster DNS
//!    (the bridge's gateway, port 53): queries/s and p50 / p99. There is no internet
//!    here, so "the host's resolver path" is made in the node's namespace: the host's
//!    first nameserver address (from /etc/resolv.conf, which the daemon forwards to) is
//!    put on the namespace's loopback, and Debian's dnsmasq listens there and answers
//!    `host.bench.test` from its own data (TTL 0, so the daemon's forwarding cache keeps
//!    nothing and each query really is forwarded). The same client then asks the cluster
//!    DNS for `host.bench.test` (our forward to the host's resolver) and dnsmasq directly
//!    (the resolver alone). Without dnsmasq those two rows are skipped.
//!
//! `cargo bench --bench services -- PART…` runs only the parts named (`rules`, `http`,
//! `dns`); none named, all of them. Not a test: it asserts nothing about time. The
//! server, the daemon, the pods and the clients share the machine's cores.
//!
//! At the end the pods are deleted and waited for, the daemon and the server stopped, and
//! the node's namespace (its table, devices and dnsmasq address with it) and the LAN
//! removed.

#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::daemon::Node;
use common::lan::{Lan, ip};
use common::server::{Api, Server, free_port};
use futures_util::StreamExt;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use serde_json::{Value, json};

/// Services in flight while creating.
const CREATORS: usize = 32;
/// Services created before waiting until the kernel has them: the daemon sends each sync
/// as one netlink message, which fails above the socket's send buffer (see the README),
/// so a larger burst would never get into the kernel.
const CHUNK: usize = 20;
const CHANGES: usize = 150;
/// Between two changes: more than the daemon's MIN_SYNC (250 ms).
const CHANGE_GAP: Duration = Duration::from_millis(300);
const HTTP_CLIENTS: usize = 4;
const HTTP_ROUNDS: usize = 20;
/// Requests per client per round.
const HTTP_REQUESTS: usize = 75;
const DNS_CLIENTS: usize = 8;
/// Queries per client per row.
const DNS_QUERIES: usize = 2_000;
const SERVICE_NAME: &str = "web.default.svc.cluster.local.";
const HOST_NAME: &str = "host.bench.test.";
const HOST_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

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

/// Fields drop in order: the daemon, the server, then the LAN.
struct Cluster {
    node: Node,
    s: Server,
    lan: Lan,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        // As tests/cluster_services.rs: the service range goes into a veth pair of the
        // namespace's own, so nothing to a ClusterIP leaves it.
        let lan = Lan::new("nbs", 251, 1);
        let ns = lan.namespace(1);
        ip(&["-n", ns, "link", "add", "svc0", "type", "veth", "peer", "name", "svc1"]);
        for dev in ["svc0", "svc1"] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&["-n", ns, "route", "add", "10.96.0.0/12", "dev", "svc0"]);
        let dir = tempfile::tempdir().unwrap();
        let s = Server::start_on(&dir.path().join("data"), lan.server_ip(), free_port(), &[]);
        let mut node = Node::new("nbs", 250).with_busybox();
        node.netns = Some(lan.netns(1));
        let (token, ca) = (s.dir.join("node-token"), s.dir.join("ca.crt"));
        let serving = format!("{}:10250", lan.node_ip(1));
        node.start(&[
            "--server",
            &s.url(""),
            "--token-file",
            token.to_str().unwrap(),
            "--ca-file",
            ca.to_str().unwrap(),
            "--node-name",
            "node-1",
            "--serving-address",
            &serving,
        ]);
        Cluster { node, s, lan, dir }
    }

    fn get(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.s.kubectl(&all);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Waits until `f` gives something; the daemon's log in the failure.
    fn until<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < end, "{what}: never happened; the daemon's log:\n{}", self.node.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn apply(&self, name: &str, yaml: &str) {
        let path = self.dir.path().join(name);
        fs::write(&path, yaml).unwrap();
        self.s.ok(&["apply", "-f", path.to_str().unwrap()]);
    }

    fn table(&self) -> String {
        format!("nodectl_svc_{}", self.node.bridge)
    }

    /// The node's `service-ips` map, as nft lists it.
    fn service_ips(&self) -> String {
        let out =
            self.lan.in_node(1, "nft").args(["list", "map", "ip", &self.table(), "service-ips"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn cluster_ip(&self, svc: &str) -> Ipv4Addr {
        let v = self.until(&format!("service {svc}'s ClusterIP"), 30, || self.get(&["service", svc]));
        v["spec"]["clusterIP"].as_str().unwrap().parse().unwrap()
    }

    /// The pod's cluster DNS server: its bridge's gateway.
    fn dns_server(&self) -> Ipv4Addr {
        let cidr: ipnet::Ipv4Net = self.node.cidr.parse().unwrap();
        Ipv4Addr::from(u32::from(cidr.network()) + 1)
    }
}

/// Runs `f` on a thread of its own in the node's network namespace.
fn in_netns<T: Send + 'static>(netns: &Path, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let ns = fs::File::open(netns).unwrap();
    std::thread::spawn(move || {
        // setns(2) moves this thread alone.
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

const WEB: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: c
        image: busybox
        imagePullPolicy: Never
        ports: [{name: http, containerPort: 8080}]
        command: [sh, -c, 'mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www']
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
";

/// The web pod running and ready, its address, and the Service's ClusterIP with its rule
/// in the kernel.
fn web(c: &Cluster) -> (Ipv4Addr, Ipv4Addr) {
    c.apply("web.yaml", WEB);
    let pod_ip = c.until("the web pod ready", 120, || {
        let l = c.get(&["pods", "-l", "app=web"])?;
        let p = l["items"].as_array()?.first()?.clone();
        let ready = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then(|| p["status"]["podIP"].as_str().and_then(|s| s.parse().ok())).flatten()
    });
    let cluster_ip = c.cluster_ip("web");
    c.until("the web Service's rule", 60, || {
        c.service_ips().contains(&format!("{cluster_ip} . tcp . 80")).then_some(())
    });
    (pod_ip, cluster_ip)
}

// --- 1. Rule latency ---------------------------------------------------------------

fn endpoint_ip(i: usize, k: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + (2 * i + k) as u32)
}

/// The `j`th changed address: a range of its own, never an earlier one.
fn changed_ip(j: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 31, 0, 1)) + j as u32)
}

fn slice_endpoints(a: Ipv4Addr, b: Ipv4Addr) -> Value {
    json!([{"addresses": [a.to_string()], "conditions": {"ready": true}},
           {"addresses": [b.to_string()], "conditions": {"ready": true}}])
}

impl Api {
    /// POSTs `body` to `path` until it is stored (a 409: stored by an earlier try).
    async fn create(&self, path: &str, body: &Value) {
        for _ in 0..50 {
            let resp = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(body).send().await;
            match resp.map(|r| r.status().as_u16()) {
                Ok(201 | 409) => return,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        panic!("POST {path} {body} kept failing");
    }

    /// Services `s{from}`..`s{to}`, each with its slice, `CREATORS` at a time.
    async fn create_services(&self, from: usize, to: usize) {
        futures_util::stream::iter(from..to)
            .map(|i| {
                let api = self.clone();
                async move {
                    let name = format!("s{i}");
                    let svc = json!({
                        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                        "spec": {"ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]},
                    });
                    api.create("/api/v1/namespaces/default/services", &svc).await;
                    let slice = json!({
                        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": name}},
                        "addressType": "IPv4",
                        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
                        "endpoints": slice_endpoints(endpoint_ip(i, 0), endpoint_ip(i, 1)),
                    });
                    api.create("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", &slice).await;
                }
            })
            .buffer_unordered(CREATORS)
            .collect::<()>()
            .await;
    }

    /// Replaces the slice's endpoints; the status code.
    async fn patch_slice(&self, name: &str, endpoints: &Value) -> u16 {
        let resp = self
            .http
            .patch(format!("{}/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/{name}", self.base))
            .bearer_auth(&self.token)
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({"endpoints": endpoints}).to_string())
            .send()
            .await;
        resp.map(|r| r.status().as_u16()).unwrap_or(0)
    }
}

/// `nft monitor` in the node's namespace: each line it prints, with the moment it
/// arrived, on the channel; killed on drop.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Monitor {
    fn start(c: &Cluster) -> Monitor {
        let mut cmd = c.lan.in_node(1, "nft");
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.arg("monitor").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            // nft flushes each event's line.
            for line in out.lines() {
                let Ok(line) = line else { return };
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Monitor { child, lines }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a line of `nft monitor` names endpoint `ip` on port 8080 (in an endpoint
/// chain's name, `…:IP:8080`, or its DNAT, `to IP:8080`); not an address it is a prefix of.
fn names_endpoint(line: &str, ip: Ipv4Addr) -> bool {
    line.contains(&format!(":{ip}:8080")) || line.contains(&format!(" {ip}:8080"))
}

/// The last lines of the daemon's log, for a failure.
fn log_tail(c: &Cluster) -> String {
    let log = c.node.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Creates Services `have..n` in chunks of `CHUNK`, each chunk in the kernel (by the
/// monitor) before the next, then times `CHANGES` endpoint changes.
fn rules(
    c: &Cluster,
    rt: &tokio::runtime::Runtime,
    api: &Api,
    monitor: &Monitor,
    have: usize,
    n: usize,
    next: &mut usize,
) {
    let t = Instant::now();
    for from in (have..n).step_by(CHUNK) {
        let to = (from + CHUNK).min(n);
        rt.block_on(api.create_services(from, to));
        let mut want: Vec<Ipv4Addr> = (from..to).map(|i| endpoint_ip(i, 0)).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !want.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((_, line)) = monitor.lines.recv_timeout(left) else {
                panic!(
                    "Services s{from}..s{to}: {} not in the kernel within 60 s; the daemon's log ends:\n{}",
                    want.len(),
                    log_tail(c)
                );
            };
            if line.starts_with("add ") {
                want.retain(|ip| !names_endpoint(&line, *ip));
            }
        }
    }
    let created = t.elapsed();

    let (mut latency, mut acked, mut missed) = (Vec::new(), Vec::new(), 0);
    for j in 0..CHANGES {
        let i = (j * 7919) % n;
        let new = changed_ip(*next);
        *next += 1;
        while monitor.lines.try_recv().is_ok() {}
        let t0 = Instant::now();
        let code = rt.block_on(api.patch_slice(&format!("s{i}"), &slice_endpoints(new, endpoint_ip(i, 1))));
        if code != 200 {
            eprintln!("  the patch of slice s{i} answered {code}");
            missed += 1;
            continue;
        }
        acked.push(t0.elapsed());
        let deadline = t0 + Duration::from_secs(30);
        let mut got = None;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match monitor.lines.recv_timeout(left) {
                Ok((at, line)) if line.starts_with("add ") && names_endpoint(&line, new) => {
                    got = Some(at - t0);
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        match got {
            Some(d) => latency.push(d),
            None => missed += 1,
        }
        std::thread::sleep(CHANGE_GAP);
    }
    let missed = if missed > 0 { format!(", {missed} failed or not seen within 30 s") } else { String::new() };
    println!(
        "  {n:>6} Services  change to kernel p50 {:>7.1} ms  p99 {:>7.1} ms   (API write acknowledged p50 {:.1} ms; \
         {CHANGES} changes{missed}; {} Services created, {CHUNK} at a time each waited into the kernel, in {:.1} s: \
         {:.0}/s)",
        ms(pct(&mut latency, 0.5)),
        ms(pct(&mut latency, 0.99)),
        ms(pct(&mut acked, 0.5)),
        n - have,
        created.as_secs_f64(),
        (n - have) as f64 / created.as_secs_f64(),
    );
}

// --- 2. HTTP ----------------------------------------------------------------------

/// One HTTP/1.0 GET on a new connection: its time, or None if it failed.
fn get(addr: SocketAddr) -> Option<Duration> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).ok()?;
    let d = t.elapsed();
    body.starts_with(b"HTTP/1.").then_some(())?;
    body.windows(4).position(|w| w == b" 200").filter(|p| *p < 16)?;
    Some(d)
}

#[derive(Default)]
struct Tally {
    times: Vec<Duration>,
    failed: usize,
    elapsed: Duration,
}

/// `HTTP_CLIENTS` threads in the node's namespace, `HTTP_REQUESTS` requests each.
fn http_round(netns: &Path, addr: SocketAddr, into: &mut Tally) {
    let t = Instant::now();
    let clients: Vec<_> = (0..HTTP_CLIENTS)
        .map(|_| in_netns(netns, move || (0..HTTP_REQUESTS).map(|_| get(addr)).collect::<Vec<_>>()))
        .collect();
    for c in clients {
        for r in c.join().unwrap() {
            match r {
                Some(d) => into.times.push(d),
                None => into.failed += 1,
            }
        }
    }
    into.elapsed += t.elapsed();
}

fn http(c: &Cluster, pod_ip: Ipv4Addr, cluster_ip: Ipv4Addr) {
    let netns = c.lan.netns(1);
    let pod = SocketAddr::from((pod_ip, 8080));
    let svc = SocketAddr::from((cluster_ip, 80));
    for addr in [pod, svc] {
        let netns = netns.clone();
        c.until(&format!("an answer from {addr}"), 60, move || in_netns(&netns, move || get(addr)).join().unwrap());
    }
    let (mut direct, mut through) = (Tally::default(), Tally::default());
    for _ in 0..HTTP_ROUNDS {
        http_round(&netns, pod, &mut direct);
        http_round(&netns, svc, &mut through);
    }
    let rate = |t: &Tally| t.times.len() as f64 / t.elapsed.as_secs_f64();
    let (pod_rate, svc_rate) = (rate(&direct), rate(&through));
    for (what, t, r) in [("pod IP   ", &mut direct, pod_rate), ("ClusterIP", &mut through, svc_rate)] {
        let failed = if t.failed > 0 { format!(" ({} failed)", t.failed) } else { String::new() };
        println!(
            "  {what}  {r:>7.0} requests/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} requests{failed})",
            ms(pct(&mut t.times, 0.5)),
            ms(pct(&mut t.times, 0.99)),
            t.times.len(),
        );
    }
    println!("  ClusterIP / pod IP: {:.3} of the requests/s (aim: within 5%)", svc_rate / pod_rate);
}

// --- 3. DNS -----------------------------------------------------------------------

fn query(id: u16, name: &Name) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id).set_recursion_desired(true).add_query(Query::query(name.clone(), RecordType::A));
    m.to_vec().unwrap()
}

/// Asks `server` for `name` until it answers with an address; that address.
fn resolve_once(server: SocketAddr, name: &str) -> Option<Ipv4Addr> {
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    sock.connect(server).ok()?;
    sock.send(&query(1, &Name::from_ascii(name).ok()?)).ok()?;
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).ok()?;
    let m = Message::from_vec(&buf[..n]).ok()?;
    m.answers().iter().find_map(|r| r.data().as_a().map(|a| a.0))
}

/// One client: `DNS_QUERIES` queries, one outstanding; the times of the answered ones
/// and how many got no good answer within 2 s.
fn dns_client(server: SocketAddr, name: &str, seed: u16) -> (Vec<Duration>, usize) {
    let name = Name::from_ascii(name).unwrap();
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.connect(server).unwrap();
    let (mut times, mut failed) = (Vec::with_capacity(DNS_QUERIES), 0);
    let mut buf = [0u8; 1500];
    for q in 0..DNS_QUERIES {
        let id = seed.wrapping_mul(4099).wrapping_add(q as u16);
        let t = Instant::now();
        sock.send(&query(id, &name)).unwrap();
        let ok = loop {
            // A late answer to an earlier query is skipped.
            let Ok(n) = sock.recv(&mut buf) else { break false };
            let Ok(m) = Message::from_vec(&buf[..n]) else { continue };
            if m.id() == id {
                break m.response_code() == ResponseCode::NoError && !m.answers().is_empty();
            }
        };
        if ok {
            times.push(t.elapsed());
        } else {
            failed += 1;
        }
    }
    (times, failed)
}

fn dns_row(netns: &Path, what: &str, server: SocketAddr, name: &'static str) {
    let t = Instant::now();
    let clients: Vec<_> =
        (0..DNS_CLIENTS).map(|k| in_netns(netns, move || dns_client(server, name, k as u16 + 1))).collect();
    let (mut times, mut failed) = (Vec::new(), 0);
    for c in clients {
        let (t, f) = c.join().unwrap();
        times.extend(t);
        failed += f;
    }
    let elapsed = t.elapsed();
    let failed = if failed > 0 { format!(", {failed} unanswered or failed") } else { String::new() };
    println!(
        "  {what:<66} {:>7.0} queries/s  p50 {:>6.3} ms  p99 {:>6.3} ms  ({} queries{failed})",
        times.len() as f64 / elapsed.as_secs_f64(),
        ms(pct(&mut times, 0.5)),
        ms(pct(&mut times, 0.99)),
        times.len(),
    );
}

/// The host's first IPv4 nameserver (what the daemon forwards to).
fn host_nameserver() -> Option<Ipv4Addr> {
    let text = fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| l.trim().strip_prefix("nameserver")?.trim().parse().ok())
}

/// dnsmasq on `addr` in the node's namespace, answering `HOST_NAME` alone; killed on drop.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(c: &Cluster, addr: Ipv4Addr) -> Option<Dnsmasq> {
        if !addr.is_loopback() {
            ip(&["-n", c.lan.namespace(1), "addr", "add", &format!("{addr}/32"), "dev", "lo"]);
        }
        let mut cmd = c.lan.in_node(1, "dnsmasq");
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces"])
            .args(["--port=53", "--pid-file=", "--user=root", "--local-ttl=0", "--cache-size=0"])
            .arg(format!("--listen-address={addr}"))
            .arg(format!("--address=/{}/{HOST_ANSWER}", HOST_NAME.trim_end_matches('.')))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Dnsmasq(child))
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dns(c: &Cluster, cluster_ip: Ipv4Addr) {
    let netns = c.lan.netns(1);
    let cluster_dns = SocketAddr::from((c.dns_server(), 53));
    {
        let netns = netns.clone();
        let got = c.until("the cluster DNS's answer for web", 60, move || {
            in_netns(&netns, move || resolve_once(cluster_dns, SERVICE_NAME)).join().unwrap()
        });
        assert_eq!(got, cluster_ip, "{SERVICE_NAME}");
    }
    dns_row(&netns, &format!("cluster DNS, {SERVICE_NAME} (its zone)"), cluster_dns, SERVICE_NAME);

    let Some(upstream) = host_nameserver() else {
        println!("  (forwarding not measured: /etc/resolv.conf names no IPv4 nameserver)");
        return;
    };
    let Some(_dnsmasq) = Dnsmasq::start(c, upstream) else {
        println!("  (forwarding not measured: dnsmasq is not installed; Debian's dnsmasq-base has it)");
        return;
    };
    let resolver = SocketAddr::from((upstream, 53));
    for (server, what) in [(resolver, "dnsmasq"), (cluster_dns, "the cluster DNS's forward")] {
        let netns = netns.clone();
        let got = c.until(&format!("{what}'s answer for {HOST_NAME}"), 30, move || {
            in_netns(&netns, move || resolve_once(server, HOST_NAME)).join().unwrap()
        });
        assert_eq!(got, HOST_ANSWER, "{what}");
    }
    dns_row(&netns, &format!("cluster DNS, {HOST_NAME} (forwarded to {upstream})"), cluster_dns, HOST_NAME);
    dns_row(&netns, &format!("the resolver at {upstream} (dnsmasq) alone, {HOST_NAME}"), resolver, HOST_NAME);
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // Thousands of connections to the server, and TIME_WAITs of the HTTP part.
    // SAFETY: getrlimit/setrlimit only read and write this process's limits.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let parts: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut c = Cluster::start();
    let api = Api::new(&c.s, usize::MAX);
    println!("Services and cluster DNS on one node (a server and a joined node daemon in a netns of its own):");

    let (pod_ip, cluster_ip) = web(&c);
    if run("http") {
        println!(
            "HTTP/1.0 GETs, a new connection each, {HTTP_CLIENTS} clients in the node's namespace, \
             {HTTP_ROUNDS} interleaved rounds of {} requests per target:",
            HTTP_CLIENTS * HTTP_REQUESTS
        );
        http(&c, pod_ip, cluster_ip);
    }
    if run("dns") {
        println!("DNS A queries over UDP, {DNS_CLIENTS} in flight, from the node's namespace:");
        dns(&c, cluster_ip);
    }
    if run("rules") {
        println!(
            "EndpointSlice change to the rule in the kernel (nft monitor in the node's namespace), {CHANGES} changes \
             {} ms apart:",
            CHANGE_GAP.as_millis()
        );
        let monitor = Monitor::start(&c);
        // nft reads the ruleset before it listens; a change made meanwhile would be missed.
        std::thread::sleep(Duration::from_secs(2));
        let mut next = 0;
        rules(&c, &rt, &api, &monitor, 0, 1_000, &mut next);
        rules(&c, &rt, &api, &monitor, 1_000, 10_000, &mut next);
        println!(
            "  kube-proxy (nftables mode) could not be run here; KEP-3866 publishes no figure for this: its \
             \"Scalability & Performance tests\" section says only that an nftables scalability job exists and \
             \"initial performance is fine\"."
        );
    }

    // The pods go first (their monitors and mounts), then everything else on drop.
    c.s.ok(&["delete", "deployment", "web"]);
    c.s.ok(&["delete", "pods", "--all", "--grace-period=0"]);
    c.until("every pod stopped", 60, || {
        let n = fs::read_dir(c.node.root().join("pods")).map(|d| d.count()).unwrap_or(0);
        (n == 0).then_some(())
    });
    c.node.kill_daemon();
}
