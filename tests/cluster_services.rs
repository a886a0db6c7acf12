//! Services in a cluster: `nodectl server` and one joined node daemon in a network
//! namespace of its own (as tests/cluster.rs), real pods reaching a Deployment through its
//! Service's ClusterIP and its names (the node's Service proxy and DNS), the pods'
//! resolv.conf for each dnsPolicy, and a daemon restarted under an open connection.
//!
//! Traffic stays inside the node's namespace: its pods, and a route there that sends the
//! service range into a veth pair of its own (so nothing to a ClusterIP leaves the namespace, while
//! our reject still sees it, as on a real node with a default route).

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::daemon::Node;
use common::lan::{Lan, ip};
use common::server::{Server, free_port};
use serde_json::Value;

/// The LAN of one node, whose namespace sends the service range into a veth pair of its
/// own (see above).
fn lan() -> Lan {
    // As tests/cluster.rs's LAN, on a third octet of its own.
    let lan = Lan::new("ncs", 253, 1);
    let ns = lan.namespace(1);
    ip(&["-n", ns, "link", "add", "svc0", "type", "veth", "peer", "name", "svc1"]);
    for dev in ["svc0", "svc1"] {
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
    ip(&["-n", ns, "route", "add", "10.96.0.0/12", "dev", "svc0"]);
    lan
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
        let lan = lan();
        let dir = tempfile::tempdir().unwrap();
        let s = Server::start_on(&dir.path().join("data"), lan.server_ip(), free_port(), &[]);
        let mut node = Node::new("ncs", 230).with_busybox();
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

    /// `kubectl exec POD -- ARGS`: its stdout and stderr together, and whether it
    /// succeeded.
    fn exec(&self, pod: &str, args: &[&str]) -> (bool, String) {
        let mut all = vec!["exec", pod, "--"];
        all.extend_from_slice(args);
        let out = self.s.kubectl(&all);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    fn cluster_ip(&self, svc: &str) -> String {
        let v = self.until(&format!("service {svc}'s ClusterIP"), 30, || self.get(&["service", svc]));
        v["spec"]["clusterIP"].as_str().unwrap().to_string()
    }

    fn pod_ips(&self, selector: &str) -> Vec<String> {
        let list = self.get(&["pods", "-l", selector]).unwrap();
        let mut ips: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
            .collect();
        ips.sort();
        ips
    }

    /// The node's Service table, as nft lists it.
    fn service_table(&self) -> String {
        let table = format!("nodectl_svc_{}", self.node.bridge);
        let out = self.lan.in_node(1, "nft").args(["list", "table", "ip", &table]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

const WEB: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        imagePullPolicy: Never
        ports: [{name: http, containerPort: 8080}]
        command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www']
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-headless}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: gone}
spec:
  selector: {app: web}
  ports: [{port: 81, targetPort: 8080}]
";

/// The client, pods for each dnsPolicy, and an echo server for the restart.
const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}]
---
apiVersion: v1
kind: Pod
metadata: {name: dns-default}
spec:
  dnsPolicy: Default
  terminationGracePeriodSeconds: 0
  containers: [{name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}]
---
apiVersion: v1
kind: Pod
metadata: {name: dns-none}
spec:
  dnsPolicy: None
  dnsConfig:
    nameservers: [192.0.2.53]
    searches: [a.example]
    options: [{name: ndots, value: '2'}]
  terminationGracePeriodSeconds: 0
  containers: [{name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}]
---
apiVersion: v1
kind: Pod
metadata: {name: dns-hostnet}
spec:
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  terminationGracePeriodSeconds: 0
  containers: [{name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}]
---
apiVersion: v1
kind: Pod
metadata: {name: echo, labels: {app: echo}}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{name: c, image: busybox, imagePullPolicy: Never, command: [nc, -ll, -p, '7000', -e, cat]}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 7000}]
";

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

#[test]
fn services_by_address_and_name_dns_policies_and_a_restart() {
    let mut c = Cluster::start();
    c.apply("web.yaml", WEB);
    c.apply("pods.yaml", PODS);
    for pod in ["client", "dns-default", "dns-none", "dns-hostnet", "echo"] {
        c.until(&format!("pod {pod} running"), 90, || c.get(&["pod", pod]).filter(running));
    }
    c.until("two web pods running", 90, || {
        let l = c.get(&["pods", "-l", "app=web"])?;
        let items = l["items"].as_array()?;
        (items.len() == 2 && items.iter().all(running)).then_some(())
    });
    let web_ips = c.pod_ips("app=web");
    let names: Vec<String> = c.get(&["pods", "-l", "app=web"]).unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();

    // The ClusterIP, then the names through the search list, and the full name: each
    // answers with one of the web pods' hostnames.
    let web_ip = c.cluster_ip("web");
    c.until("the web Service's rules", 60, || {
        c.service_table().contains(&format!("{web_ip} . tcp . 80")).then_some(())
    });
    for target in [web_ip.as_str(), "web", "web.default", "web.default.svc.cluster.local"] {
        let url = format!("http://{target}/");
        let body = c.until(&format!("wget {url}"), 60, || {
            let (ok, out) = c.exec("client", &["timeout", "10", "wget", "-q", "-O", "-", &url]);
            ok.then_some(out)
        });
        assert!(names.contains(&body.trim().to_string()), "{url} answered {body:?}, not one of {names:?}");
    }

    // A headless Service's name is its pods' addresses.
    let got = c.until("the headless Service's addresses", 60, || {
        let (ok, out) = c.exec("client", &["nslookup", "-type=a", "web-headless.default.svc.cluster.local."]);
        let ips = nslookup_addresses(&out);
        (ok && ips == web_ips).then_some(ips)
    });
    assert_eq!(got, web_ips);

    // resolv.conf by dnsPolicy.
    let cidr: ipnet::Ipv4Net = c.node.cidr.parse().unwrap();
    let gateway = Ipv4Addr::from(u32::from(cidr.network()) + 1);
    let resolv = |pod: &str| c.exec(pod, &["cat", "/etc/resolv.conf"]).1;
    let cluster_first =
        format!("nameserver {gateway}\nsearch default.svc.cluster.local svc.cluster.local cluster.local");
    let client = resolv("client");
    assert!(client.starts_with(&cluster_first), "{client}");
    assert!(client.ends_with("options ndots:5\n"), "{client}");
    let hostnet = resolv("dns-hostnet");
    assert!(hostnet.starts_with(&cluster_first), "{hostnet}");
    let host = nodectl::node::sandbox::pod_resolv_conf(&fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    assert_eq!(resolv("dns-default"), host);
    assert_eq!(resolv("dns-none"), "nameserver 192.0.2.53\nsearch a.example\noptions ndots:2\n");

    // In-cluster access to the API, as client-go's in-cluster config finds it: the
    // Services' variables, and the projected token, CA and namespace.
    let env = c.exec("client", &["env"]).1;
    assert!(env.contains("KUBERNETES_SERVICE_HOST=10.96.0.1\n"), "{env}");
    assert!(env.contains("KUBERNETES_SERVICE_PORT=443\n"), "{env}");
    assert!(env.contains(&format!("WEB_SERVICE_HOST={web_ip}\n")), "{env}");
    assert!(env.contains(&format!("WEB_PORT_80_TCP=tcp://{web_ip}:80\n")), "{env}");
    const SA: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert_eq!(c.exec("client", &["cat", &format!("{SA}/namespace")]), (true, "default".to_string()));
    let ca = c.exec("client", &["cat", &format!("{SA}/ca.crt")]).1;
    assert_eq!(ca, fs::read_to_string(c.s.dir.join("ca.crt")).unwrap());
    let (ok, token) = c.exec("client", &["cat", &format!("{SA}/token")]);
    assert!(ok && token.split('.').count() == 3, "{token}");
    let (ok, _) = c.exec("client", &["touch", &format!("{SA}/x")]);
    assert!(!ok, "the token's volume is read-only");
    // The default account may do nothing yet, then what RoleBindings give it: the server
    // knows who the token is. (Asked from this process: busybox's wget has TLS of its own
    // where no openssl is on the PATH, as in a pod, and its TLS 1.2 ClientHello sends no
    // signature_algorithms, which leaves a server SHA-1 signatures only; rustls signs
    // with none, so the handshake fails, from a pod or from the host alike.)
    // `kubernetes.default.svc` leads to the server: its name, its ClusterIP, and the
    // endpoint every server writes for itself.
    c.until("kubernetes.default.svc:443 reached from the pod", 30, || {
        let (ok, _) = c.exec("client", &["sh", "-c", "nc -w 5 kubernetes.default.svc 443 </dev/null"]);
        ok.then_some(())
    });
    let as_pod = |token: &str| c.s.request("GET", "/api/v1/namespaces/default/pods/client", Some(token), None);
    assert_eq!(as_pod(&token).0, 403);
    c.s.ok(&["create", "rolebinding", "sa-view", "--clusterrole=view", "--serviceaccount=default:default"]);
    let pod = c.until("the default account reading its pod once it may view", 30, || {
        let (code, body) = as_pod(&token);
        (code == 200).then_some(body)
    });
    let pod: Value = serde_json::from_str(&pod).unwrap();
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    // A token is bound to its pod: once the pod is gone, so is the token.
    let (ok, other) = c.exec("dns-default", &["cat", &format!("{SA}/token")]);
    assert!(ok && other != token, "each pod has a token of its own");
    assert_eq!(c.s.request("GET", "/api/v1/namespaces/default/pods", Some(&other), None).0, 200);
    c.s.ok(&["delete", "pod", "dns-default", "--grace-period=0"]);
    c.until("a deleted pod's token refused", 30, || {
        (c.s.request("GET", "/api/v1/namespaces/default/pods", Some(&other), None).0 == 401).then_some(())
    });
    assert_eq!(c.s.request("GET", "/api/v1/namespaces/default/pods", Some(&token), None).0, 200);

    // An open connection through a ClusterIP, from the node itself.
    let echo_ip = c.cluster_ip("echo");
    let gone_ip = c.cluster_ip("gone");
    c.until("the echo and gone Services' rules", 60, || {
        let t = c.service_table();
        (t.contains(&format!("{echo_ip} . tcp . 7000")) && t.contains(&format!("{gone_ip} . tcp . 81"))).then_some(())
    });
    let mut nc = c
        .lan
        .in_node(1, "busybox")
        .args(["nc", &echo_ip, "7000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut to = nc.stdin.take().unwrap();
    let mut from = BufReader::new(nc.stdout.take().unwrap());
    let mut line = String::new();
    to.write_all(b"before\n").unwrap();
    from.read_line(&mut line).unwrap();
    assert_eq!(line, "before\n");

    // The daemon dies; a Service is deleted meanwhile; the daemon comes back.
    c.node.kill_daemon();
    c.s.ok(&["delete", "service", "gone"]);
    c.node.restart();
    c.until("the deleted Service's rules gone after the restart", 60, || {
        let t = c.service_table();
        (!t.is_empty() && !t.contains(&gone_ip) && t.contains(&format!("{web_ip} . tcp . 80"))).then_some(())
    });
    line.clear();
    to.write_all(b"after\n").unwrap();
    from.read_line(&mut line).unwrap();
    assert_eq!(line, "after\n", "the connection did not survive the restart");
    drop(to);
    let _ = nc.kill();
    let _ = nc.wait();

    // Scaled to 0: the ClusterIP refuses (a reject, not a timeout).
    c.s.ok(&["scale", "deployment", "web", "--replicas=0"]);
    c.until("web refusing with no endpoints", 60, || {
        let (ok, out) = c.exec("client", &["timeout", "10", "wget", "-O", "-", &format!("http://{web_ip}/")]);
        (!ok && out.contains("refused")).then_some(())
    });

    c.s.ok(&["delete", "pods", "--all", "--grace-period=0"]);
    c.s.ok(&["delete", "deployment", "web"]);
    c.until("every pod stopped", 60, || {
        let n = fs::read_dir(c.node.root().join("pods")).map(|d| d.count()).unwrap_or(0);
        (n == 0).then_some(())
    });

    // With no daemon and no pod left, gc removes the Service table.
    c.node.kill_daemon();
    // In the node's namespace, with its bridge.
    let out = c.node.command().arg("gc").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("removed nftables table ip nodectl_svc_{}", c.node.bridge)),
        "{text}\n{}",
        c.service_table()
    );
    assert_eq!(c.service_table(), "");
}
