//! A node daemon joins a real `nodectl server` (issue 11, "Nodes join"): it registers, keeps
//! its Node and Lease, runs the pods bound to it and writes their status back, all seen
//! with the real kubectl. Each test has its own server data dir, state root, bridge and pod
//! CIDR, and removes what it made.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::daemon::Node;
use common::portforward::PortForward;
use common::server::{Server, free_port};
use serde_json::Value;

/// A daemon on a state root, bridge and CIDR of its own (tests/common/daemon.rs) that
/// joins `server` as `name`.
struct JoinedNode {
    node: Node,
    name: String,
    server: String,
    data: PathBuf,
}

impl JoinedNode {
    fn new(s: &Server, name: &str) -> JoinedNode {
        JoinedNode {
            node: Node::new("ndj", 200).with_busybox(),
            name: name.to_string(),
            server: s.url(""),
            data: s.dir.clone(),
        }
    }

    fn root(&self) -> &Path {
        self.node.root()
    }

    /// The flags that join the server with the join token in `token_file`.
    fn join_flags(&self, token_file: &Path) -> Vec<String> {
        let mut flags: Vec<String> = ["--server", &self.server, "--token-file"].map(String::from).into();
        flags.push(token_file.to_string_lossy().into_owned());
        flags.push("--ca-file".into());
        flags.push(self.data.join("ca.crt").to_string_lossy().into_owned());
        flags.extend(
            [
                "--node-name",
                &self.name,
                "--system-reserved",
                "cpu=100m,memory=64Mi",
                "--max-pods",
                "20",
                // Any free port: tests run side by side on one host.
                "--serving-address",
                "127.0.0.1:0",
                // The pods' volumes follow their sources each second, not each minute.
                "--sync-frequency",
                "1s",
            ]
            .map(String::from),
        );
        flags
    }

    /// Starts the daemon and waits until it serves (it has joined by then).
    fn start(&mut self) {
        let flags = self.join_flags(&self.data.join("node-token"));
        self.node.start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    }

    fn stop(&mut self) {
        self.node.kill_daemon();
    }

    fn log(&self) -> String {
        self.node.log()
    }

    /// The pods the daemon itself holds, by name.
    fn local_pods(&self) -> Vec<String> {
        let list: Value = serde_json::from_str(&self.node.ok(&["get", "pods", "-A", "-o", "json"])).unwrap();
        list["items"].as_array().unwrap().iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()).collect()
    }
}

fn get(s: &Server, args: &[&str]) -> Option<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = s.kubectl(&all);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Waits until `args`' object satisfies `want`; returns it.
fn wait_for(s: &Server, node: &JoinedNode, args: &[&str], secs: u64, want: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = get(s, args);
        if let Some(v) = v.as_ref().filter(|v| want(v)) {
            return v.clone();
        }
        assert!(Instant::now() < end, "{args:?} never got there: {v:#?}\ndaemon's log:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn condition<'a>(obj: &'a Value, kind: &str) -> &'a Value {
    obj["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).unwrap_or(&Value::Null)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const WEB: &str = "
apiVersion: v1
kind: ConfigMap
metadata: {name: greeting}
data: {text: hello-from-the-api}
---
apiVersion: v1
kind: Secret
metadata: {name: password}
data: {word: b25l}
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    env: [{name: GREETING, valueFrom: {configMapKeyRef: {name: greeting, key: text}}}]
    command: [sh, -c, 'trap \"exit 0\" TERM; echo \"said $GREETING\"; while :; do sleep 0.1; done']
    volumeMounts:
    - {name: greeting, mountPath: /etc/greeting}
    - {name: password, mountPath: /etc/password}
    - {name: podinfo, mountPath: /etc/podinfo}
  volumes:
  - {name: greeting, configMap: {name: greeting}}
  - {name: password, secret: {secretName: password}}
  - {name: podinfo, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}
";

/// Reads its stdin (kept for attaching, closed when the first client is done with it).
const ECHOER: &str = "
apiVersion: v1
kind: Pod
metadata: {name: echoer}
spec:
  nodeName: n1
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    stdin: true
    stdinOnce: true
    command: [sh, -c, 'while read l; do echo \"got $l\"; echo \"err $l\" >&2; done; echo bye']
";

/// Serves a page (busybox httpd, on 8080) and echoes (nc with cat, on 8081), ready once
/// the echo port listens.
const FORWARDED: &str = "
apiVersion: v1
kind: Pod
metadata: {name: forwarded}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'mkdir -p /www && echo hello-through-port-forward > /www/index.html && httpd -p 8080 -h /www && exec nc -ll -p 8081 -e /bin/cat']
    readinessProbe: {tcpSocket: {port: 8081}, periodSeconds: 1}
";

const LATER: &str = "
apiVersion: v1
kind: Pod
metadata: {name: later}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    envFrom: [{configMapRef: {name: made-later}}]
    command: [sh, -c, 'trap \"exit 0\" TERM; while :; do sleep 0.1; done']
";

#[test]
fn a_joined_node_reports_itself_and_runs_the_pods_bound_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let mut node = JoinedNode::new(&s, "n1");
    node.start();

    // The Node, as `kubectl get nodes` shows it: Ready, with its labels and resources.
    let n = wait_for(&s, &node, &["node", "n1"], 30, |n| condition(n, "Ready")["status"] == "True");
    assert_eq!(condition(&n, "Ready")["reason"], "KubeletReady");
    for (kind, reason) in [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ] {
        assert_eq!(
            (condition(&n, kind)["status"].as_str(), condition(&n, kind)["reason"].as_str()),
            (Some("False"), Some(reason))
        );
    }
    let labels = &n["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], "n1");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], "amd64");
    let (cap, alloc) = (&n["status"]["capacity"], &n["status"]["allocatable"]);
    assert_eq!((cap["pods"].as_str(), alloc["pods"].as_str()), (Some("20"), Some("20")));
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(cap["cpu"], cpus.to_string());
    assert_eq!(alloc["cpu"], format!("{}m", cpus * 1000 - 100));
    let ki = |q: &Value| q.as_str().unwrap().strip_suffix("Ki").unwrap().parse::<i64>().unwrap();
    assert_eq!(ki(&cap["memory"]) - ki(&alloc["memory"]), 64 * 1024);
    let info = &n["status"]["nodeInfo"];
    assert_eq!(info["kubeletVersion"], "v1.32.0");
    assert!(info["containerRuntimeVersion"].as_str().unwrap().starts_with("nodectl://"), "{info}");
    assert_eq!(info["bootID"].as_str().unwrap(), fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim());
    let addresses = n["status"]["addresses"].to_string();
    assert!(addresses.contains("\"InternalIP\"") && addresses.contains("127.0.0.1"), "{addresses}");
    let table = s.ok(&["get", "nodes"]);
    assert!(table.lines().any(|l| l.starts_with("n1 ") && l.contains(" Ready ")), "{table}");

    // The Lease is the heartbeat: renewed every 10 s.
    let lease = wait_for(&s, &node, &["lease", "n1", "-n", "kube-node-lease"], 30, |_| true);
    assert_eq!(lease["spec"]["holderIdentity"], "n1");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    let renewed = lease["spec"]["renewTime"].clone();
    wait_for(&s, &node, &["lease", "n1", "-n", "kube-node-lease"], 25, |l| l["spec"]["renewTime"] != renewed);

    // A pod bound here runs, with its env from a ConfigMap the node fetched.
    s.ok(&["apply", "-f", &write(tmp.path(), "web.yaml", WEB)]);
    let web = wait_for(&s, &node, &["pod", "web"], 60, |p| {
        p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true
    });
    let ip = web["status"]["podIP"].as_str().unwrap();
    assert!(ip.starts_with(node.node.cidr.rsplit_once('.').unwrap().0), "{ip}");
    assert_eq!(web["status"]["hostIP"], "127.0.0.1");
    assert_eq!(condition(&web, "Ready")["status"], "True");
    let table = s.ok(&["get", "pod", "web"]);
    assert!(table.lines().nth(1).is_some_and(|l| l.contains("Running")), "{table}");
    let local: Value = serde_json::from_str(&common::ok(node.root(), &["get", "pod", "web", "-o", "json"])).unwrap();
    assert_eq!(local["metadata"]["uid"], web["metadata"]["uid"], "the daemon keeps the API's uid");
    let end = Instant::now() + Duration::from_secs(20);
    while !common::ok(node.root(), &["logs", "web"]).contains("said hello-from-the-api") {
        assert!(Instant::now() < end, "the container never said its greeting");
        std::thread::sleep(Duration::from_millis(100));
    }
    logs_through_the_server(&s, &node);
    exec_through_the_server(&s);
    attach_through_the_server(&s, &node, tmp.path());
    port_forward_through_the_server(&s, &node, tmp.path());
    volumes_follow_their_sources(&s, &node);

    // A pod naming a ConfigMap that is not there waits, and runs once it is made.
    s.ok(&["apply", "-f", &write(tmp.path(), "later.yaml", LATER)]);
    let waiting = wait_for(&s, &node, &["pod", "later"], 30, |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    let message = waiting["status"]["containerStatuses"][0]["state"]["waiting"]["message"].as_str().unwrap();
    assert_eq!(message, "configmap \"made-later\" not found");
    assert_eq!(waiting["status"]["phase"], "Pending");
    s.ok(&["create", "configmap", "made-later", "--from-literal=k=v"]);
    wait_for(&s, &node, &["pod", "later"], 60, |p| p["status"]["phase"] == "Running");

    // A restart of the daemon neither restarts nor loses the pod.
    let started = web["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].clone();
    node.stop();
    node.start();
    std::thread::sleep(Duration::from_secs(3));
    let web = wait_for(&s, &node, &["pod", "web"], 30, |p| p["status"]["phase"] == "Running");
    assert_eq!(web["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(web["status"]["containerStatuses"][0]["state"]["running"]["startedAt"], started, "not restarted");

    // A pod taken from the node while the daemon was away is stopped when it is back.
    node.stop();
    s.ok(&["delete", "pod", "later", "--grace-period=0", "--force"]);
    node.start();
    let end = Instant::now() + Duration::from_secs(30);
    while node.local_pods().contains(&"later".to_string()) {
        assert!(Instant::now() < end, "the stale pod still runs: {}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // `kubectl delete pod` stops it on the node, and the node ends the deletion.
    s.ok(&["delete", "pod", "web", "--timeout=60s"]);
    assert!(get(&s, &["pod", "web"]).is_none(), "the pod is gone from the API");
    assert!(node.local_pods().is_empty(), "nothing left in the daemon: {:?}", node.local_pods());
    let end = Instant::now() + Duration::from_secs(10);
    while fs::read_dir(node.root().join("pods")).map(|d| d.count()).unwrap_or(0) > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    node.node.assert_clean();
}

/// The pod's configMap, secret and downwardAPI volumes follow the ConfigMap, the Secret and
/// the pod's labels, as the kubelet keeps them (each --sync-frequency); its environment,
/// read once at the container's start, does not.
fn volumes_follow_their_sources(s: &Server, node: &JoinedNode) {
    let read =
        |path: &str| String::from_utf8_lossy(&s.kubectl(&["exec", "web", "--", "cat", path]).stdout).into_owned();
    assert_eq!(read("/etc/greeting/text"), "hello-from-the-api");
    assert_eq!(read("/etc/password/word"), "one");
    assert!(!read("/etc/podinfo/labels").contains("tier="));
    s.ok(&["patch", "configmap", "greeting", "-p", r#"{"data":{"text":"changed","added":"new"}}"#]);
    s.ok(&["patch", "secret", "password", "-p", r#"{"data":{"word":"dHdv"}}"#]);
    s.ok(&["label", "pod", "web", "tier=front"]);
    let end = Instant::now() + Duration::from_secs(60);
    let want = [
        ("/etc/greeting/text", "changed"),
        ("/etc/greeting/added", "new"),
        ("/etc/password/word", "two"),
        ("/etc/podinfo/labels", "tier=\"front\""),
    ];
    loop {
        let now: Vec<String> = want.iter().map(|(path, _)| read(path)).collect();
        if want.iter().zip(&now).all(|((_, w), n)| n.contains(w)) {
            break;
        }
        assert!(Instant::now() < end, "the volumes never followed: {now:?}\ndaemon's log:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    let env = s.kubectl(&["exec", "web", "--", "sh", "-c", "echo $GREETING"]);
    assert_eq!(String::from_utf8_lossy(&env.stdout), "hello-from-the-api\n");
}

/// `kubectl logs` reaches the node through the server, with kubectl's options; the node's
/// endpoint takes the server's client certificate and nothing else.
fn logs_through_the_server(s: &Server, node: &JoinedNode) {
    let n = get(s, &["node", &node.name]).unwrap();
    let port = n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().expect("a daemon endpoint");
    assert!(s.ok(&["logs", "web"]).contains("said hello-from-the-api\n"));
    assert_eq!(s.ok(&["logs", "web", "-c", "c", "--tail=1"]), "said hello-from-the-api\n");
    assert_eq!(s.ok(&["logs", "web", "--limit-bytes=4"]), "said");
    let stamped = s.ok(&["logs", "web", "--timestamps"]);
    let (time, text) = stamped.trim_end().split_once(' ').unwrap();
    assert!(time.starts_with("20") && time.contains('T'), "{stamped}");
    assert_eq!(text, "said hello-from-the-api");
    assert_eq!(s.ok(&["logs", "web", "--since=1h"]), "said hello-from-the-api\n");
    assert_eq!(s.ok(&["logs", "web", "--since-time=2999-01-01T00:00:00Z"]), "");
    let err = s.fails(&["logs", "web", "-c", "nope"]);
    assert!(err.contains("container nope is not valid for pod web"), "{err}");
    let err = s.fails(&["logs", "web", "--previous"]);
    assert!(err.contains("previous terminated container \"c\" in pod \"web\" not found"), "{err}");

    // -f streams: the first line comes while the container still runs.
    let mut follow = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(s.dir.join("admin.kubeconfig"))
        .args(["logs", "-f", "web"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(follow.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "said hello-from-the-api\n");
    assert!(follow.try_wait().unwrap().is_none(), "logs -f goes on while the container runs");
    follow.kill().unwrap();
    follow.wait().unwrap();

    // The node's endpoint: only the server's client certificate gets in (a token does not).
    let direct = std::process::Command::new("kubectl")
        .args(["--server", &format!("https://127.0.0.1:{port}"), "--certificate-authority"])
        .arg(node.data.join("ca.crt"))
        .args(["--token", &s.admin_token(), "get", "--raw", "/containerLogs/default/web/c"])
        .env("KUBECONFIG", "/dev/null")
        .output()
        .unwrap();
    assert!(!direct.status.success(), "the node served a client without the server's certificate");
}

/// `kubectl exec` through the server: kubectl speaks WebSocket (v5.channel.k8s.io) to the
/// server, which joins it to the node's endpoint.
fn exec_through_the_server(s: &Server) {
    assert_eq!(s.ok(&["exec", "web", "--", "echo", "hi", "$GREETING"]), "hi $GREETING\n");
    assert_eq!(s.ok(&["exec", "web", "-c", "c", "--", "sh", "-c", "echo $GREETING"]), "hello-from-the-api\n");

    // Output and error apart, and the exit code carried through.
    let out = s.kubectl(&["exec", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("err\n") && stderr.contains("command terminated with exit code 3"), "{stderr}");

    // stdin goes in, and its end (v5's close signal) ends the command's input.
    let mut cat = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(s.dir.join("admin.kubeconfig"))
        .args(["exec", "-i", "web", "--", "sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut cat.stdin.take().unwrap(), b"piped in\n").unwrap();
    let out = cat.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped in\ndone\n");

    let err = s.fails(&["exec", "web", "-c", "nope", "--", "true"]);
    assert!(err.contains("container nope is not valid for pod web"), "{err}");
    let err = s.fails(&["exec", "web", "--", "/no/such/program"]);
    assert!(err.contains("/no/such/program"), "{err}");
}

fn attach_through_the_server(s: &Server, node: &JoinedNode, tmp: &Path) {
    s.ok(&["apply", "-f", &write(tmp, "echoer.yaml", ECHOER)]);
    wait_for(s, node, &["pod", "echoer"], 60, |p| p["status"]["phase"] == "Running");
    // Our input reaches the container's stdin; its output and error come back apart; the
    // end of our input ends its (stdinOnce), and with it the container and the session.
    let mut attach = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(s.dir.join("admin.kubeconfig"))
        .args(["attach", "-i", "echoer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut attach.stdin.take().unwrap(), b"one\ntwo\n").unwrap();
    let out = attach.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got one\ngot two\nbye\n");
    assert!(stderr.contains("err one\nerr two\n"), "{stderr}");
    wait_for(s, node, &["pod", "echoer"], 30, |p| p["status"]["phase"] == "Succeeded");
    s.ok(&["delete", "pod", "echoer", "--timeout=60s"]);
}

/// `kubectl port-forward` through the server: kubectl tunnels SPDY/3.1 in a WebSocket to
/// the server, which joins it to the node; the node connects inside the pod's network
/// namespace. Each local connection is one forwarded connection, both halves carried.
fn port_forward_through_the_server(s: &Server, node: &JoinedNode, tmp: &Path) {
    s.ok(&["apply", "-f", &write(tmp, "forwarded.yaml", FORWARDED)]);
    wait_for(s, node, &["pod", "forwarded"], 60, |p| condition(p, "Ready")["status"] == "True");
    let big: String = (0..20_000).map(|i| format!("{i}\n")).collect();
    for websocket in [true, false] {
        let pf = PortForward::start(s, "forwarded", &[8081, 8080], websocket);
        // Our end of input reaches the pod (cat ends, and with it the connection); again on
        // a second connection; then an HTTP exchange on the other port.
        assert_eq!(pf.exchange(8081, b"one\n"), "one\n");
        assert_eq!(pf.exchange(8081, b"two\nthree\n"), "two\nthree\n");
        assert_eq!(pf.exchange(8081, big.as_bytes()), big, "100 KiB each way");
        let page = pf.exchange(8080, b"GET /index.html HTTP/1.0\r\n\r\n");
        assert!(page.starts_with("HTTP/1.") && page.contains(" 200 "), "{page}");
        assert!(page.ends_with("\r\n\r\nhello-through-port-forward\n"), "{page}");
        // kubectl says (-v=4) which way it took: SPDY in a WebSocket, or plain SPDY.
        let err = pf.stop();
        assert_eq!(err.contains("negotiated protocol: portforward.k8s.io"), websocket, "{err}");
    }

    // A port nothing listens on: kubectl shows the node's error and gives the connection up.
    let pf = PortForward::start(s, "forwarded", &[9], true);
    assert_eq!(pf.exchange(9, b"anyone?"), "");
    let (status, err) = pf.wait_end(30);
    assert!(!status.success(), "{err}");
    assert!(err.contains("error forwarding port 9 to pod forwarded, uid "), "{err}");
    assert!(err.contains("failed to connect to localhost:9 inside namespace"), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    assert!(err.contains("lost connection to pod"), "{err}");
    s.ok(&["delete", "pod", "forwarded", "--timeout=60s"]);
}

#[test]
fn a_wrong_join_token_is_a_clear_error_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let node = JoinedNode::new(&s, "n2");
    let wrong = tmp.path().join("wrong-token");
    fs::write(&wrong, "not-the-join-token\n").unwrap();
    let out = node
        .node
        .command()
        .arg("daemon")
        .args(node.join_flags(&wrong))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the daemon should not start: {err}");
    assert!(err.contains("refused to register node \"n2\" (401)"), "{err}");
    assert!(err.contains("--token-file"), "{err}");
    assert!(get(&s, &["node", "n2"]).is_none(), "no Node was made");
}
