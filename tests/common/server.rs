//! A `nodectl server` of a test's own, on a free loopback port, driven with the real
//! kubectl through the admin kubeconfig it writes; killed on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Server {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
}

impl Server {
    /// Starts the server on `dir` (with `extra` flags, such as `--etcd URL`) and waits until
    /// it listens and has written its kubeconfig.
    pub fn start(dir: &Path, port: u16, extra: &[&str]) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_nodectl"))
            .args(["server", "--data-dir"])
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut s = Server { child, dir: dir.to_path_buf(), port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() || !dir.join("admin.kubeconfig").exists() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("server exited: {status}");
            }
            assert!(Instant::now() < deadline, "server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl").arg("--kubeconfig").arg(self.dir.join("admin.kubeconfig")).args(args).output().expect("kubectl is installed")
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
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// An HTTPS client that trusts this server's CA.
    pub fn http_client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.dir.join("ca.crt")).unwrap()).unwrap();
        reqwest::Client::builder().tls_certs_only([ca]).build().unwrap()
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
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
