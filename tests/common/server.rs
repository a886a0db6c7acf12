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

    /// Kills the server now (as dropping it does), e.g. to start another on the same data.
    pub fn stop(self) {}
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
