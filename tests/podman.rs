//! Debian's podman drives nodectl-runtime as its OCI runtime (`podman --runtime …`): run,
//! exec, logs, stop, rm and an `-it` terminal, with the busybox test image loaded from
//! its docker-archive (no registry). Each podman here has its own storage, run root and
//! temp dir, the cgroupfs manager and a cgroup parent beneath our own cgroup, so nothing
//! touches the host's podman state or the hierarchies' roots.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// One private podman: storage, run root and temp dir in a temp dir; nodectl-runtime
/// is a link to our binary named so it acts as the runtime CLI.
struct Podman {
    dir: tempfile::TempDir,
    /// Absolute cgroup path (the same in every hierarchy) under which podman puts its
    /// containers: our own deepest cgroup plus a directory of ours.
    cgroup_parent: String,
    /// Whether /run/nodectl-runtime existed before: podman passes the runtime no --root
    /// (nor its environment), so containers' state lives in the runtime's default root,
    /// as runc's does in /run/runc; removed after if we made it and it is empty.
    state_root_existed: bool,
}

const STATE_ROOT: &str = "/run/nodectl-runtime";

impl Podman {
    /// None (after printing why) when podman is not installed.
    fn new() -> Option<Podman> {
        if Command::new("podman").arg("--version").output().is_err() {
            eprintln!("skipped: podman is not installed (rootfs-tools/install-deps.sh installs it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nodectl"), dir.path().join("nodectl-runtime")).unwrap();
        fs::write(
            dir.path().join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{0}/runroot\"\ngraphroot = \"{0}/root\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let cgroup_parent = common::cgroups::parent_beneath_ours("podman");
        // Looked at once, before any test here has run a container: the tests run in parallel.
        static EXISTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let state_root_existed = *EXISTED.get_or_init(|| Path::new(STATE_ROOT).exists());
        let p = Podman { dir, cgroup_parent, state_root_existed };
        let load = p.ok(&["load", "-q", "-i", common::images().join("busybox.docker.tar").to_str().unwrap()]);
        assert!(load.contains("busybox"), "{load}");
        Some(p)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .arg("--runtime")
            .arg(d.join("nodectl-runtime"))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn out(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.out(args);
        assert!(o.status.success(), "podman {args:?}: {}\n{}", o.status, String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `run` options every container here needs: no podman networking, rlimits within
    /// this machine's hard limits (we lack CAP_SYS_RESOURCE), our cgroup parent.
    fn run_opts(&self) -> Vec<String> {
        ["--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--cgroup-parent"]
            .iter()
            .map(|s| s.to_string())
            .chain([self.cgroup_parent.clone()])
            .collect()
    }

    fn run_args<'a>(&'a self, opts: &'a [String], pre: &[&'a str], post: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["run"];
        v.extend(pre);
        v.extend(opts.iter().map(String::as_str));
        v.push("busybox");
        v.extend(post);
        v
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.out(&["rm", "-a", "-f", "-t", "0"]);
        let _ = self.out(&["rmi", "-a", "-f"]);
        // Anything podman left mounted under its dirs (shm, layers), deepest first.
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
        if !self.state_root_existed {
            // Only when empty: another test's containers may be in it.
            let _ = fs::remove_dir(STATE_ROOT);
        }
    }
}

/// `podman run --rm` prints the container's output and passes on its exit code.
#[test]
fn podman_runs_busybox_with_nodectl_runtime() {
    let Some(p) = Podman::new() else { return };
    let opts = p.run_opts();
    let out = p.ok(&p.run_args(&opts, &["--rm"], &["sh", "-c", "echo hello-$((40+2)); id -u; cat /proc/self/cgroup"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "hello-42", "{out}");
    assert_eq!(lines[1], "0", "{out}");
    let o = p.out(&p.run_args(&opts, &["--rm"], &["sh", "-c", "exit 7"]));
    assert_eq!(o.status.code(), Some(7), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(p.ok(&["ps", "-a", "-q"]).trim(), "", "--rm left a container");
}

/// A detached container: exec into it, read its logs, stop and remove it.
#[test]
fn podman_exec_logs_stop_rm() {
    let Some(p) = Podman::new() else { return };
    let opts = p.run_opts();
    // A shell that exits on SIGTERM (pid 1 ignores signals it has no handler for).
    let id = p.ok(&p.run_args(
        &opts,
        &["-d", "--name", "c1"],
        &["sh", "-c", "trap 'echo got-term; exit 0' TERM; echo started; while true; do sleep 0.1; done"],
    ));
    assert!(!id.trim().is_empty());
    let exec = p.ok(&["exec", "c1", "sh", "-c", "echo from-exec; cat /proc/1/cmdline | tr '\\0' ' '"]);
    assert!(exec.starts_with("from-exec\n"), "{exec}");
    assert!(exec.contains("trap"), "exec must see the container's pid 1: {exec}");
    let o = p.out(&["exec", "c1", "sh", "-c", "exit 5"]);
    assert_eq!(o.status.code(), Some(5));
    // logs: the container's stdout, through conmon.
    let mut logs = String::new();
    for _ in 0..200 {
        logs = p.ok(&["logs", "c1"]);
        if logs.contains("started") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(logs.contains("started"), "{logs}");
    p.ok(&["stop", "-t", "20", "c1"]);
    let state = p.ok(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "c1"]);
    assert_eq!(state.trim(), "exited 0", "SIGTERM should end it by its trap");
    assert!(p.ok(&["logs", "c1"]).contains("got-term"));
    p.ok(&["rm", "c1"]);
    assert_eq!(p.ok(&["ps", "-a", "-q"]).trim(), "");
}

/// `podman run -it`: the runtime gets a console socket and hands podman the pty master.
/// script(1) gives podman a terminal of its own.
#[test]
fn podman_run_it_gives_a_terminal() {
    let Some(p) = Podman::new() else { return };
    let opts = p.run_opts();
    let c = p.cmd(&p.run_args(&opts, &["--rm", "-it"], &["sh"]));
    let mut cmdline = vec![c.get_program().to_string_lossy().into_owned()];
    cmdline.extend(c.get_args().map(|a| a.to_string_lossy().into_owned()));
    let storage = p.dir.path().join("storage.conf");
    let mut child = Command::new("script")
        .env("CONTAINERS_STORAGE_CONF", &storage)
        .args(["-qec", &cmdline.join(" "), "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"tty; echo sum-$((40+2)); exit 3\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.lines().any(|l| l.starts_with("/dev/pts/")), "{text}");
    assert!(text.lines().any(|l| l == "sum-42"), "{text}");
}
