//! etcd members on loopback (Debian's etcd-server, /usr/bin/etcd) for the tests that keep
//! the control plane in etcd.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::server::free_port;

/// One etcd member: its ports, data dir and process.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// What members serve their clients with over TLS (https:// client URLs; peers keep http).
pub struct ServingTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signs the clients' certificates, which every client must show
    /// (`--client-cert-auth`).
    pub client_ca: PathBuf,
}

/// etcd members on loopback, each with its own data dir under a temp dir; all are killed
/// when this is dropped, a failed test too.
pub struct Cluster {
    members: Vec<Member>,
    initial: String,
    tls: Option<ServingTls>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    pub fn start(size: usize) -> Cluster {
        Cluster::start_with(size, None)
    }

    /// Members that serve their clients over TLS and ask each for a certificate.
    pub fn start_tls(size: usize, tls: ServingTls) -> Cluster {
        Cluster::start_with(size, Some(tls))
    }

    fn start_with(size: usize, tls: Option<ServingTls>) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                dir: tmp.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial =
            members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect::<Vec<_>>().join(",");
        let mut c = Cluster { members, initial, tls, _tmp: tmp };
        for i in 0..size {
            c.spawn(i);
        }
        for i in 0..size {
            c.wait_listening(i);
        }
        c
    }

    pub fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        std::fs::create_dir_all(&m.dir).unwrap();
        let log = std::fs::File::create(m.dir.with_extension("log")).unwrap();
        let client = format!("{}://127.0.0.1:{}", self.scheme(), m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let mut etcd = Command::new("etcd");
        if let Some(tls) = &self.tls {
            etcd.arg("--cert-file").arg(&tls.cert).arg("--key-file").arg(&tls.key);
            etcd.arg("--trusted-ca-file").arg(&tls.client_ca).arg("--client-cert-auth");
        }
        // Should the test process die without unwinding, its members die with it.
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
        unsafe {
            etcd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = etcd
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args([
                "--initial-cluster",
                &self.initial,
                "--initial-cluster-token",
                &format!("t{}", self.members[0].peer),
            ])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd is installed (rootfs-tools/install-deps.sh)");
        self.members[i].child = Some(child);
    }

    pub fn wait_listening(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let m = &mut self.members[i];
        while TcpStream::connect(("127.0.0.1", m.client)).is_err() {
            if let Some(Ok(Some(status))) = m.child.as_mut().map(Child::try_wait) {
                panic!(
                    "etcd {} exited: {status}\n{}",
                    m.name,
                    std::fs::read_to_string(m.dir.with_extension("log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "etcd {} did not come up", m.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client)).collect()
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL)
                .unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends `signal` to a running member (SIGSTOP: it hangs, connections stay open).
    pub fn signal(&self, i: usize, signal: nix::sys::signal::Signal) {
        let child = self.members[i].child.as_ref().expect("the member runs");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    }

    /// Starts a killed member again on its data dir and ports.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_listening(i);
    }

    /// The member that leads now, as the members say (asked with etcd-client directly, on
    /// a thread of its own: the tests that ask run inside a runtime already).
    pub fn leader(&self) -> usize {
        let endpoints = self.endpoints();
        let ask = move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    for (i, ep) in endpoints.iter().enumerate() {
                        if let Ok(mut c) = etcd_client::Client::connect([ep], None).await
                            && let Ok(s) = c.status().await
                            && s.leader() != 0
                            && s.header().is_some_and(|h| h.member_id() == s.leader())
                        {
                            return i;
                        }
                    }
                    assert!(Instant::now() < deadline, "no leader elected");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        std::thread::spawn(ask).join().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            // A stopped member dies of SIGKILL all the same; continued, it leaves no zombie state.
            if self.members[i].child.is_some() {
                self.signal(i, nix::sys::signal::Signal::SIGCONT);
            }
            self.kill(i);
        }
    }
}
