//! A `nodectl server` of a test's own, on a free loopback port, driven with the real
//! kubectl through the admin kubeconfig it writes; killed on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `nodectl daemon --fake --count N` on a kubeconfig (the server's admin.kubeconfig), with
/// its own state root; killed when dropped.
pub struct FakeNodes(Child);

impl FakeNodes {
    pub fn start(root: &Path, kubeconfig: &Path, count: usize) -> FakeNodes {
        let child = Command::new(env!("CARGO_BIN_EXE_nodectl"))
            .arg("--root")
            .arg(root)
            .args(["daemon", "--fake", "--count", &count.to_string(), "--kubeconfig"])
            .arg(kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        FakeNodes(child)
    }
}

impl Drop for FakeNodes {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Asks `f` every 200 ms until it answers, for at most `secs` seconds.
pub fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A port that is free now, for a server a test starts (and may kill and start again on
/// it). Below the kernel's ephemeral range (32768-60999 here): a port from there, which
/// binding port 0 gives, may be taken by any outgoing connection on the machine while the
/// server is down between a kill and its restart.
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + (rand::random::<u32>() % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The server's log: a file in `$NODECTL_TEST_SERVER_LOGS` when that is set (to look into
/// a failing test), else nowhere.
fn log_to() -> Stdio {
    let Some(dir) = std::env::var_os("NODECTL_TEST_SERVER_LOGS") else { return Stdio::null() };
    let path = Path::new(&dir).join(format!("server-{}-{}.log", std::process::id(), free_port()));
    std::fs::File::create(path).map(Stdio::from).unwrap_or_else(|_| Stdio::null())
}

pub struct Server {
    child: Child,
    pub dir: PathBuf,
    pub ip: std::net::Ipv4Addr,
    pub port: u16,
}

impl Server {
    /// Starts the server on `dir` (with `extra` flags, such as `--etcd URL`) and waits until
    /// it listens and has written its kubeconfig.
    pub fn start(dir: &Path, port: u16, extra: &[&str]) -> Server {
        Server::start_on(dir, std::net::Ipv4Addr::LOCALHOST, port, extra)
    }

    /// A server listening on `ip` alone (its certificate and admin.kubeconfig name it).
    pub fn start_on(dir: &Path, ip: std::net::Ipv4Addr, port: u16, extra: &[&str]) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_nodectl"))
            .args(["server", "--data-dir"])
            .arg(dir)
            .args(["--listen", &format!("{ip}:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log_to())
            .spawn()
            .unwrap();
        let mut s = Server { child, dir: dir.to_path_buf(), ip, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((ip, port)).is_err() || !dir.join("admin.kubeconfig").exists() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("server exited: {status}");
            }
            assert!(Instant::now() < deadline, "server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.dir.join("admin.kubeconfig"))
            .args(args)
            .output()
            .expect("kubectl is installed")
    }

    /// kubectl with a bearer token instead of the admin kubeconfig.
    pub fn kubectl_with_token(&self, token: &str, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(["--server", &self.url(""), "--certificate-authority"])
            .arg(self.dir.join("ca.crt"))
            .args(["--token", token])
            .args(args)
            .env("KUBECONFIG", "/dev/null")
            .output()
            .expect("kubectl is installed")
    }

    /// kubectl's answer with `-o json`, parsed; the command must succeed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(!out.status.success(), "kubectl {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("admin-token")).unwrap().trim().to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}:{}{path}", self.ip, self.port)
    }

    /// An HTTPS client that trusts this server's CA.
    pub fn http_client(&self) -> reqwest::Client {
        self.http_client_keeping(usize::MAX)
    }

    /// The same, keeping at most `idle` idle connections to the server (usize::MAX: reqwest's default).
    pub fn http_client_keeping(&self, idle: usize) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.dir.join("ca.crt")).unwrap()).unwrap();
        reqwest::Client::builder().tls_certs_only([ca]).pool_max_idle_per_host(idle).build().unwrap()
    }

    /// One request with `token` as bearer (None: no Authorization header): the status
    /// code and the body, read to its end.
    pub fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<(&str, &[u8])>) -> (u16, String) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut req = self.http_client().request(method.parse().unwrap(), self.url(path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some((content_type, bytes)) = body {
                req = req.header("Content-Type", content_type).body(bytes.to_vec());
            }
            let resp = req.send().await.unwrap();
            let code = resp.status().as_u16();
            (code, resp.text().await.unwrap())
        })
    }

    /// Kills the server now (as dropping it does), e.g. to start another on the same data.
    pub fn stop(self) {}

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server as an init system does (SIGTERM) and waits until it has exited.
    pub fn terminate(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the server exited with {status} on SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a writer was told: an acknowledged write.
enum Ack {
    /// configmap NAME created at revision.
    Created(String, i64),
    /// the counter configmap NAME set to n at revision.
    Counted(String, u64, i64),
}

/// The server on `dir` (with `extra` flags, e.g. `--etcd URL`) is SIGKILLed in the middle of
/// a steady write load over HTTP: four writers create configmaps and, every fourth write,
/// bump a counter configmap of their own, each recording what was acknowledged. Started
/// again on the same data, the server has every acknowledged write: each created object at
/// the resourceVersion its create answered, each counter at least at its last acknowledged
/// value (a bump in flight at the kill may or may not have been applied), and exactly at
/// its revision if no later bump was applied.
pub fn kill_9_under_load_loses_no_acknowledged_write(dir: &Path, extra: &[&str]) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const WRITERS: usize = 4;
    const KILL_AFTER: usize = 400;
    let port = free_port();
    let server = Server::start(dir, port, extra);
    let (token, client) = (server.admin_token(), server.http_client());
    let base = server.url("/api/v1/namespaces/default/configmaps");
    let killed = Arc::new(AtomicBool::new(false));
    let mut running = Some(server);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let acks: Vec<Ack> = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let body = serde_json::json!({"metadata": {"name": format!("counter-{w}")}, "data": {"n": "0"}});
            let resp = client.post(&base).bearer_auth(&token).json(&body).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 201);
        }
        for w in 0..WRITERS {
            let (client, token, base, tx, killed) =
                (client.clone(), token.clone(), base.clone(), tx.clone(), killed.clone());
            writers.push(tokio::spawn(async move {
                let counter = format!("counter-{w}");
                for i in 1u64.. {
                    let (req, ack): (_, Box<dyn Fn(i64) -> Ack + Send>) = if i % 4 == 0 {
                        let patch = serde_json::json!({"data": {"n": i.to_string()}}).to_string();
                        let req = client
                            .patch(format!("{base}/{counter}"))
                            .header("Content-Type", "application/merge-patch+json")
                            .body(patch);
                        let name = counter.clone();
                        (req, Box::new(move |rv| Ack::Counted(name.clone(), i, rv)))
                    } else {
                        let name = format!("w{w}-{i:06}");
                        let req = client
                            .post(&base)
                            .json(&serde_json::json!({"metadata": {"name": name}, "data": {"i": i.to_string()}}));
                        (req, Box::new(move |rv| Ack::Created(name.clone(), rv)))
                    };
                    let answer = match req.bearer_auth(&token).send().await {
                        Ok(resp) => {
                            let code = resp.status().as_u16();
                            resp.json::<serde_json::Value>().await.map(|v| (code, v))
                        }
                        Err(e) => Err(e),
                    };
                    match answer {
                        Ok((200 | 201, obj)) => {
                            let rv = obj["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
                            if tx.send(ack(rv)).is_err() {
                                return;
                            }
                        }
                        // After the kill every request fails; before it, none may.
                        _ if killed.load(Ordering::SeqCst) => return,
                        other => panic!("write {i} of writer {w} failed before the kill: {other:?}"),
                    }
                }
            }));
        }
        drop(tx);
        let mut acks = Vec::new();
        while let Some(a) = rx.recv().await {
            acks.push(a);
            if acks.len() == KILL_AFTER {
                killed.store(true, Ordering::SeqCst);
                // Dropping the server SIGKILLs it (and reaps it).
                drop(running.take());
            }
        }
        for w in writers {
            w.await.unwrap();
        }
        acks
    });
    assert!(running.is_none() && acks.len() >= KILL_AFTER, "the writers stopped after {} writes", acks.len());

    let server = Server::start(dir, port, extra);
    let token = server.admin_token();
    let list = server.request("GET", "/api/v1/namespaces/default/configmaps", Some(&token), None);
    assert_eq!(list.0, 200, "{}", list.1);
    let list: serde_json::Value = serde_json::from_str(&list.1).unwrap();
    let stored: std::collections::HashMap<String, (i64, serde_json::Value)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().to_string(),
                (o["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap(), o["data"].clone()),
            )
        })
        .collect();
    let mut last_count: std::collections::HashMap<String, (u64, i64)> = Default::default();
    for a in &acks {
        match a {
            Ack::Created(name, rv) => {
                let (at, _) = stored
                    .get(name)
                    .unwrap_or_else(|| panic!("acknowledged create of {name} (revision {rv}) was lost"));
                assert_eq!(at, rv, "{name} was created at {rv}, and is stored at {at}");
            }
            Ack::Counted(name, n, rv) => {
                let e = last_count.entry(name.clone()).or_insert((0, 0));
                if *n > e.0 {
                    *e = (*n, *rv);
                }
            }
        }
    }
    for (name, (n, rv)) in &last_count {
        let (at, data) = &stored[name];
        let stored_n: u64 = data["n"].as_str().unwrap().parse().unwrap();
        assert!(stored_n >= *n, "{name}: acknowledged {n} at {rv}, stored {stored_n} at {at}");
        if stored_n == *n {
            assert_eq!(at, rv, "{name}: the acknowledged value {n} is stored at another revision");
        }
    }
    let revisions: Vec<i64> = acks
        .iter()
        .map(|a| match a {
            Ack::Created(_, rv) | Ack::Counted(_, _, rv) => *rv,
        })
        .collect();
    let distinct: std::collections::HashSet<_> = revisions.iter().collect();
    assert_eq!(distinct.len(), revisions.len(), "two acknowledged writes share a revision");
}

/// The API over HTTPS with the admin token, for clients that add their own calls (the
/// benches' `impl Api`).
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn new(s: &Server, idle: usize) -> Api {
        Api { http: s.http_client_keeping(idle), base: s.url(""), token: s.admin_token() }
    }
}

/// Each event of a watch's answer, with the moment its line arrived, until `f` says stop
/// (false) or the answer ends; whether `f` stopped it.
pub async fn for_each_event(
    mut resp: reqwest::Response,
    mut f: impl FnMut(&serde_json::Value, Instant) -> bool,
) -> bool {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let at = Instant::now();
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(&line) else { continue };
            if !f(&event, at) {
                return true;
            }
        }
    }
    false
}
