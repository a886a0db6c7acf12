//! Pod networking against the real kernel (run as root): namespaces, a bridge, veths,
//! the address pool and hostPort rules. Each test has its own bridge, CIDR, state dir
//! and namespaces, and its guard removes them all, also when the test fails. Traffic
//! goes only to loopback, to the test's bridge address and into its own namespaces.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nodectl::network::{self, Attachment, NetConfig, PortMapping, Protocol};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One test's network world; dropping it removes everything the test made.
struct World {
    cfg: NetConfig,
    dir: tempfile::TempDir,
    netns: Vec<PathBuf>,
    /// A base for host ports no other test of this run uses.
    port_base: u16,
}

impl World {
    fn new() -> World {
        World::with_prefix(24)
    }

    fn with_prefix(prefix: u8) -> World {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // 10.(200+pid%50).n.0: distinct for every test of this run, inside 10/8, clear
        // of the default 10.88/16.
        let cidr = format!("10.{}.{}.0/{prefix}", 200 + pid % 50, n % 256);
        let bridge = format!("ndt{:04x}", (pid.wrapping_mul(64) + n) & 0xffff);
        let dir = tempfile::tempdir().unwrap();
        let cfg = NetConfig::new(&bridge, &cidr, dir.path().join("network")).unwrap();
        let port_base = 40000 + ((pid % 400) * 50 + (n % 10) * 5) as u16;
        World { cfg, dir, netns: Vec::new(), port_base }
    }

    fn netns(&mut self, name: &str) -> PathBuf {
        let p = self.dir.path().join(format!("ns-{name}"));
        network::create_netns(&p).unwrap();
        self.netns.push(p.clone());
        p
    }

    fn pod(&mut self, key: &str, ports: &[PortMapping]) -> (PathBuf, Attachment) {
        let ns = self.netns(key);
        let att = network::setup(&self.cfg, key, &ns, ports).unwrap();
        (ns, att)
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cfg.cidr.network()) + 1)
    }

    fn table(&self) -> String {
        format!("nodectl_{}", self.cfg.bridge)
    }

    /// The comments of the pod rules in our table (None: no table).
    fn pod_rules(&self) -> Option<Vec<String>> {
        let out = std::process::Command::new("nft").args(["list", "table", "ip", &self.table()]).output().unwrap();
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Some(text.lines().filter(|l| l.contains("comment \"pod ")).map(|l| l.trim().to_string()).collect())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Err(e) = network::gc(&self.cfg, |_| false) {
            eprintln!("cleanup: gc: {e}");
        }
        if let Err(e) = network::remove_bridge(&self.cfg) {
            eprintln!("cleanup: remove_bridge: {e}");
        }
        for ns in &self.netns {
            if let Err(e) = network::remove_netns(ns) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn tcp(host_port: u16, container_port: u16) -> PortMapping {
    PortMapping { host_port, container_port, protocol: Protocol::Tcp, host_ip: None }
}

/// A TCP server in a namespace that answers each line with "NAME LINE"; stops and
/// closes its socket when dropped, so the namespace can go away.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn tcp(ns: &Path, port: u16, name: &str) -> Echo {
        let l = network::run_in_netns(ns, || TcpListener::bind(("0.0.0.0", port))).unwrap().unwrap();
        l.set_nonblocking(true).unwrap();
        let (stop, name) = (Arc::new(AtomicBool::new(false)), name.to_string());
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let mut line = String::new();
                        if BufReader::new(&c).read_line(&mut line).is_ok() {
                            let _ = (&c).write_all(format!("{name} {line}").as_bytes());
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        Echo { stop, thread: Some(thread) }
    }

    fn udp(ns: &Path, port: u16, name: &str) -> Echo {
        let u = network::run_in_netns(ns, || UdpSocket::bind(("0.0.0.0", port))).unwrap().unwrap();
        u.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let (stop, name) = (Arc::new(AtomicBool::new(false)), name.to_string());
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::SeqCst) {
                if let Ok((n, from)) = u.recv_from(&mut buf) {
                    let reply = format!("{name} {}", String::from_utf8_lossy(&buf[..n]));
                    let _ = u.send_to(reply.as_bytes(), from);
                }
            }
        });
        Echo { stop, thread: Some(thread) }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn talk(stream: std::io::Result<TcpStream>, msg: &str) -> std::io::Result<String> {
    let mut c = stream?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(format!("{msg}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(&c).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

fn connect(ip: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&SocketAddr::new(IpAddr::V4(ip), port), Duration::from_secs(5))
}

/// Talks to ip:port from inside the namespace `ns`.
fn talk_from(ns: &Path, ip: Ipv4Addr, port: u16, msg: &str) -> std::io::Result<String> {
    let stream = network::run_in_netns(ns, || connect(ip, port)).unwrap();
    talk(stream, msg)
}

#[test]
fn two_pods_reach_each_other_and_the_host() {
    let mut w = World::new();
    let (ns_a, a) = w.pod("pod-a", &[]);
    let (ns_b, b) = w.pod("pod-b", &[]);
    assert_ne!(a.ip, b.ip);
    for att in [&a, &b] {
        assert!(w.cfg.cidr.contains(&att.ip) && att.ip != w.gateway(), "{att:?}");
        assert_eq!((att.prefix, att.gateway), (24, w.gateway()));
        assert!(link_exists(&att.host_veth));
        let master = std::fs::read_link(format!("/sys/class/net/{}/master", att.host_veth)).unwrap();
        assert!(master.ends_with(&w.cfg.bridge), "{master:?}");
        let hairpin = std::fs::read_to_string(format!("/sys/class/net/{}/brport/hairpin_mode", att.host_veth));
        assert_eq!(hairpin.unwrap().trim(), "1");
    }
    // br_netfilter is built into this kernel, so bridged pod-to-pod traffic passes
    // the ip hooks (and our nat chains, once a pod has hostPorts) on its way.
    let _pa = w.pod("pod-c", &[tcp(w.port_base, 80)]);
    let _ea = Echo::tcp(&ns_a, 7000, "a");
    let _eb = Echo::tcp(&ns_b, 7000, "b");
    assert_eq!(talk_from(&ns_a, b.ip, 7000, "hi").unwrap(), "b hi");
    assert_eq!(talk_from(&ns_b, a.ip, 7000, "ho").unwrap(), "a ho");
    // The pod's own loopback is up.
    assert_eq!(talk_from(&ns_a, Ipv4Addr::LOCALHOST, 7000, "lo").unwrap(), "a lo");
    // The default route leads to the host through the bridge's address.
    let host = TcpListener::bind((w.gateway(), 0)).unwrap();
    let port = host.local_addr().unwrap().port();
    let stream = network::run_in_netns(&ns_a, || connect(w.gateway(), port)).unwrap().unwrap();
    let (_, peer) = host.accept().unwrap();
    assert_eq!(peer.ip(), IpAddr::V4(a.ip));
    drop(stream);
}

#[test]
fn host_ports_reach_the_pod_from_loopback_the_bridge_address_and_other_pods() {
    let mut w = World::new();
    let (hp, hp_lo, hp_udp) = (w.port_base, w.port_base + 1, w.port_base + 2);
    let only_lo = PortMapping { host_ip: Some(Ipv4Addr::LOCALHOST), ..tcp(hp_lo, 8081) };
    let udp = PortMapping { protocol: Protocol::Udp, ..tcp(hp_udp, 8082) };
    let (ns_a, _a) = w.pod("web", &[tcp(hp, 8080), only_lo, udp]);
    let (ns_b, _b) = w.pod("client", &[]);
    let _e = Echo::tcp(&ns_a, 8080, "web");
    let _e2 = Echo::tcp(&ns_a, 8081, "web-lo");
    let _e3 = Echo::udp(&ns_a, 8082, "web-udp");
    let gw = w.gateway();

    assert_eq!(talk(connect(Ipv4Addr::LOCALHOST, hp), "from lo").unwrap(), "web from lo");
    assert_eq!(talk(connect(gw, hp), "from host").unwrap(), "web from host");
    // Hairpin: another pod, and the pod itself, through the host port.
    assert_eq!(talk_from(&ns_b, gw, hp, "from b").unwrap(), "web from b");
    assert_eq!(talk_from(&ns_a, gw, hp, "from self").unwrap(), "web from self");
    // A mapping bound to 127.0.0.1 answers there only.
    assert_eq!(talk(connect(Ipv4Addr::LOCALHOST, hp_lo), "lo only").unwrap(), "web-lo lo only");
    assert!(talk(connect(gw, hp_lo), "not here").is_err());
    // UDP.
    let u = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    u.send_to(b"dgram", (Ipv4Addr::LOCALHOST, hp_udp)).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = u.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"web-udp dgram");

    assert_eq!(w.pod_rules().unwrap().len(), 6, "two rules (prerouting, output) per mapping");

    // Another pod cannot take a host port that is mapped already.
    let ns_c = w.netns("thief");
    let err = network::setup(&w.cfg, "thief", &ns_c, &[tcp(hp, 9999)]).unwrap_err();
    assert!(matches!(err, network::Error::PortInUse { .. }), "{err:?}");
    assert!(err.to_string().contains("\"web\""), "{err}");
    assert!(!link_exists(&network::host_veth_name(&w.cfg, "thief")));
    assert_eq!(network::allocations(&w.cfg).unwrap().len(), 2);
}

#[test]
fn teardown_leaves_no_veth_rule_or_address() {
    let mut w = World::new();
    let hp = w.port_base;
    let (_ns, a) = w.pod("gone", &[tcp(hp, 80)]);
    let (_ns2, b) = w.pod("stays", &[tcp(hp + 1, 80)]);
    assert_eq!(w.pod_rules().unwrap().len(), 4);
    network::teardown(&w.cfg, "gone").unwrap();
    assert!(!link_exists(&a.host_veth));
    let rules = w.pod_rules().unwrap();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(rules.iter().all(|r| r.contains(&b.host_veth)), "{rules:?}");
    let left = network::allocations(&w.cfg).unwrap();
    assert_eq!(left, vec![("stays".to_string(), b.ip)]);
    // Again, and for a pod never set up: nothing to do is not an error.
    network::teardown(&w.cfg, "gone").unwrap();
    network::teardown(&w.cfg, "never").unwrap();
    network::teardown(&w.cfg, "stays").unwrap();
    assert!(!link_exists(&b.host_veth));
    // The pod runner may remove the namespace first.
    let (ns, c) = w.pod("ns-first", &[]);
    network::remove_netns(&ns).unwrap();
    network::teardown(&w.cfg, "ns-first").unwrap();
    assert!(!link_exists(&c.host_veth));
    assert_eq!(w.pod_rules().unwrap(), Vec::<String>::new());
    assert!(network::allocations(&w.cfg).unwrap().is_empty());
}

#[test]
fn setting_up_a_pod_again_keeps_its_address_and_replaces_its_rules() {
    let mut w = World::new();
    let hp = w.port_base;
    let (ns, a) = w.pod("again", &[tcp(hp, 80)]);
    let a2 = network::setup(&w.cfg, "again", &ns, &[tcp(hp, 80)]).unwrap();
    assert_eq!(a, a2);
    assert_eq!(w.pod_rules().unwrap().len(), 2);
    let _e = Echo::tcp(&ns, 80, "again");
    assert_eq!(talk(connect(Ipv4Addr::LOCALHOST, hp), "x").unwrap(), "again x");
    // Its record lost (a crash before the pool was written): the leftover veth, named
    // after the pod, is replaced rather than refused.
    let pool = w.cfg.state_dir.join(&w.cfg.bridge).join("ipam.json");
    std::fs::write(&pool, br#"{"cidr": "0.0.0.0/0"}"#).unwrap();
    assert!(link_exists(&a.host_veth));
    let a3 = network::setup(&w.cfg, "again", &ns, &[]).unwrap();
    assert_eq!(a3.host_veth, a.host_veth);
    assert_eq!(w.pod_rules().unwrap(), Vec::<String>::new(), "its old rules go too");
    assert_eq!(talk(connect(a3.ip, 80), "y").unwrap(), "again y");
}

#[test]
fn concurrent_set_ups_get_distinct_addresses() {
    let mut w = World::new();
    let nss: Vec<PathBuf> = (0..16).map(|i| w.netns(&format!("p{i}"))).collect();
    let cfg = &w.cfg;
    let ips: Vec<Ipv4Addr> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let nss = &nss;
                s.spawn(move || {
                    (0..4)
                        .map(|i| network::setup(cfg, &format!("p{}", t * 4 + i), &nss[t * 4 + i], &[]).unwrap().ip)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let distinct: std::collections::BTreeSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), 16, "{ips:?}");
    assert_eq!(network::allocations(cfg).unwrap().len(), 16);
}

#[test]
fn a_full_pool_is_a_clear_error_and_leaves_nothing() {
    // A /29 has 8 addresses: network, gateway, broadcast, and 5 for pods.
    let mut w = World::with_prefix(29);
    for i in 0..5 {
        w.pod(&format!("p{i}"), &[]);
    }
    let ns = w.netns("p5");
    let err = network::setup(&w.cfg, "p5", &ns, &[]).unwrap_err();
    assert!(matches!(err, network::Error::PoolFull { .. }), "{err:?}");
    assert!(err.to_string().contains(&w.cfg.cidr.to_string()), "{err}");
    assert_eq!(network::allocations(&w.cfg).unwrap().len(), 5);
    // Released addresses are handed out again.
    network::teardown(&w.cfg, "p2").unwrap();
    network::setup(&w.cfg, "p5", &ns, &[]).unwrap();
}

#[test]
fn gc_after_a_crash_removes_what_dead_pods_left() {
    let mut w = World::new();
    let hp = w.port_base;
    let (_ns_dead, dead) = w.pod("dead", &[tcp(hp, 80)]);
    let (ns_live, live) = w.pod("live", &[tcp(hp + 1, 80)]);
    let (_ns_lost, lost) = w.pod("lost", &[tcp(hp + 2, 80)]);
    // The crash: nobody tore anything down, and the record of "lost" did not make it
    // to disk (as if nodectl died between creating its veth and writing the pool).
    let pool = w.cfg.state_dir.join(&w.cfg.bridge).join("ipam.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&pool).unwrap()).unwrap();
    v["pods"].as_object_mut().unwrap().remove("lost");
    std::fs::write(&pool, serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(w.pod_rules().unwrap().len(), 6);

    let report = network::gc(&w.cfg, |k| k == "live").unwrap();
    assert_eq!(report.released, vec![("dead".to_string(), dead.ip)]);
    let mut removed = report.veths_removed.clone();
    removed.sort();
    let mut want = vec![dead.host_veth.clone(), lost.host_veth.clone()];
    want.sort();
    assert_eq!(removed, want);
    assert_eq!(report.rules_removed, 4);
    assert!(!link_exists(&dead.host_veth) && !link_exists(&lost.host_veth));
    assert_eq!(network::allocations(&w.cfg).unwrap(), vec![("live".to_string(), live.ip)]);
    // The live pod is untouched and still reachable through its host port.
    let _e = Echo::tcp(&ns_live, 80, "live");
    assert_eq!(talk(connect(Ipv4Addr::LOCALHOST, hp + 1), "x").unwrap(), "live x");
    assert_eq!(w.pod_rules().unwrap().len(), 2);
    // Nothing more to do the second time.
    assert_eq!(network::gc(&w.cfg, |k| k == "live").unwrap(), network::GcReport::default());
}

#[test]
fn a_failed_set_up_leaves_nothing_behind() {
    let mut w = World::new();
    let hp = w.port_base;
    // No namespace at all.
    let missing = w.dir.path().join("no-such-ns");
    let err = network::setup(&w.cfg, "x", &missing, &[tcp(hp, 80)]).unwrap_err().to_string();
    assert!(err.contains("no-such-ns"), "{err}");
    // A file that is not a namespace: fails when the veth is made, after the address
    // was allocated and the bridge made.
    let not_ns = w.dir.path().join("plain-file");
    std::fs::write(&not_ns, b"").unwrap();
    let err = network::setup(&w.cfg, "y", &not_ns, &[tcp(hp, 80)]).unwrap_err().to_string();
    assert!(err.contains("plain-file") && err.contains("veth"), "{err}");
    assert!(network::allocations(&w.cfg).unwrap().is_empty());
    for key in ["x", "y"] {
        let name = nodectl_veth_name(&w, key);
        assert!(!link_exists(&name), "{name} left behind");
    }
    assert!(w.pod_rules().unwrap_or_default().is_empty());
    // A namespace that has an eth0 already (another pod's) is refused, and the other
    // pod keeps its veth.
    let (ns_w, wa) = w.pod("w", &[]);
    let err = network::setup(&w.cfg, "v", &ns_w, &[]).unwrap_err().to_string();
    assert!(err.contains("eth0") && err.contains("File exists"), "{err}");
    assert!(link_exists(&wa.host_veth));
    network::teardown(&w.cfg, "w").unwrap();
    // A good set-up afterwards works, and is the only pod with an address.
    let (_ns, a) = w.pod("z", &[]);
    assert_eq!(network::allocations(&w.cfg).unwrap(), vec![("z".to_string(), a.ip)]);
}

/// The host veth of a pod on this world's bridge: whatever setup would name it, found
/// as the only device whose name the library derives (checked against a real pod).
fn nodectl_veth_name(w: &World, key: &str) -> String {
    network::host_veth_name(&w.cfg, key)
}

#[test]
fn namespaces_are_held_by_bind_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ns");
    network::create_netns(&p).unwrap();
    let mine = std::fs::read_link("/proc/self/ns/net").unwrap();
    let theirs = network::run_in_netns(&p, || std::fs::read_link("/proc/thread-self/ns/net").unwrap()).unwrap();
    assert_ne!(mine, theirs);
    // A second namespace at the same path is refused, naming the path.
    let err = network::create_netns(&p).unwrap_err().to_string();
    assert!(err.contains(&p.display().to_string()), "{err}");
    network::remove_netns(&p).unwrap();
    assert!(!p.exists());
    network::remove_netns(&p).unwrap();
}

/// Not a test: `cargo test --release --test network -- --ignored --nocapture setup_time`
/// prints how long one pod's set-up and teardown take.
#[test]
#[ignore]
fn setup_time() {
    let mut w = World::new();
    let ns = w.netns("timed");
    network::setup(&w.cfg, "warm", &ns, &[]).unwrap();
    network::teardown(&w.cfg, "warm").unwrap();
    let (mut setups, mut teardowns) = (Vec::new(), Vec::new());
    for i in 0..100 {
        let ports = if i % 2 == 0 { vec![] } else { vec![tcp(w.port_base, 80)] };
        let t = std::time::Instant::now();
        network::setup(&w.cfg, "timed", &ns, &ports).unwrap();
        setups.push((t.elapsed(), !ports.is_empty()));
        let t = std::time::Instant::now();
        network::teardown(&w.cfg, "timed").unwrap();
        teardowns.push(t.elapsed());
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let plain: Vec<_> = setups.iter().filter(|s| !s.1).map(|s| s.0).collect();
    let ported: Vec<_> = setups.iter().filter(|s| s.1).map(|s| s.0).collect();
    println!(
        "setup median {:?} (with a hostPort {:?}), teardown median {:?}",
        median(plain),
        median(ported),
        median(teardowns)
    );
}
