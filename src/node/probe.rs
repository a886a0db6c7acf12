//! What a container's probes and preStop hook do, as the kubelet does it: an exec runs in
//! the container (through the pod's monitor, which is its parent), an httpGet or tcpSocket
//! reaches the pod's IP from the host. When they run and what their results mean is
//! [`super::reconcile`]'s; this module turns the spec into [`Check`]s and runs the network
//! ones, each on a short thread of its own so the owner's loop never waits on a peer.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::BorrowedFd;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::reconcile::{ProbeKind, ProbeTiming, Probes};
use crate::sys::wake;

/// The most of a probe's output kept for its event (the kubelet keeps 10 KiB).
pub const MAX_OUTPUT: usize = 10 * 1024;

/// What a probe or hook does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handler {
    /// Run this command in the container; exit code 0 is a success.
    Exec(Vec<String>),
    /// GET over HTTP (or HTTPS, not verified, as the kubelet does); 200-399 is a success.
    Http { https: bool, host: Option<String>, port: u16, path: String, headers: Vec<(String, String)> },
    /// A TCP connection that opens is a success.
    Tcp { host: Option<String>, port: u16 },
    /// Wait this long (a preStop `sleep`).
    Sleep(Duration),
}

/// A handler and how long one run of it may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub handler: Handler,
    pub timeout: Duration,
}

/// A container's probes: their timings (for reconcile) and checks (for the owner).
#[derive(Clone, Debug, Default)]
pub struct ContainerChecks {
    pub timings: Probes,
    pub probes: [Option<Check>; 3],
    pub pre_stop: Option<Check>,
}

impl ContainerChecks {
    pub fn probe(&self, kind: ProbeKind) -> Option<&Check> {
        self.probes[kind as usize].as_ref()
    }
}

/// A port by number or by the name of one of the container's ports.
fn port(c: &Container, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("the container has no port named {name:?}")),
    }
}

fn seconds(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

/// The checks of a container, with the kubelet's defaults (period 10 s, timeout 1 s,
/// success 1, failure 3). `grace` is the pod's terminationGracePeriodSeconds.
pub fn of_container(c: &Container, grace: Duration) -> Result<ContainerChecks, String> {
    let mut out = ContainerChecks::default();
    for (kind, probe) in [
        (ProbeKind::Startup, &c.startup_probe),
        (ProbeKind::Liveness, &c.liveness_probe),
        (ProbeKind::Readiness, &c.readiness_probe),
    ] {
        let Some(p) = probe else { continue };
        let handler = probe_handler(c, p).map_err(|e| format!("{}Probe: {e}", kind.as_str().to_lowercase()))?;
        out.timings.0[kind as usize] = Some(ProbeTiming {
            initial_delay: seconds(p.initial_delay_seconds, 0),
            period: seconds(p.period_seconds, 10).max(Duration::from_secs(1)),
            success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
            kill_grace: p.termination_grace_period_seconds.map_or(grace, |g| Duration::from_secs(g.max(1) as u64)),
        });
        out.probes[kind as usize] =
            Some(Check { handler, timeout: seconds(p.timeout_seconds, 1).max(Duration::from_secs(1)) });
    }
    if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
        // A hook has no timeout of its own: the grace period bounds it.
        out.pre_stop = hook_handler(c, h)
            .map_err(|e| format!("lifecycle.preStop: {e}"))?
            .map(|handler| Check { handler, timeout: grace });
    }
    Ok(out)
}

fn probe_handler(c: &Container, p: &Probe) -> Result<Handler, String> {
    if let Some(e) = &p.exec {
        return Ok(Handler::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(h) = &p.http_get {
        return http(c, h);
    }
    if let Some(t) = &p.tcp_socket {
        return Ok(Handler::Tcp { host: t.host.clone(), port: port(c, &t.port)? });
    }
    Err("no handler nodectl runs (exec, httpGet, tcpSocket)".into())
}

/// None for a handler the kubelet accepts and does not run (tcpSocket).
fn hook_handler(c: &Container, h: &LifecycleHandler) -> Result<Option<Handler>, String> {
    if let Some(e) = &h.exec {
        return Ok(Some(Handler::Exec(e.command.clone().unwrap_or_default())));
    }
    if let Some(g) = &h.http_get {
        return http(c, g).map(Some);
    }
    if let Some(s) = &h.sleep {
        return Ok(Some(Handler::Sleep(Duration::from_secs(s.seconds.max(0) as u64))));
    }
    Ok(None)
}

fn http(c: &Container, h: &k8s_openapi::api::core::v1::HTTPGetAction) -> Result<Handler, String> {
    Ok(Handler::Http {
        https: h.scheme.as_deref() == Some("HTTPS"),
        host: h.host.clone().filter(|h| !h.is_empty()),
        port: port(c, &h.port)?,
        path: h.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into()),
        headers: h.http_headers.iter().flatten().map(|hh| (hh.name.clone(), hh.value.clone())).collect(),
    })
}

type Outcome<T> = (T, Result<(), String>);

/// Runs network checks on threads and hands their results back through a queue the owner
/// polls.
pub struct Runner<T> {
    tx: wake::Sender<Outcome<T>>,
    rx: wake::Receiver<Outcome<T>>,
}

impl<T: Send + 'static> Runner<T> {
    pub fn new() -> std::io::Result<Runner<T>> {
        let (tx, rx) = wake::channel()?;
        Ok(Runner { tx, rx })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.rx.fd()
    }

    /// Runs a network or sleep check against `ip`; its result comes back with `token`.
    pub fn spawn(&self, token: T, check: &Check, ip: Option<Ipv4Addr>) -> std::io::Result<()> {
        let (tx, check) = (self.tx.clone(), check.clone());
        std::thread::Builder::new().name("probe".into()).spawn(move || tx.send((token, run_network(&check, ip))))?;
        Ok(())
    }

    /// The results that came.
    pub fn take(&mut self) -> Vec<Outcome<T>> {
        self.rx.take()
    }
}

/// One run of an httpGet, tcpSocket or sleep check.
pub fn run_network(check: &Check, ip: Option<Ipv4Addr>) -> Result<(), String> {
    let target = |host: &Option<String>, port: u16| -> Result<SocketAddr, String> {
        match host {
            Some(h) => (h.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("resolve {h}: {e}"))?
                .next()
                .ok_or_else(|| format!("{h} has no address")),
            None => ip.map(|ip| SocketAddr::from((ip, port))).ok_or_else(|| "the pod has no IP".to_string()),
        }
    };
    match &check.handler {
        Handler::Sleep(d) => {
            std::thread::sleep(*d);
            Ok(())
        }
        Handler::Exec(_) => Err("an exec check runs in the container".into()),
        Handler::Tcp { host, port } => {
            let addr = target(host, *port)?;
            TcpStream::connect_timeout(&addr, check.timeout).map(drop).map_err(|e| format!("dial tcp {addr}: {e}"))
        }
        Handler::Http { https: true, .. } => Err("HTTPS probes are not supported by nodectl yet".into()),
        Handler::Http { host, port, path, headers, .. } => {
            let addr = target(host, *port)?;
            http_get(addr, host.as_deref(), path, headers, check.timeout)
        }
    }
}

/// A GET as the kubelet sends it (User-Agent kube-probe, Connection close); 200-399 passes.
fn http_get(
    addr: SocketAddr,
    host: Option<&str>,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(), String> {
    let url = format!("http://{addr}{path}");
    let deadline = std::time::Instant::now() + timeout;
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("Get \"{url}\": dial tcp {addr}: {e}"))?;
    let left = || deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_millis(1));
    let _ = s.set_write_timeout(Some(left()));
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("host") {
        req.push_str(&format!(
            "Host: {}\r\n",
            host.map_or_else(|| addr.to_string(), |h| format!("{h}:{}", addr.port()))
        ));
    }
    if !has("user-agent") {
        req.push_str("User-Agent: kube-probe/1.32\r\n");
    }
    if !has("accept") {
        req.push_str("Accept: */*\r\n");
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        let _ = s.set_read_timeout(Some(left()));
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("Get \"{url}\": {e} (Client.Timeout exceeded while awaiting headers)")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let code: Option<u16> = line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    match code {
        Some(c) if (200..400).contains(&c) => Ok(()),
        Some(c) => Err(format!("HTTP probe failed with statuscode: {c}")),
        None => Err(format!("Get \"{url}\": malformed HTTP response {:?}", line.lines().next().unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn check(handler: Handler) -> Check {
        Check { handler, timeout: Duration::from_secs(2) }
    }

    fn serve_once(answer: &'static str) -> (u16, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = vec![0u8; 1024];
            let n = s.read(&mut req).unwrap();
            s.write_all(answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        (port, t)
    }

    #[test]
    fn an_http_check_passes_on_2xx_and_3xx_and_sends_the_kubelets_headers() {
        let (port, t) = serve_once("HTTP/1.1 302 Found\r\n\r\n");
        let h = Handler::Http {
            https: false,
            host: None,
            port,
            path: "/healthz".into(),
            headers: vec![("X-Probe".into(), "yes".into())],
        };
        assert_eq!(run_network(&check(h), Some(Ipv4Addr::LOCALHOST)), Ok(()));
        let req = t.join().unwrap();
        assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("User-Agent: kube-probe/1.32\r\n") && req.contains("X-Probe: yes\r\n"), "{req}");

        let (port, _t) = serve_once("HTTP/1.1 500 Internal Server Error\r\n\r\n");
        let h = Handler::Http { https: false, host: None, port, path: "/".into(), headers: vec![] };
        assert_eq!(
            run_network(&check(h), Some(Ipv4Addr::LOCALHOST)),
            Err("HTTP probe failed with statuscode: 500".into())
        );
    }

    #[test]
    fn a_tcp_check_fails_on_a_closed_port_and_passes_on_an_open_one() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(run_network(&check(Handler::Tcp { host: None, port }), Some(Ipv4Addr::LOCALHOST)), Ok(()));
        drop(l);
        let err = run_network(&check(Handler::Tcp { host: None, port }), Some(Ipv4Addr::LOCALHOST)).unwrap_err();
        assert!(err.starts_with(&format!("dial tcp 127.0.0.1:{port}: ")), "{err}");
    }

    #[test]
    fn named_ports_and_defaults_come_from_the_container() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "web", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"port": "web"}},
            "readinessProbe": {"tcpSocket": {"port": "nope"}}
        }))
        .unwrap();
        assert_eq!(
            of_container(&c, Duration::from_secs(30)).unwrap_err(),
            "readinessProbe: the container has no port named \"nope\""
        );
        let mut c = c;
        c.readiness_probe = None;
        let checks = of_container(&c, Duration::from_secs(30)).unwrap();
        let t = checks.timings.get(ProbeKind::Liveness).unwrap();
        assert_eq!((t.period, t.success_threshold, t.failure_threshold), (Duration::from_secs(10), 1, 3));
        assert!(matches!(checks.probe(ProbeKind::Liveness).unwrap().handler, Handler::Http { port: 8080, .. }));
    }
}
