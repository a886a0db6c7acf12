//! Service rules against the real kernel (run as root), with real traffic: a "node"
//! network namespace holding the bridge and the Service table, pod namespaces on the
//! bridge running small servers, and a client pod. Everything lives inside namespaces
//! the test makes, so dropping them removes the bridge, the veths and the table.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nodectl::network::services::{ClusterInfo, Endpoint, Proxy, ServicePort, Snapshot};
use nodectl::network::{self, NetConfig, Protocol};

static NEXT: AtomicU32 = AtomicU32::new(0);

struct World {
    cfg: NetConfig,
    dir: tempfile::TempDir,
    node: PathBuf,
    pods: Vec<(String, PathBuf)>,
}

impl World {
    fn new() -> World {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let dir = tempfile::tempdir().unwrap();
        let bridge = format!("nsv{:05}{n}", pid % 100_000);
        // Inside the test's own node namespace, so any CIDR is free.
        let cfg = NetConfig::new(&bridge, "10.244.1.0/24", dir.path().join("network")).unwrap();
        let node = dir.path().join("ns-node");
        network::create_netns(&node).unwrap();
        let w = World { cfg, dir, node, pods: Vec::new() };
        // A default route out of a dummy device, so a packet to a ClusterIP without
        // endpoints is routed (and reaches our reject) as on a real node; forwarding on.
        for args in [
            &["link", "add", "dflt0", "type", "veth", "peer", "name", "dflt1"][..],
            &["link", "set", "dflt1", "up"],
            &["link", "set", "dflt0", "up"],
            &["link", "set", "lo", "up"],
            &["route", "add", "default", "dev", "dflt0"],
        ] {
            w.ip(args);
        }
        network::run_in_netns(&w.node, || std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")).unwrap().unwrap();
        w
    }

    fn ip(&self, args: &[&str]) {
        let st = std::process::Command::new("nsenter")
            .arg(format!("--net={}", self.node.display()))
            .arg("ip")
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "ip {args:?}");
    }

    fn pod(&mut self, key: &str) -> (PathBuf, Ipv4Addr) {
        let ns = self.dir.path().join(format!("ns-{key}"));
        network::create_netns(&ns).unwrap();
        self.pods.push((key.to_string(), ns.clone()));
        let cfg = self.cfg.clone();
        let att = network::run_in_netns(&self.node, || network::setup(&cfg, key, &ns, &[])).unwrap().unwrap();
        (ns, att.ip)
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cfg.cidr.network()) + 1)
    }

    fn proxy(&self) -> Proxy {
        let bridge = self.cfg.bridge.clone();
        network::run_in_netns(&self.node, || Proxy::new(&bridge)).unwrap().unwrap()
    }

    /// `nft -a list table` of the Service table, in the node namespace.
    fn nft_list(&self) -> String {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", self.node.display()))
            .args(["nft", "-a", "list", "table", "ip", &network::services::table_name(&self.cfg.bridge)])
            .output()
            .unwrap();
        assert!(out.status.success(), "nft list: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn snapshot(&self, ports: Vec<ServicePort>) -> Snapshot {
        Snapshot { cluster: ClusterInfo { cluster_cidr: Some(self.cfg.cidr) }, ports }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let cfg = self.cfg.clone();
        let pods = self.pods.clone();
        let r = network::run_in_netns(&self.node, || {
            for (key, _) in &pods {
                if let Err(e) = network::teardown(&cfg, key) {
                    eprintln!("cleanup: teardown {key}: {e}");
                }
            }
            if let Err(e) = network::remove_bridge(&cfg) {
                eprintln!("cleanup: remove_bridge: {e}");
            }
        });
        if let Err(e) = r {
            eprintln!("cleanup: {e}");
        }
        for (_, ns) in &self.pods {
            if let Err(e) = network::remove_netns(ns) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Err(e) = network::remove_netns(&self.node) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A server in a pod namespace answering each TCP connection or UDP datagram with
/// its name; stops when dropped.
struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &Path, port: u16, name: &str) -> Server {
        let (l, u) = network::run_in_netns(ns, || {
            (TcpListener::bind(("0.0.0.0", port)).unwrap(), UdpSocket::bind(("0.0.0.0", port)).unwrap())
        })
        .unwrap();
        l.set_nonblocking(true).unwrap();
        u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (s1, n1) = (stop.clone(), name.to_string());
        let tcp = std::thread::spawn(move || {
            while !s1.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, peer)) => {
                        let _ = c.write_all(format!("{n1} {}\n", peer.ip()).as_bytes());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
        });
        let (s2, n2) = (stop.clone(), name.to_string());
        let udp = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !s2.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = u.recv_from(&mut buf) {
                    let _ = u.send_to(format!("{n2} {}", peer.ip()).as_bytes(), peer);
                }
            }
        });
        Server { stop, threads: vec![tcp, udp] }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connects from `ns` to ip:port over TCP; the server's answer: "NAME CLIENT_IP".
fn tcp_from(ns: &Path, ip: Ipv4Addr, port: u16) -> std::io::Result<String> {
    let c = network::run_in_netns(ns, || {
        TcpStream::connect_timeout(&SocketAddr::new(IpAddr::V4(ip), port), Duration::from_secs(5))
    })
    .unwrap()?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&c).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

fn udp_from(ns: &Path, ip: Ipv4Addr, port: u16) -> std::io::Result<String> {
    let s = network::run_in_netns(ns, || UdpSocket::bind(("0.0.0.0", 0))).unwrap()?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.send_to(b"hi", (ip, port))?;
    let mut buf = [0u8; 64];
    let n = s.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn ep(ip: Ipv4Addr, port: u16) -> Endpoint {
    Endpoint { ip, port, ready: true, serving: true, terminating: false, local: true }
}

fn service(name: &str, cip: Ipv4Addr, protocol: Protocol, port: u16, eps: Vec<Endpoint>) -> ServicePort {
    ServicePort::cluster_ip(name, cip, protocol, port, eps)
}

/// The lines of `nft -a list` inside the chain `name` (with their handles).
fn chain_lines(listing: &str, name: &str) -> Vec<String> {
    let head = format!("chain {name} {{");
    let head_quoted = format!("chain \"{name}\" {{");
    let mut out = Vec::new();
    let mut inside = false;
    for l in listing.lines() {
        let t = l.trim();
        if t.starts_with(&head) || t.starts_with(&head_quoted) {
            inside = true;
            continue;
        }
        if inside {
            if t == "}" {
                break;
            }
            out.push(t.to_string());
        }
    }
    out
}

#[test]
fn cluster_ip_spreads_rejects_without_endpoints_and_updates_in_place() {
    let mut w = World::new();
    let (a_ns, a_ip) = w.pod("a");
    let (b_ns, b_ip) = w.pod("b");
    let (client, client_ip) = w.pod("client");
    let _sa = Server::start(&a_ns, 8080, "a");
    let _sb = Server::start(&b_ns, 8080, "b");
    let web = Ipv4Addr::new(10, 96, 0, 10);
    let empty = Ipv4Addr::new(10, 96, 0, 11);
    let mut proxy = w.proxy();
    let mut ports = vec![
        service("default/web:http", web, Protocol::Tcp, 80, vec![ep(a_ip, 8080), ep(b_ip, 8080)]),
        service("default/web:dns", web, Protocol::Udp, 53, vec![ep(a_ip, 8080)]),
        service("default/empty:http", empty, Protocol::Tcp, 80, vec![]),
    ];
    let applied = proxy.apply(&w.snapshot(ports.clone())).unwrap();
    assert!(applied.full);

    let listing = w.nft_list();
    assert!(listing.contains("map service-ips"), "{listing}");
    assert!(listing.contains("ipv4_addr . inet_proto . inet_service : verdict"), "{listing}");
    assert!(listing.contains("10.96.0.10 . tcp . 80 : goto"), "{listing}");
    assert!(listing.contains("numgen random mod 2 vmap"), "{listing}");
    assert!(listing.contains("10.96.0.11 . tcp . 80 : goto reject-chain"), "{listing}");

    // Random spread: both endpoints answer (the odds of 200 draws all alike are 2^-199),
    // and the client keeps its own address (it is inside the cluster CIDR).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let answer = tcp_from(&client, web, 80).unwrap();
        assert!(answer.ends_with(&client_ip.to_string()), "{answer}");
        seen.insert(answer.split(' ').next().unwrap().to_string());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(udp_from(&client, web, 53).unwrap().starts_with("a "));

    // No endpoints: refused at once, not a timeout.
    let e = tcp_from(&client, empty, 80).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");

    // Hairpin: a reaches itself through the Service, masqueraded to the gateway.
    ports[0].endpoints = vec![ep(a_ip, 8080)];
    let established = network::run_in_netns(&client, || TcpStream::connect((web, 80))).unwrap().unwrap();
    let before = w.nft_list();
    let udp_chain = chain_lines(&before, "svc:default/web:dns/udp");
    assert!(!udp_chain.is_empty(), "{before}");
    proxy.apply(&w.snapshot(ports.clone())).unwrap();
    assert_eq!(tcp_from(&a_ns, web, 80).unwrap(), format!("a {}", w.gateway()));

    // The other Services' rules kept their handles.
    let after = w.nft_list();
    assert_eq!(chain_lines(&after, "svc:default/web:dns/udp"), udp_chain);
    // The connection made before the update still answers.
    let mut line = String::new();
    established.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    BufReader::new(&established).read_line(&mut line).unwrap();
    assert!(line.starts_with('a') || line.starts_with('b'), "{line}");

    // Endpoints for the empty Service: it answers; deleting web removes its chains.
    ports[2].endpoints = vec![ep(b_ip, 8080)];
    ports.truncate(1);
    ports[0] = service("default/empty:http", empty, Protocol::Tcp, 80, vec![ep(b_ip, 8080)]);
    proxy.apply(&w.snapshot(ports.clone())).unwrap();
    assert!(tcp_from(&client, empty, 80).unwrap().starts_with("b "));
    let listing = w.nft_list();
    assert!(!listing.contains("default/web"), "{listing}");

    // A new proxy (a daemon restart) rewrites the table from its snapshot alone.
    let mut again = w.proxy();
    assert!(again.apply(&w.snapshot(vec![])).unwrap().full);
    let listing = w.nft_list();
    assert!(!listing.contains("default/"), "{listing}");
}

#[test]
fn node_ports_load_balancer_ips_and_traffic_policies() {
    let mut w = World::new();
    let (a_ns, a_ip) = w.pod("a");
    let (client, _) = w.pod("client");
    let _sa = Server::start(&a_ns, 9090, "a");
    let cip = Ipv4Addr::new(10, 96, 0, 20);
    let lb = Ipv4Addr::new(192, 0, 2, 20);
    let mut p = service("default/np:http", cip, Protocol::Tcp, 80, vec![ep(a_ip, 9090)]);
    p.node_port = Some(30080);
    p.load_balancer_ips = vec![lb];
    let mut sctp = service("default/np:sctp", cip, Protocol::Sctp, 80, vec![ep(a_ip, 9090)]);
    sctp.node_port = Some(30081);
    let mut proxy = w.proxy();
    proxy.apply(&w.snapshot(vec![p.clone(), sctp])).unwrap();
    let listing = w.nft_list();
    assert!(listing.contains("tcp . 30080 : goto"), "{listing}");
    assert!(listing.contains("sctp . 30081 : goto"), "{listing}");
    assert!(listing.contains("192.0.2.20 . tcp . 80 : goto"), "{listing}");

    // NodePort from the node itself (to its bridge address): masqueraded (Cluster policy).
    let node = w.node.clone();
    assert_eq!(tcp_from(&node, w.gateway(), 30080).unwrap(), format!("a {}", w.gateway()));
    // A pod reaching the load-balancer IP.
    assert!(tcp_from(&client, lb, 80).unwrap().starts_with("a "));

    // externalTrafficPolicy Local with no local endpoint: the NodePort drops (checked in
    // the rules, a drop can only be seen as a timeout), pods still use the cluster path.
    p.external_local = true;
    p.endpoints[0].local = false;
    proxy.apply(&w.snapshot(vec![p.clone()])).unwrap();
    let listing = w.nft_list();
    let ext = chain_lines(&listing, "ext:default/np:http/tcp");
    assert!(ext.iter().any(|l| l.starts_with("drop")), "{listing}");
    assert!(tcp_from(&client, lb, 80).unwrap().starts_with("a "));

    // internalTrafficPolicy Local with no local endpoint: the ClusterIP rejects.
    p.internal_local = true;
    proxy.apply(&w.snapshot(vec![p])).unwrap();
    let e = tcp_from(&client, cip, 80).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
}

#[test]
fn client_ip_affinity_keeps_a_client_on_one_endpoint() {
    let mut w = World::new();
    let (a_ns, a_ip) = w.pod("a");
    let (b_ns, b_ip) = w.pod("b");
    let (client, _) = w.pod("client");
    let (other, _) = w.pod("other");
    let _sa = Server::start(&a_ns, 8080, "a");
    let _sb = Server::start(&b_ns, 8080, "b");
    let web = Ipv4Addr::new(10, 96, 0, 20);
    let mut proxy = w.proxy();
    let mut port = service("default/sticky:http", web, Protocol::Tcp, 80, vec![ep(a_ip, 8080), ep(b_ip, 8080)]);
    port.affinity_timeout = Some(600);
    proxy.apply(&w.snapshot(vec![port.clone()])).unwrap();
    let listing = w.nft_list();
    assert!(listing.contains("flags dynamic,timeout"), "{listing}");
    assert!(listing.contains("timeout 10m"), "{listing}");
    assert!(listing.contains("update @"), "{listing}");

    // Every connection of a client goes where its first went (without affinity, 40
    // draws all alike would have odds of 2^-39).
    for ns in [&client, &other] {
        let first = tcp_from(ns, web, 80).unwrap();
        let server = first.split(' ').next().unwrap().to_string();
        for _ in 0..40 {
            let answer = tcp_from(ns, web, 80).unwrap();
            assert!(answer.starts_with(&format!("{server} ")), "{answer} after {first}");
        }
    }

    // Affinity off: the sets go, and the spread is random again.
    port.affinity_timeout = None;
    proxy.apply(&w.snapshot(vec![port])).unwrap();
    let listing = w.nft_list();
    assert!(!listing.contains("aff:"), "{listing}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        seen.insert(tcp_from(&client, web, 80).unwrap().split(' ').next().unwrap().to_string());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

/// A whole table in one batch, as a restarted daemon writes it: 5,000 Service ports with
/// two endpoints each is a batch of megabytes and tens of thousands of acknowledgements,
/// far past the netlink socket's default buffers (it failed with EMSGSIZE, and the daemon
/// retried the same whole-table batch for ever), and maps whose element lists pass
/// netlink's 64 KiB attribute limit (from about 1,000 Services the length wrapped: the
/// last Services had no rules, then the batch failed with ENOENT). Then the last port
/// answers, and an update that removes them all goes through too.
#[test]
fn thousands_of_services_go_in_one_batch() {
    let mut w = World::new();
    let (a_ns, a_ip) = w.pod("a");
    let (client, _) = w.pod("client");
    let _sa = Server::start(&a_ns, 8080, "a");
    let mut proxy = w.proxy();
    let ports: Vec<ServicePort> = (0..5_000u32)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 10 + i);
            let other = Ipv4Addr::from(u32::from(a_ip) + 100);
            service(&format!("default/s{i}:http"), ip, Protocol::Tcp, 80, vec![ep(a_ip, 8080), ep(other, 8080)])
        })
        .collect();
    let last = ports.last().unwrap().cluster_ip.unwrap();
    let applied = proxy.apply(&w.snapshot(ports)).unwrap();
    assert!(applied.full);
    // Of the two endpoints only `a` answers; the other address is nobody's.
    let answered = (0..50).any(|_| tcp_from(&client, last, 80).is_ok_and(|a| a.starts_with("a ")));
    assert!(answered, "the last of 5,000 Services never reached its endpoint");
    proxy.apply(&w.snapshot(vec![])).unwrap();
}
