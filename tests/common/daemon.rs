//! A node daemon for tests: a state root of its own (a temporary directory, or a small
//! tmpfs), a bridge and a pod CIDR of its own, its log in a file, and, when dropped, the
//! removal of whatever a failed test left behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A tmpfs of `size` mounted on a temporary directory; unmounted when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "mount tmpfs: {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

enum Disk {
    Directory(tempfile::TempDir),
    Tmpfs(Tmpfs),
}

/// A state root and the daemon serving it (started by [`Node::start`]).
pub struct Node {
    disk: Disk,
    /// The daemon's log and the tests' manifests, off the root (which a test may fill).
    scratch: tempfile::TempDir,
    /// This node's number among the test binary's nodes (for ports and names of its own).
    pub index: u32,
    pub bridge: String,
    pub cidr: String,
    pub daemon: Option<Child>,
    /// The flags of the last start, for [`Node::restart`].
    flags: Vec<String>,
    /// The network namespace the daemon runs in (a path under /run/netns), if not ours.
    pub netns: Option<PathBuf>,
}

impl Node {
    /// A root on a temporary directory. Each test file passes a bridge prefix and a base
    /// for the CIDR's third octet of its own, so that nodes of files run at once never meet.
    pub fn new(bridge_prefix: &str, subnet_base: u32) -> Node {
        Node::on(Disk::Directory(tempfile::tempdir().unwrap()), bridge_prefix, subnet_base)
    }

    /// A root on a tmpfs of `size` (a disk a test can fill).
    pub fn on_tmpfs(size: &str, bridge_prefix: &str, subnet_base: u32) -> Node {
        Node::on(Disk::Tmpfs(Tmpfs::new(size)), bridge_prefix, subnet_base)
    }

    fn on(disk: Disk, bridge_prefix: &str, subnet_base: u32) -> Node {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        Node {
            disk,
            scratch: tempfile::tempdir().unwrap(),
            index: n,
            bridge: format!("{bridge_prefix}{}x{n}", pid % 100_000),
            cidr: format!("10.{}.{}.0/24", 150 + pid % 100, subnet_base + n),
            daemon: None,
            flags: Vec::new(),
            netns: None,
        }
    }

    /// A joined node that takes its pod range from its Node (no NODECTL_POD_CIDR); set
    /// `cidr` to the range it got for the teardown's bridge removal.
    pub fn with_pod_cidr_from_server(mut self) -> Node {
        self.cidr.clear();
        self
    }

    /// Imports the busybox test image as busybox:latest; returns the node, for chaining.
    pub fn with_busybox(self) -> Node {
        self.import("busybox", "busybox:latest");
        self
    }

    pub fn import(&self, image: &str, name: &str) {
        self.ok(&["image", "import", super::images().join(image).to_str().unwrap(), "--name", name]);
    }

    pub fn root(&self) -> &Path {
        match &self.disk {
            Disk::Directory(d) => d.path(),
            Disk::Tmpfs(t) => t.path(),
        }
    }

    /// A directory of the test's own beside the root (not on its disk).
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.root().join("nodectl.sock")
    }

    /// What the daemon has logged so far (all its starts).
    pub fn log(&self) -> String {
        fs::read_to_string(self.scratch.path().join("daemon.log")).unwrap_or_default()
    }

    /// `nodectl --root ROOT` with this node's bridge and CIDR (as `nodectl run` reads them).
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nodectl"));
        c.arg("--root").arg(self.root()).env("NODECTL_BRIDGE", &self.bridge);
        if !self.cidr.is_empty() {
            c.env("NODECTL_POD_CIDR", &self.cidr);
        }
        c.stdin(Stdio::null());
        if let Some(path) = &self.netns {
            let ns = fs::File::open(path).unwrap();
            // SAFETY: between fork and exec the child only calls setns(2), which is
            // async-signal-safe, on a descriptor opened before the fork.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut c, move || {
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
                });
            }
        }
        c
    }

    /// Starts `nodectl daemon` with a quick restart backoff and `flags`; returns once it
    /// serves its socket.
    pub fn start(&mut self, flags: &[&str]) {
        self.flags = flags.iter().map(|f| f.to_string()).collect();
        self.restart();
    }

    /// Starts the daemon again with the flags of the last start.
    pub fn restart(&mut self) {
        let _ = fs::remove_file(self.socket());
        let log =
            fs::OpenOptions::new().create(true).append(true).open(self.scratch.path().join("daemon.log")).unwrap();
        let child = self
            .command()
            .args(["daemon", "--restart-backoff", "0.2"])
            .args(&self.flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let end = Instant::now() + Duration::from_secs(30);
        while !self.socket().exists() {
            assert!(Instant::now() < end, "the daemon did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the daemon again with the last start's flags and `extra`, which stay for
    /// later restarts.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.flags.extend(extra.iter().map(|f| f.to_string()));
        self.restart();
    }

    /// kill -9 of the daemon (its pods' monitors and containers live on).
    pub fn kill_daemon(&mut self) {
        let mut d = self.daemon.take().expect("a running daemon");
        d.kill().unwrap();
        d.wait().unwrap();
    }

    /// Whether the daemon is still running.
    pub fn daemon_alive(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(|d| d.try_wait().unwrap().is_none())
    }

    pub fn nodectl(&self, args: &[&str]) -> Output {
        super::nodectl(self.root(), args)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.nodectl(args);
        assert!(
            out.status.success(),
            "nodectl {args:?} failed: {}\n{}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Writes a manifest off the root; returns its path.
    pub fn file(&self, yaml: &str) -> String {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let p = self.scratch.path().join(format!("pod-{n}.yaml"));
        fs::write(&p, yaml).unwrap();
        p.to_string_lossy().into_owned()
    }

    pub fn pod(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["get", "pod", name, "-o", "json"])).unwrap()
    }

    /// Waits until the pod satisfies `want`; returns it.
    pub fn wait_for(&self, name: &str, want: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let p = self.pod(name);
            if want(&p) {
                return p;
            }
            assert!(Instant::now() < end, "pod {name} never got there: {p:#}\ndaemon log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pod's log once it has `lines` lines (a running container may not have written yet).
    pub fn log_of(&self, args: &[&str], lines: usize) -> String {
        let end = Instant::now() + Duration::from_secs(30);
        let mut all = vec!["logs"];
        all.extend_from_slice(args);
        loop {
            let out = self.ok(&all);
            if out.lines().count() >= lines || Instant::now() > end {
                return out;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The names of the images in the store.
    pub fn images(&self) -> Vec<String> {
        self.ok(&["image", "ls"]).lines().skip(1).map(|l| l.split_whitespace().next().unwrap().to_string()).collect()
    }

    /// Nothing of any pod left: directories, mounts, veths, addresses, monitors.
    pub fn assert_clean(&self) {
        let pods: Vec<_> = fs::read_dir(self.root().join("pods"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(pods.is_empty(), "pods left: {pods:?}");
        let root = self.root().to_string_lossy().into_owned();
        let mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            // The root's own tmpfs is the test's, not a pod's.
            .filter(|l| l.contains(&root) && !l.contains(" - tmpfs tmpfs "))
            .map(String::from)
            .collect();
        assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
        let links = Command::new("ip").args(["-o", "link", "show", "master", &self.bridge]).output().unwrap();
        assert!(String::from_utf8_lossy(&links.stdout).trim().is_empty(), "veths left");
        let pool = self.root().join("network").join(&self.bridge).join("ipam.json");
        if let Ok(text) = fs::read_to_string(&pool) {
            let pods = &serde_json::from_str::<Value>(&text).unwrap()["pods"];
            assert!(pods.as_object().is_none_or(|p| p.is_empty()), "addresses still allocated: {pods}");
        }
        // A monitor exits just after it removed its pod's last trace.
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let monitors = Command::new("pgrep").args(["-f", &format!("{root} monitor")]).output().unwrap();
            if String::from_utf8_lossy(&monitors.stdout).trim().is_empty() {
                break;
            }
            assert!(Instant::now() < end, "monitors left: {}", String::from_utf8_lossy(&monitors.stdout));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the daemon (SIGKILL), then removes what its pods left and the bridge.
    pub fn teardown(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        // What a failed test left: removed from the records, as gc would.
        for e in fs::read_dir(self.root().join("pods")).into_iter().flatten().flatten() {
            if let Ok(b) = fs::read(e.path().join("pod.json"))
                && let Ok(rec) = serde_json::from_slice::<nodectl::node::sandbox::PodRecord>(&b)
            {
                let _ = nodectl::node::sandbox::teardown(self.root(), &rec);
            }
        }
        if let Ok(cfg) = nodectl::network::NetConfig::new(&self.bridge, &self.cidr, self.root().join("network")) {
            let _ = nodectl::network::remove_bridge(&cfg);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.teardown();
        // The tmpfs, if any, is unmounted after this (a field).
    }
}
