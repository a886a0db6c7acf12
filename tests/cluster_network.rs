//! Pod traffic between nodes: `nodectl server` and three joined daemons, each in a network
//! namespace of its own on one LAN (tests/common/lan.rs). Each node takes its pod range
//! from its Node; a pod on node 1 reaches pods on nodes 2 and 3 by pod IP and they see its
//! pod IP (no masquerade between pods); the routes follow the Nodes. First with host-gw
//! (auto: the nodes share a subnet), then the same nodes again with VXLAN forced. At the
//! end `nodectl gc` leaves no route of ours and no VXLAN device.

mod common;

use std::time::{Duration, Instant};

use common::daemon::Node;
use common::lan::Lan;
use common::server::{Server, free_port};
use serde_json::Value;

/// Fields drop in order: the daemons, the server, then the LAN.
struct Cluster {
    nodes: Vec<Node>,
    s: Server,
    lan: Lan,
    dir: tempfile::TempDir,
}

fn node_name(i: usize) -> String {
    format!("node-{}", i + 1)
}

impl Cluster {
    fn start() -> Cluster {
        let lan = Lan::new("ncn", 252, 3);
        let dir = tempfile::tempdir().unwrap();
        let s = Server::start_on(&dir.path().join("data"), lan.server_ip(), free_port(), &[]);
        let mut nodes = Vec::new();
        for i in 1..=3u8 {
            let mut node = Node::new("ncn", 240).with_pod_cidr_from_server().with_busybox();
            node.netns = Some(lan.netns(i));
            nodes.push(node);
        }
        Cluster { nodes, s, lan, dir }
    }

    /// Starts node `i`'s daemon (counting from 0) with `extra` flags.
    fn start_node(&mut self, i: usize, extra: &[&str]) {
        let (token, ca) = (self.s.dir.join("node-token"), self.s.dir.join("ca.crt"));
        let serving = format!("{}:10250", self.lan.node_ip(i as u8 + 1));
        let url = self.s.url("");
        let name = node_name(i);
        let mut flags = vec![
            "--server",
            &url,
            "--token-file",
            token.to_str().unwrap(),
            "--ca-file",
            ca.to_str().unwrap(),
            "--node-name",
            &name,
            "--serving-address",
            &serving,
        ];
        flags.extend_from_slice(extra);
        self.nodes[i].start(&flags);
        let cidr = self.until(&format!("{name}'s pod range"), 30, || {
            let n = self.get(&["node", &name])?;
            n["spec"]["podCIDR"].as_str().map(String::from)
        });
        self.nodes[i].cidr = cidr;
    }

    fn get(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.s.kubectl(&all);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    fn logs(&self) -> String {
        self.nodes.iter().enumerate().map(|(i, n)| format!("--- node-{}:\n{}", i + 1, n.log())).collect()
    }

    fn until<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < end, "{what}: never happened; the daemons' logs:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `CMD ARGS` inside node `i`'s namespace (counting from 0): its stdout.
    fn in_node(&self, i: usize, cmd: &str, args: &[&str]) -> String {
        let out = self.lan.in_node(i as u8 + 1, cmd).args(args).output().unwrap();
        assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Node `i`'s routes of our protocol, one per line.
    fn our_routes(&self, i: usize) -> String {
        self.in_node(i, "ip", &["-4", "route", "show", "proto", "157"])
    }

    fn apply(&self, name: &str, yaml: &str) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        self.s.ok(&["apply", "-f", path.to_str().unwrap()]);
    }

    /// `kubectl exec POD -- ARGS`: stdout and stderr, and whether it succeeded.
    fn exec(&self, pod: &str, args: &[&str]) -> (bool, String) {
        let mut all = vec!["exec", pod, "--"];
        all.extend_from_slice(args);
        let out = self.s.kubectl(&all);
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }

    fn pod_ip(&self, pod: &str) -> String {
        self.until(&format!("pod {pod} running"), 90, || {
            let p = self.get(&["pod", pod])?;
            (p["status"]["phase"] == "Running").then(|| p["status"]["podIP"].as_str().map(String::from)).flatten()
        })
    }

    /// A client on node 1 and a server on nodes 2 and 3 that answers with the address
    /// it was called from (busybox httpd's CGI REMOTE_ADDR).
    fn start_pods(&self) {
        let mut yaml = pod("client", &node_name(0), "sleep 3600");
        let server = "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/ip \
                      && chmod +x /www/cgi-bin/ip && exec httpd -f -p 8080 -h /www";
        for i in [1, 2] {
            yaml.push_str(&pod(&format!("web-{}", i + 1), &node_name(i), server));
        }
        self.apply("pods.yaml", &yaml);
    }

    /// The client reaches each server pod by its IP and is seen with its own pod IP.
    fn check_traffic(&self) {
        let client_ip = self.pod_ip("client");
        for web in ["web-2", "web-3"] {
            let ip = self.pod_ip(web);
            let url = format!("http://{ip}:8080/cgi-bin/ip");
            let last = std::cell::RefCell::new(String::new());
            let end = Instant::now() + Duration::from_secs(30);
            let seen = loop {
                let (ok, out) = self.exec("client", &["timeout", "10", "wget", "-q", "-O", "-", &url]);
                if ok {
                    // httpd listens on IPv6 too: an IPv4 peer is written v4-mapped.
                    break out.trim().trim_start_matches("[::ffff:").trim_end_matches(']').to_string();
                }
                *last.borrow_mut() = out;
                if Instant::now() > end {
                    let (_, ping) = self.exec("client", &["ping", "-c", "1", "-W", "2", &ip]);
                    let routes: Vec<String> = (0..3).map(|i| self.in_node(i, "ip", &["route"])).collect();
                    panic!(
                        "client -> {web} ({ip}): {}\nping: {ping}\nroutes: {routes:#?}\n{}",
                        last.borrow(),
                        self.logs()
                    );
                }
                std::thread::sleep(Duration::from_millis(300));
            };
            assert_eq!(seen, client_ip, "{web} saw the client as {seen}, not by its pod IP {client_ip}");
        }
    }

    fn delete_pods(&self) {
        self.s.ok(&["delete", "pod", "client", "web-2", "web-3", "--grace-period", "0", "--wait=false"]);
        self.until("the pods gone", 60, || {
            let list = self.get(&["pods"])?;
            list["items"].as_array().is_some_and(|a| a.is_empty()).then_some(())
        });
        for (i, n) in self.nodes.iter().enumerate() {
            self.until(&format!("node-{}'s pods gone", i + 1), 60, || {
                let pods = std::fs::read_dir(n.root().join("pods")).map(|d| d.count()).unwrap_or(0);
                (pods == 0).then_some(())
            });
        }
    }

    /// Stops every daemon, runs `nodectl gc` on each node, and checks nothing of ours is
    /// left in routes or links.
    fn stop_and_gc(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].daemon.is_some() {
                self.nodes[i].kill_daemon();
            }
            let out = self.nodes[i].command().arg("gc").output().unwrap();
            assert!(out.status.success(), "gc: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(self.our_routes(i).trim(), "", "routes left on node-{}", i + 1);
            let links = self.in_node(i, "ip", &["-o", "link", "show", "type", "vxlan"]);
            assert_eq!(links.trim(), "", "a VXLAN device left on node-{}", i + 1);
            let tables = self.in_node(i, "nft", &["list", "tables"]);
            assert!(!tables.contains("nodectl_masq_"), "the masquerade table left: {tables}");
        }
    }
}

fn pod(name: &str, node: &str, script: &str) -> String {
    format!(
        "
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, \"{script}\"]
---"
    )
}

#[test]
fn pods_reach_pods_on_other_nodes_by_host_gw_then_vxlan() {
    let mut c = Cluster::start();
    for i in 0..3 {
        c.start_node(i, &[]);
    }
    let cidrs: Vec<String> = c.nodes.iter().map(|n| n.cidr.clone()).collect();
    assert!(cidrs.iter().all(|r| r.starts_with("10.244.")), "ranges from the server's cluster CIDR: {cidrs:?}");

    // host-gw (auto, on one subnet): PODCIDR via NODE_IP proto 157 on each node.
    for i in 0..3 {
        c.until(&format!("node-{}'s routes", i + 1), 30, || {
            let routes = c.our_routes(i);
            let want = (0..3).filter(|j| *j != i).all(|j| {
                routes.lines().any(|l| l.starts_with(&format!("{} via {} ", cidrs[j], c.lan.node_ip(j as u8 + 1))))
            });
            (want && routes.lines().count() == 2).then_some(())
        });
    }
    c.start_pods();
    c.check_traffic();
    // Pods leaving the cluster range are masqueraded: one rule, for anything not in it.
    let table = c.in_node(0, "nft", &["list", "table", "ip", &format!("nodectl_masq_{}", c.nodes[0].bridge)]);
    assert!(table.contains(&format!("ip saddr {}", cidrs[0])) && table.contains("masquerade"), "{table}");

    // A Node deleted: its route goes from the others, also from node-2, whose daemon is
    // down meanwhile and re-syncs when it is back.
    c.delete_pods();
    c.nodes[2].kill_daemon();
    c.nodes[1].kill_daemon();
    c.s.ok(&["delete", "node", "node-3"]);
    assert!(c.our_routes(1).contains(&cidrs[2]), "node-2's routes stay while its daemon is down");
    c.nodes[1].restart();
    for i in 0..2 {
        c.until(&format!("node-3's route gone from node-{}", i + 1), 30, || {
            (!c.our_routes(i).contains(&cidrs[2])).then_some(())
        });
    }
    c.stop_and_gc();

    // The same nodes with VXLAN forced; node-3 comes back with a new Node.
    for i in 0..3 {
        c.start_node(i, &["--pod-network-backend", "vxlan"]);
    }
    let cidrs: Vec<String> = c.nodes.iter().map(|n| n.cidr.clone()).collect();
    // Each node publishes its device's MAC (a new device: the annotation of the first
    // run is replaced).
    let mut macs = Vec::new();
    let mut devs = Vec::new();
    for i in 0..3 {
        let dev = c.until(&format!("node-{}'s VXLAN device", i + 1), 30, || {
            let d = c.in_node(i, "ip", &["-o", "-d", "link", "show", "type", "vxlan"]);
            (!d.trim().is_empty()).then_some(d)
        });
        let mac = dev.split("link/ether ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
        c.until(&format!("node-{}'s VTEP MAC published", i + 1), 30, || {
            let n = c.get(&["node", &node_name(i)])?;
            (n["metadata"]["annotations"]["nodectl.io/vtep-mac"].as_str() == Some(mac.as_str())).then_some(())
        });
        macs.push(mac);
        devs.push(dev);
    }
    for (i, dev) in devs.iter().enumerate() {
        assert!(dev.contains("vxlan id 1 ") && dev.contains("dstport 8472") && dev.contains("mtu 1450"), "{dev}");
        assert!(dev.contains("nolearning"), "{dev}");
        let name = dev.split(':').nth(1).unwrap().trim().split('@').next().unwrap().to_string();
        c.until(&format!("node-{}'s VXLAN routes and entries", i + 1), 30, || {
            let routes = c.our_routes(i);
            let neigh = c.in_node(i, "ip", &["neigh", "show", "dev", &name]);
            let fdb = c.in_node(i, "bridge", &["fdb", "show", "dev", &name]);
            let all = (0..3).filter(|j| *j != i).all(|j| {
                let vtep = cidrs[j].trim_end_matches("/24");
                routes.contains(&format!("{} via {vtep} dev {name} onlink", cidrs[j]))
                    && neigh.contains(&format!("{vtep} lladdr {} PERMANENT", macs[j]))
                    && fdb.contains(&format!("{} dst {} self permanent", macs[j], c.lan.node_ip(j as u8 + 1)))
            });
            (all && routes.lines().count() == 2).then_some(())
        });
    }
    c.start_pods();
    c.check_traffic();
    let (_, mtu) = c.exec("client", &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1450", "the pod's MTU under VXLAN");

    c.delete_pods();
    c.stop_and_gc();
}
