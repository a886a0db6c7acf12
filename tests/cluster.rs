//! A cluster on this one machine: `nodectl server` and three real node daemons, each in a
//! network namespace of its own (its own state root, bridge and pod range), reaching the
//! server over a bridge this test makes, as separate machines on one LAN would. kubectl
//! drives it as it would drive Kubernetes. One cluster for the whole file.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::Node;
use common::lan::Lan;
use common::portforward::PortForward;
use common::server::{Server, free_port};
use serde_json::Value;

const NODES: u8 = 3;

/// A lost node is noticed after 20 s (two Lease renewals missed), and its pods go 2 s
/// later (Kubernetes: 40 s and 300 s), so that the test does not wait minutes.
const SERVER_FLAGS: [&str; 8] = [
    "--node-monitor-period",
    "1s",
    "--node-monitor-grace-period",
    "20s",
    "--default-unreachable-toleration-seconds",
    "2",
    "--default-not-ready-toleration-seconds",
    "2",
];

/// The cluster; fields drop in order: the daemons, then the server, then the LAN.
struct Cluster {
    nodes: Vec<Node>,
    s: Server,
    _lan: Lan,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let lan = Lan::new("ncl", 254, NODES);
        let dir = tempfile::tempdir().unwrap();
        let s = Server::start_on(&dir.path().join("data"), lan.server_ip(), free_port(), &SERVER_FLAGS);
        let mut nodes = Vec::new();
        for i in 1..=NODES {
            // The pod range is the Node's spec.podCIDR, out of the server's cluster range,
            // so traffic between nodes' pods is routed and keeps its source address.
            let node = Node::new("ncl", 220).with_pod_cidr_from_server().with_busybox();
            // The rollout's "new image": the same busybox under another tag.
            node.import("busybox", "busybox:v2");
            let mut node = node;
            node.netns = Some(lan.netns(i));
            let (token, ca) = (s.dir.join("node-token"), s.dir.join("ca.crt"));
            let serving = format!("{}:10250", lan.node_ip(i));
            let name = format!("node-{i}");
            node.start(&[
                "--server",
                &s.url(""),
                "--token-file",
                token.to_str().unwrap(),
                "--ca-file",
                ca.to_str().unwrap(),
                "--node-name",
                &name,
                "--serving-address",
                &serving,
            ]);
            nodes.push(node);
        }
        let mut c = Cluster { nodes, s, _lan: lan, _dir: dir };
        for i in 0..NODES {
            let name = format!("node-{}", i + 1);
            let node = c.wait_for(&["node", &name], 30, |n| n["spec"]["podCIDR"].is_string());
            c.nodes[usize::from(i)].cidr = node["spec"]["podCIDR"].as_str().unwrap().to_string();
        }
        c
    }

    /// kill -9 of the server, then a new one on the same data, address and flags.
    fn kill_9_and_restart_server(&mut self) {
        let (dir, ip, port) = (self.s.dir.clone(), self.s.ip, self.s.port);
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.s.pid()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        // Dead once its port is closed (the zombie is reaped when the old Server drops).
        while std::net::TcpStream::connect((ip, port)).is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.s = Server::start_on(&dir, ip, port, &SERVER_FLAGS);
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            all.push_str(&format!("--- node-{}:\n{}\n", i + 1, n.log()));
            // Its pod network as the kernel has it, for a failure across nodes.
            let i = u8::try_from(i + 1).unwrap();
            for args in [&["-4", "route"][..], &["-4", "neigh"], &["-d", "link", "show", "type", "vxlan"]] {
                if let Ok(out) = self._lan.in_node(i, "ip").args(args).output() {
                    all.push_str(&format!("ip {}:\n{}", args.join(" "), String::from_utf8_lossy(&out.stdout)));
                }
            }
        }
        all
    }

    fn get(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.s.kubectl(&all);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Waits until `args`' object satisfies `want`; returns it.
    fn wait_for(&self, args: &[&str], secs: u64, want: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.get(args);
            if let Some(v) = v.as_ref().filter(|v| want(v)) {
                return v.clone();
            }
            assert!(Instant::now() < end, "{args:?} never got there: {v:#?}\nthe daemons' logs:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn apply(&self, name: &str, yaml: &str) {
        let path = self._dir.path().join(name);
        fs::write(&path, yaml).unwrap();
        self.s.ok(&["apply", "-f", path.to_str().unwrap()]);
    }

    /// `wget` of `http://HOST/` in the pod `client`: the page, or the error. Bounded by
    /// `timeout`, not wget's own `-T`: Debian 12's busybox-static 1:1.35.0-4+deb12u1+b1
    /// segfaults whenever `-T` is given.
    fn wget(&self, host: &str) -> Result<String, String> {
        let url = format!("http://{host}/");
        let out = self.s.kubectl(&["exec", "client", "--", "timeout", "5", "wget", "-q", "-O", "-", &url]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Retries `f` for up to 30 s until it succeeds.
    fn until_ok(&self, what: &str, f: impl Fn() -> Result<String, String>) -> String {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            match f() {
                Ok(v) => return v,
                Err(e) => assert!(Instant::now() < end, "{what}: {e}\nthe daemons' logs:\n{}", self.logs()),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until no node has a pod directory left.
    fn wait_for_no_pods_on_disk(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            let end = Instant::now() + Duration::from_secs(30);
            while fs::read_dir(n.root().join("pods")).map(|d| d.count()).unwrap_or(0) > 0 {
                assert!(Instant::now() < end, "node-{} kept pods: {}", i + 1, n.log());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn ready(obj: &Value) -> bool {
    obj["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The pods `selector` picks: name → node.
fn placement(c: &Cluster, selector: &str) -> BTreeMap<String, String> {
    let list = c.get(&["pods", "-l", selector]).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (p["metadata"]["name"].as_str().unwrap().to_string(), p["spec"]["nodeName"].as_str().unwrap_or("").into())
        })
        .collect()
}

const WEB: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 6
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: c
        image: busybox
        imagePullPolicy: Never
        resources: {requests: {cpu: 10m, memory: 8Mi}}
        command: [sh, -c, 'trap \"exit 0\" TERM; nc -ll -p 7000 -e /bin/hostname & echo \"web on $(hostname)\"; while :; do sleep 0.1; done']
";

#[test]
fn three_nodes_on_a_lan_run_a_deployment_spread_over_them() {
    let mut c = Cluster::start();

    // Each node joins from its own namespace, with its LAN address as InternalIP.
    let nodes = c.wait_for(&["nodes"], 60, |l| {
        l["items"].as_array().is_some_and(|items| items.len() == usize::from(NODES) && items.iter().all(ready))
    });
    for (i, n) in nodes["items"].as_array().unwrap().iter().enumerate() {
        let addresses = n["status"]["addresses"].to_string();
        let want = c._lan.node_ip(u8::try_from(i + 1).unwrap()).to_string();
        assert!(addresses.contains(&format!("\"{want}\"")), "{}: {addresses}", n["metadata"]["name"]);
    }

    // Six replicas spread two to a node.
    c.apply("web.yaml", WEB);
    c.wait_for(&["deployment", "web"], 120, |d| d["status"]["readyReplicas"] == 6);
    let placed = placement(&c, "app=web");
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for node in placed.values() {
        *per_node.entry(node.as_str()).or_default() += 1;
    }
    assert_eq!(per_node, BTreeMap::from([("node-1", 2), ("node-2", 2), ("node-3", 2)]), "{placed:?}");

    // Logs, exec and port-forward reach every node through the server.
    for (pod, node) in &placed {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let logs = c.s.ok(&["logs", pod]);
            if logs.contains(&format!("web on {pod}")) {
                break;
            }
            assert!(Instant::now() < end, "{pod} on {node} logged {logs:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(c.s.ok(&["exec", pod, "--", "hostname"]), format!("{pod}\n"), "{pod} on {node}");
    }
    // And port-forward: each pod answers its name on port 7000 (nc, started before the
    // line its log was waited for above, runs hostname).
    for (pod, node) in &placed {
        let pf = PortForward::start(&c.s, pod, &[7000], true);
        assert_eq!(pf.exchange(7000, b""), format!("{pod}\n"), "{pod} on {node}");
        pf.stop();
    }

    rollout_never_goes_below_the_allowed_unavailable(&c, "busybox:v2");

    // A node's daemon dies (the one with the most of the pods): its pods are replaced on
    // the others.
    c.wait_for(&["pods", "-l", "app=web"], 60, |l| l["items"].as_array().is_some_and(|i| i.len() == 6));
    let placed = placement(&c, "app=web");
    let victim =
        (1..=NODES).map(|i| format!("node-{i}")).max_by_key(|n| placed.values().filter(|p| *p == n).count()).unwrap();
    let lost: Vec<String> = placed.iter().filter(|(_, n)| **n == victim).map(|(p, _)| p.clone()).collect();
    let index = usize::from(victim.strip_prefix("node-").unwrap().parse::<u8>().unwrap() - 1);
    c.nodes[index].kill_daemon();
    c.wait_for(&["node", &victim], 60, |n| !ready(n));
    c.wait_for(&["pods", "-l", "app=web"], 90, |l| {
        let items = l["items"].as_array().unwrap();
        let running_elsewhere = items
            .iter()
            .filter(|p| {
                p["spec"]["nodeName"] != victim.as_str() && p["metadata"]["deletionTimestamp"].is_null() && ready(p)
            })
            .count();
        running_elsewhere == 6
    });

    // It comes back: what was taken from it stops before anything else, and nothing stale runs.
    c.nodes[index].restart();
    c.wait_for(&["node", &victim], 60, ready);
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let stale: Vec<String> = placement(&c, "app=web").into_keys().filter(|p| lost.contains(p)).collect();
        let local = fs::read_dir(c.nodes[index].root().join("pods")).map(|d| d.count()).unwrap_or(0);
        if stale.is_empty() && local == 0 {
            break;
        }
        assert!(Instant::now() < end, "{victim} still has {stale:?} ({local} pods on disk): {}", c.nodes[index].log());
        std::thread::sleep(Duration::from_millis(200));
    }

    // Undo brings the first template back, though the server is killed (-9) in the middle
    // of it: the rollout goes on when the server is back. minReadySeconds makes each step
    // last 5 s, so that the kill lands mid-rollout.
    c.s.ok(&["patch", "deployment", "web", "-p", r#"{"spec": {"minReadySeconds": 5}}"#]);
    c.s.ok(&["rollout", "undo", "deployment/web"]);
    let d = c.get(&["deployment", "web"]).unwrap();
    assert_ne!(d["status"]["updatedReplicas"], 6, "the rollout is already over: {d}");
    c.kill_9_and_restart_server();
    c.s.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let images = images(&c);
    assert!(images.iter().all(|i| i == "busybox") && images.len() == 6, "{images:?}");

    // A pod that fits nowhere says why, node by node.
    c.apply("huge.yaml", HUGE);
    let huge = c.wait_for(&["pod", "huge"], 30, |p| {
        p["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["reason"] == "Unschedulable")
    });
    let why = huge["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "PodScheduled").unwrap();
    let message = why["message"].as_str().unwrap();
    assert!(message.starts_with("0/3 nodes are available: 3 Insufficient cpu."), "{message}");
    c.s.ok(&["delete", "pod", "huge"]);

    // The Deployment goes, and every node stops its pods.
    c.s.ok(&["delete", "deployment", "web"]);
    c.wait_for(&["pods", "-l", "app=web"], 60, |l| l["items"].as_array().is_some_and(Vec::is_empty));
    c.wait_for_no_pods_on_disk();

    // Pods reach each other across nodes, and Services work, with the nodes' routes to
    // each other's pod ranges (they share the LAN: host-gw)...
    services_across_nodes(&c);
    // ... and again with VXLAN between them.
    for n in &mut c.nodes {
        n.kill_daemon();
        n.restart_with(&["--pod-network-backend", "vxlan"]);
    }
    c.wait_for(&["nodes"], 60, |l| l["items"].as_array().is_some_and(|items| items.iter().all(ready)));
    for i in 1..=NODES {
        let out = c._lan.in_node(i, "ip").args(["-d", "link", "show", "type", "vxlan"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("vxlan id 1 "), "node-{i} has no VXLAN device: {text}");
        // The host-gw routes were replaced: both other ranges go over the VXLAN device.
        common::server::wait_until(&format!("node-{i}'s routes over VXLAN"), 30, || {
            let out = c._lan.in_node(i, "ip").args(["-4", "route", "show", "proto", "157"]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (text.lines().count() == usize::from(NODES) - 1 && text.lines().all(|l| l.contains(".vx "))).then_some(text)
        });
    }
    services_across_nodes(&c);
}

/// An HTTP server Deployment with a pod on each node, a LoadBalancer Service and a headless
/// one for it.
const HTTPD: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: httpd}
spec:
  replicas: 3
  selector: {matchLabels: {app: httpd}}
  template:
    metadata: {labels: {app: httpd}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: httpd}}}
      containers:
      - name: c
        image: busybox
        imagePullPolicy: Never
        ports: [{name: http, containerPort: 8080}]
        command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www']
---
apiVersion: v1
kind: Service
metadata: {name: httpd}
spec:
  type: LoadBalancer
  selector: {app: httpd}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: httpd-headless}
spec:
  clusterIP: None
  selector: {app: httpd}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 0
  containers: [{name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}]
";

/// What issue 12 shows: a client on node-1 reaches the HTTP server's pods on all three
/// nodes by pod IP, ClusterIP, names, NodePort on every node, the load balancer's
/// addresses and `port-forward svc/`; requests spread; sessionAffinity holds a client;
/// the headless name gives the pod IPs; no endpoints refuses. Leaves nothing behind.
fn services_across_nodes(c: &Cluster) {
    c.apply("httpd.yaml", HTTPD);
    c.wait_for(&["deployment", "httpd"], 120, |d| d["status"]["readyReplicas"] == 3);
    c.wait_for(&["pod", "client"], 60, ready);
    let pods = c.get(&["pods", "-l", "app=httpd"]).unwrap();
    let servers: BTreeMap<String, (String, String)> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let name = p["metadata"]["name"].as_str().unwrap().to_string();
            let ip = p["status"]["podIP"].as_str().unwrap().to_string();
            (name, (ip, p["spec"]["nodeName"].as_str().unwrap().to_string()))
        })
        .collect();
    let nodes: std::collections::BTreeSet<&str> = servers.values().map(|(_, n)| n.as_str()).collect();
    assert_eq!(nodes.len(), 3, "one server pod per node: {servers:?}");
    let names: std::collections::BTreeSet<String> = servers.keys().cloned().collect();

    // By pod IP, on this node and across the others.
    for (name, (ip, node)) in &servers {
        let got = c.until_ok(&format!("{name} on {node} by its IP {ip}"), || c.wget(&format!("{ip}:8080")));
        assert_eq!(got, *name, "{ip} on {node}");
    }

    // By ClusterIP and by name; the requests spread over every endpoint.
    let svc = c.wait_for(&["service", "httpd"], 30, |s| {
        s["spec"]["ports"][0]["nodePort"].as_i64().is_some()
            && s["status"]["loadBalancer"]["ingress"].as_array().is_some_and(|i| !i.is_empty())
    });
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let mut seen = std::collections::BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(60);
    while seen != names {
        assert!(Instant::now() < end, "through {cluster_ip} only {seen:?} of {names:?}");
        if let Ok(name) = c.wget(&cluster_ip) {
            seen.insert(name);
        }
    }
    for host in ["httpd", "httpd.default", "httpd.default.svc.cluster.local"] {
        let got = c.until_ok(&format!("the Service by the name {host}"), || c.wget(host));
        assert!(names.contains(&got), "{host} answered {got:?}");
    }

    // A NodePort on every node's address, and the load balancer's addresses, from outside
    // the cluster (this test's process, on the LAN).
    let node_port = u16::try_from(svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap()).unwrap();
    for i in 1..=NODES {
        let ip = c._lan.node_ip(i);
        let got = common::server::wait_until(&format!("NodePort {node_port} on node-{i} ({ip})"), 30, || {
            http_get(&format!("{ip}:{node_port}")).ok()
        });
        assert!(names.contains(&got), "{ip}:{node_port} answered {got:?}");
    }
    for ingress in svc["status"]["loadBalancer"]["ingress"].as_array().unwrap() {
        let ip = ingress["ip"].as_str().unwrap();
        let got = common::server::wait_until(&format!("the load balancer's {ip}:80"), 30, || {
            http_get(&format!("{ip}:80")).ok()
        });
        assert!(names.contains(&got), "{ip}:80 answered {got:?}");
    }

    // kubectl port-forward svc/: to one of its pods' target port.
    let pf = PortForward::start(&c.s, "svc/httpd", &[80], true);
    let answer = pf.exchange(8080, b"GET / HTTP/1.0\r\n\r\n");
    assert!(names.iter().any(|n| answer.ends_with(&format!("\r\n\r\n{n}\n"))), "{answer:?}");
    pf.stop();

    // sessionAffinity ClientIP: one client, one pod.
    c.s.ok(&["patch", "service", "httpd", "-p", r#"{"spec": {"sessionAffinity": "ClientIP"}}"#]);
    let end = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let run: Vec<String> = (0..5).filter_map(|_| c.wget(&cluster_ip).ok()).collect();
        if run.len() == 5 && run.iter().all(|n| *n == run[0]) {
            break run[0].clone();
        }
        assert!(Instant::now() < end, "affinity never held: {run:?}");
    };
    for _ in 0..10 {
        assert_eq!(c.wget(&cluster_ip).unwrap(), first, "sessionAffinity let the client go elsewhere");
    }

    // The headless Service's name: the pod IPs.
    let mut want: Vec<String> = servers.values().map(|(ip, _)| ip.clone()).collect();
    want.sort();
    common::server::wait_until("the headless Service's addresses", 30, || {
        let out = c.s.kubectl(&["exec", "client", "--", "nslookup", "httpd-headless.default.svc.cluster.local"]);
        (nslookup_addresses(&String::from_utf8_lossy(&out.stdout)) == want).then_some(())
    });

    // No endpoints: the ClusterIP refuses at once, rather than a connection hanging.
    c.s.ok(&["scale", "deployment", "httpd", "--replicas=0"]);
    c.wait_for(&["pods", "-l", "app=httpd"], 60, |l| l["items"].as_array().is_some_and(Vec::is_empty));
    common::server::wait_until("the ClusterIP refusing", 30, || {
        c.wget(&cluster_ip).err().filter(|e| e.contains("Connection refused"))
    });

    c.s.ok(&["delete", "deployment/httpd", "service/httpd", "service/httpd-headless", "pod/client"]);
    c.wait_for(&["pods"], 60, |l| l["items"].as_array().is_some_and(Vec::is_empty));
    c.wait_for_no_pods_on_disk();
}

/// `GET /` over HTTP/1.0 from this process: the body, trimmed.
fn http_get(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let (_, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    Ok(body.trim().to_string())
}

/// The addresses busybox's nslookup gave for the name it was asked (after its server's).
fn nslookup_addresses(out: &str) -> Vec<String> {
    let mut ips: Vec<String> = out
        .split_once("Name:")
        .map(|(_, answers)| answers)
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Address:").map(|a| a.trim().to_string()))
        .collect();
    ips.sort();
    ips
}

/// `kubectl set image` to `image`, with a watch on the Deployment throughout: available
/// replicas never below 6 less maxUnavailable (25% of 6, rounded down: 1).
fn rollout_never_goes_below_the_allowed_unavailable(c: &Cluster, image: &str) {
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(c.s.dir.join("admin.kubeconfig"))
        .args(["get", "deployment", "web", "--watch", "-o"])
        .arg("jsonpath={.status.availableReplicas}{\"\\n\"}")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = watch.stdout.take().unwrap();
    let seen = std::thread::spawn(move || {
        std::io::BufRead::lines(std::io::BufReader::new(out))
            .map_while(Result::ok)
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .collect::<Vec<u32>>()
    });
    c.s.ok(&["set", "image", "deployment/web", &format!("c={image}")]);
    c.s.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    // The last event of the rollout may still be on its way.
    std::thread::sleep(Duration::from_millis(500));
    let _ = watch.kill();
    let _ = watch.wait();
    let seen = seen.join().unwrap();
    assert!(seen.len() > 1, "the watch saw no change: {seen:?}");
    assert!(seen.iter().all(|&n| n >= 5), "available replicas during the rollout: {seen:?}");
    let images = images(c);
    assert!(images.iter().all(|i| i == image) && images.len() == 6, "{images:?}");
}

/// The image of each pod of the Deployment that is not on its way out.
fn images(c: &Cluster) -> Vec<String> {
    let list = c.get(&["pods", "-l", "app=web"]).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap().to_string())
        .collect()
}

const HUGE: &str = "
apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  containers:
  - name: c
    image: busybox
    resources: {requests: {cpu: '1000'}}
";
