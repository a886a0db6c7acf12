//! `kubectl port-forward` as a child of a test, through a test's server.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::server::Server;

/// A `kubectl port-forward -v=4` child, killed however the test ends.
pub struct PortForward {
    child: std::process::Child,
    /// Remote port to the local one kubectl chose.
    pub local: std::collections::BTreeMap<u16, u16>,
    stderr: std::thread::JoinHandle<String>,
}

impl PortForward {
    /// Starts it for `ports` (`:REMOTE`, kubectl picks the local port) and waits until it
    /// listens on each. `target` is a pod's name or KIND/NAME (`svc/web`: kubectl picks a
    /// pod of the Service and maps its port to the target port, which is then the key of
    /// `local`). Without `websocket`, kubectl is told to upgrade to SPDY/3.1 itself (its
    /// fallback).
    pub fn start(s: &Server, target: &str, ports: &[u16], websocket: bool) -> PortForward {
        let target = if target.contains('/') { target.to_string() } else { format!("pod/{target}") };
        let mut child = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(s.dir.join("admin.kubeconfig"))
            .args(["port-forward", "-v=4", &target, "--address", "127.0.0.1"])
            .args(ports.iter().map(|p| format!(":{p}")))
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", if websocket { "true" } else { "false" })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        let mut pf = PortForward { child, local: Default::default(), stderr };
        while pf.local.len() < ports.len() {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut out, &mut line).unwrap() == 0 {
                let status = pf.child.wait().unwrap();
                let err = pf.take_stderr();
                panic!("kubectl port-forward ended ({status}) before it listened: {err}");
            }
            // "Forwarding from 127.0.0.1:43127 -> 8080"
            if let Some((local, remote)) =
                line.trim().strip_prefix("Forwarding from 127.0.0.1:").and_then(|l| l.split_once(" -> "))
            {
                pf.local.insert(remote.parse().unwrap(), local.parse().unwrap());
            }
        }
        // Its later lines ("Handling connection for …") are read and dropped.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        pf
    }

    /// Sends `input` to the pod's `port` through the forward, ends its half, and reads all
    /// that comes back until the pod closes.
    pub fn exchange(&self, port: u16, input: &[u8]) -> String {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", self.local[&port])).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        std::io::Write::write_all(&mut c, input).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut c, &mut answer).unwrap();
        answer
    }

    /// Waits (up to `secs`) for kubectl to end by itself: its status and standard error.
    pub fn wait_end(mut self, secs: u64) -> (std::process::ExitStatus, String) {
        let end = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < end, "kubectl port-forward did not end");
            std::thread::sleep(Duration::from_millis(100));
        };
        (status, self.take_stderr())
    }

    /// Stops kubectl (still running: it did not give up): its standard error.
    pub fn stop(mut self) -> String {
        assert!(self.child.try_wait().unwrap().is_none(), "kubectl port-forward ended: {}", self.take_stderr());
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.take_stderr()
    }

    fn take_stderr(&mut self) -> String {
        let done = std::thread::spawn(String::new);
        std::mem::replace(&mut self.stderr, done).join().unwrap()
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
