//! Debian's containerd runs a container through its runc shim (io.containerd.runc.v2)
//! with nodectl-runtime as the shim's binary (`ctr run --runc-binary …`): run with
//! output and exit code, exec, kill. The containerd is private (root, state, socket and
//! config in a temp dir, no CRI plugin), its containers' cgroups beneath our own, and it
//! is stopped and everything cleaned up at the end.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const NS: &str = "nodectltest";
const IMAGE: &str = "docker.io/library/busybox:latest";

/// Directories containerd 1.6's shim and ctr make under /run/containerd whatever their
/// config says (shim sockets in s/, FIFOs in fifo/): removed after if we made them.
const RUN_DIRS: [&str; 3] = ["/run/containerd/s", "/run/containerd/fifo", "/run/containerd"];

struct Containerd {
    dir: tempfile::TempDir,
    daemon: Child,
    cgroup_parent: String,
    /// Which of RUN_DIRS were there before we started.
    existed: Vec<bool>,
}

impl Containerd {
    /// None (after printing why) when containerd is not installed.
    fn start() -> Option<Containerd> {
        if Command::new("containerd").arg("--version").output().is_err()
            || Command::new("ctr").arg("--version").output().is_err()
        {
            eprintln!("skipped: containerd is not installed (rootfs-tools/install-deps.sh installs it)");
            return None;
        }
        // Looked at once, before any test here has started a containerd: they run in parallel.
        static EXISTED: std::sync::OnceLock<Vec<bool>> = std::sync::OnceLock::new();
        let existed = EXISTED.get_or_init(|| RUN_DIRS.iter().map(|d| Path::new(d).exists()).collect()).clone();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nodectl"), d.join("nodectl-runtime")).unwrap();
        // No CRI (we are not a kubelet's containerd) nor snapshotters this host lacks.
        let config = format!(
            r#"version = 2
root = "{0}/root"
state = "{0}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{0}/c.sock"
[ttrpc]
  address = "{0}/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"#,
            d.display()
        );
        fs::write(d.join("config.toml"), config).unwrap();
        let log = fs::File::create(d.join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let cgroup_parent = common::cgroups::parent_beneath_ours("containerd");
        let c = Containerd { dir, daemon, cgroup_parent, existed };
        // Wait for the socket: containerd serves once it has booted.
        for _ in 0..500 {
            if c.out(&["version"]).status.success() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        c.ok(&["images", "import", common::images().join("busybox.docker.tar").to_str().unwrap()]);
        Some(c)
    }

    fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(self.dir.path().join("c.sock")).args(["-n", NS]).args(args).stdin(Stdio::null());
        c
    }

    fn out(&self, args: &[&str]) -> Output {
        self.ctr(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.out(args);
        assert!(o.status.success(), "ctr {args:?}: {}\n{}", o.status, String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn runtime(&self) -> PathBuf {
        self.dir.path().join("nodectl-runtime")
    }

    /// `ctr run` arguments: our runtime binary and root, FIFOs in our dir, a cgroup
    /// beneath our own.
    fn run_args(&self, id: &str) -> Vec<String> {
        let d = self.dir.path();
        vec![
            "run".into(),
            "--runc-binary".into(),
            self.runtime().display().to_string(),
            "--runc-root".into(),
            d.join("runc").display().to_string(),
            "--fifo-dir".into(),
            d.join("fifo").display().to_string(),
            "--cgroup".into(),
            format!("{}/{id}", self.cgroup_parent),
        ]
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for t in self.ok_lines(&["task", "ls", "-q"]) {
            let _ = self.out(&["task", "kill", "-s", "SIGKILL", &t]);
            let _ = self.out(&["task", "rm", "-f", &t]);
        }
        for c in self.ok_lines(&["containers", "ls", "-q"]) {
            let _ = self.out(&["containers", "rm", &c]);
        }
        let _ = self.out(&["images", "rm", IMAGE]);
        // SAFETY: kill(2) on the daemon we spawned and have not reaped yet.
        unsafe { libc::kill(self.daemon.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.daemon.wait();
        let base = self.dir.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&base))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
        }
        common::cgroups::remove_everywhere(&self.cgroup_parent);
        for (d, existed) in RUN_DIRS.iter().zip(&self.existed) {
            if !existed {
                // Only when empty: another containerd may be using it by now.
                let _ = fs::remove_dir(d);
            }
        }
    }
}

impl Containerd {
    fn ok_lines(&self, args: &[&str]) -> Vec<String> {
        let o = self.out(args);
        String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
    }
}

/// `ctr run --rm`: output through the shim's FIFOs, exit code passed on.
#[test]
fn containerd_runs_busybox_through_the_runc_shim() {
    let Some(c) = Containerd::start() else { return };
    let mut args = c.run_args("t1");
    args.extend(["--rm".into(), IMAGE.into(), "t1".into(), "sh".into(), "-c".into()]);
    args.push("echo hello-$((40+2)); id -u".into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.ok(&a);
    assert_eq!(out.replace('\r', ""), "hello-42\n0\n");

    let mut args = c.run_args("t2");
    args.extend(["--rm".into(), IMAGE.into(), "t2".into(), "sh".into(), "-c".into(), "exit 7".into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(c.out(&a).status.code(), Some(7));
    assert!(c.ok_lines(&["containers", "ls", "-q"]).is_empty(), "--rm left a container");
}

/// A detached task: exec into it, kill it with SIGTERM (its trap exits 0), remove it.
#[test]
fn containerd_exec_and_kill() {
    let Some(c) = Containerd::start() else { return };
    let mut args = c.run_args("t3");
    args.extend(["-d".into(), IMAGE.into(), "t3".into(), "sh".into(), "-c".into()]);
    args.push("trap 'exit 0' TERM; while true; do sleep 0.1; done".into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    c.ok(&a);
    let exec = c.ok(&["task", "exec", "--exec-id", "e1", "t3", "sh", "-c", "echo from-exec; cat /proc/1/cmdline"]);
    assert!(exec.starts_with("from-exec\n") && exec.contains("trap"), "{exec}");
    let o = c.out(&["task", "exec", "--exec-id", "e2", "t3", "sh", "-c", "exit 4"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(c.ok(&["task", "ls"]).contains("RUNNING"));
    c.ok(&["task", "kill", "-s", "SIGTERM", "t3"]);
    // The task's exit status, once it has one (`ctr task ls` shows STOPPED).
    let mut listed = String::new();
    for _ in 0..500 {
        listed = c.ok(&["task", "ls"]);
        if listed.contains("STOPPED") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(listed.contains("STOPPED"), "{listed}");
    c.ok(&["task", "rm", "t3"]);
    c.ok(&["containers", "rm", "t3"]);
    assert!(c.ok_lines(&["task", "ls", "-q"]).is_empty());
}
