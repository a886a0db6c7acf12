//! `make bench`: the node daemon. On a state root, bridge and CIDR of its own it starts
//! `nodectl daemon` and measures:
//!
//! - the daemon's resident memory (VmRSS, and Pss from smaps_rollup) idle right after it
//!   serves, and again with 100 running pods (busybox `sleep 3600`);
//! - each of the 100 pods' monitors' Rss and Pss, min / p50 / max (Pss is what a monitor
//!   costs on its own: the monitors share our sealed binary's pages);
//! - the time from `nodectl run --detach FILE` to the container's process running, p50 and
//!   p99 over 100 pods, next to the foreground `nodectl run FILE` measured the same way in
//!   the same run (alternating, each on a root, bridge and CIDR of its own). "Running" is
//!   the container's first command writing a line into a FIFO that the bench holds open (a
//!   hostPath volume): no polling, the bench wakes the moment the process runs. Also when
//!   `run --detach` returns (the daemon has admitted the pod).
//!
//! Then every pod is deleted, the daemon stopped, and the bench checks that nothing is left
//! (pod directories, mounts, veths, addresses, cgroups, monitors), as tests/daemon.rs does.
//!
//! Not a test: it asserts nothing about time or memory.

#[path = "../common/mod.rs"]
mod common;

use common::daemon::Node;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PODS: usize = 100;
/// A prefix for the pods' names, so their cgroups can be found afterwards.
const PREFIX: &str = "dbench";

fn pct<T: Ord + Copy>(v: &mut [T], p: f64) -> T {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// A field of /proc/PID/status or /proc/PID/smaps_rollup, in kB (or a plain count).
fn proc_field(pid: u32, file: &str, name: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim_start_matches(':').split_whitespace().next()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// (Rss, Pss, Anonymous) in kB. Rss and Pss count the pages of our binary a process has
/// touched, which vary with the page cache from run to run; Anonymous is its own memory.
fn memory(pid: u32) -> (u64, u64, u64) {
    (
        proc_field(pid, "status", "VmRSS"),
        proc_field(pid, "smaps_rollup", "Pss"),
        proc_field(pid, "smaps_rollup", "Anonymous"),
    )
}

/// Cgroups under ours whose names start with `prefix`, at any depth.
fn cgroups_named(prefix: &str) -> Vec<PathBuf> {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let pids = own.lines().find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_string())).unwrap_or_default();
    let mut found = Vec::new();
    let mut todo = vec![PathBuf::from(format!("/sys/fs/cgroup/pids{pids}"))];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    found.push(e.path());
                }
                todo.push(e.path());
            }
        }
    }
    found
}

/// A FIFO the bench holds open for reading and writing (so the container's open never
/// blocks and the bench never reads an end of file).
fn fifo(path: &Path) -> fs::File {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: c is a valid NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o622) }, 0, "mkfifo {}", path.display());
    fs::OpenOptions::new().read(true).write(true).open(path).unwrap()
}

/// A pod whose container writes a line into /marks/NAME first, then runs `then`.
fn manifest(marks: &Path, name: &str, then: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  \
         terminationGracePeriodSeconds: 0\n  volumes:\n  - {{name: marks, hostPath: {{path: {}}}}}\n  \
         containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: Never\n    \
         command: [sh, -c, 'echo up > /marks/{name}{then}']\n    volumeMounts:\n    - {{name: marks, mountPath: /marks}}\n",
        marks.display()
    )
}

/// Starts `cmd` and returns (until it exits, until the container wrote its line, the child).
fn time_start(mut cmd: Command, mark: &mut fs::File, wait_exit: bool) -> (Duration, Duration, Child) {
    let t = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut exited = Duration::ZERO;
    if wait_exit {
        let status = child.wait().unwrap();
        exited = t.elapsed();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        assert!(status.success(), "nodectl run --detach: {err}");
    }
    // A container that never runs must not hang the bench.
    let mut pfd = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(mark), events: libc::POLLIN, revents: 0 };
    // SAFETY: pfd is one valid pollfd that lives across the call.
    let ready = unsafe { libc::poll(&mut pfd, 1, 60_000) };
    assert_eq!(ready, 1, "the container did not run within 60 s");
    let mut line = [0u8; 3];
    mark.read_exact(&mut line).unwrap();
    (exited, t.elapsed(), child)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let marks = work.path().join("marks");
    fs::create_dir(&marks).unwrap();
    let fg = Node::new("ndb", 240).with_busybox();
    let mut node = Node::new("ndb", 240).with_busybox();

    // The daemon, idle once it serves.
    node.start(&[]);
    let mut daemon = node.daemon.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let idle = memory(daemon.id());
    let idle_threads = proc_field(daemon.id(), "status", "Threads");

    // Warm-up: the bridges are made once, as on any node.
    let warm = |root: &Node, detach: bool, name: &str| {
        let mut f = fifo(&marks.join(name));
        let file = work.path().join(format!("{name}.yaml"));
        fs::write(&file, manifest(&marks, name, "")).unwrap();
        let mut cmd = root.command();
        cmd.arg("run");
        if detach {
            cmd.arg("--detach");
        }
        cmd.arg(&file);
        let (_, _, child) = time_start(cmd, &mut f, detach);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        if detach {
            root.ok(&["delete", "pod", name]);
        }
    };
    warm(&fg, false, "warm-fg");
    warm(&node, true, "warm-node");

    // Foreground and detached, alternating, so both see the same machine.
    let (mut foreground, mut detached, mut admitted) = (Vec::new(), Vec::new(), Vec::new());
    let mut names = Vec::new();
    for i in 0..PODS {
        let name = format!("{PREFIX}-fg-{i}");
        let mut f = fifo(&marks.join(&name));
        let file = work.path().join(format!("{name}.yaml"));
        fs::write(&file, manifest(&marks, &name, "")).unwrap();
        let mut cmd = fg.command();
        cmd.arg("run").arg(&file);
        let (_, started, child) = time_start(cmd, &mut f, false);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "nodectl run: {}", String::from_utf8_lossy(&out.stderr));
        foreground.push(started);

        let name = format!("{PREFIX}-{i}");
        let mut f = fifo(&marks.join(&name));
        let file = work.path().join(format!("{name}.yaml"));
        fs::write(&file, manifest(&marks, &name, "; exec sleep 3600")).unwrap();
        let mut cmd = node.command();
        cmd.args(["run", "--detach"]).arg(&file);
        let (exited, started, _) = time_start(cmd, &mut f, true);
        admitted.push(exited);
        detached.push(started);
        names.push(name);
    }

    // Memory with 100 running pods, once every one is Running and the daemon has settled.
    let end = Instant::now() + Duration::from_secs(120);
    let uids: Vec<String> = loop {
        let list: Value = serde_json::from_str(&node.ok(&["get", "pods", "-o", "json"])).unwrap();
        let items = list["items"].as_array().unwrap();
        let running: Vec<String> = items
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
            .collect();
        if running.len() == PODS {
            break running;
        }
        assert!(Instant::now() < end, "{} of {PODS} pods running", running.len());
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(2));
    let busy = memory(daemon.id());
    let busy_threads = proc_field(daemon.id(), "status", "Threads");
    let monitors: Vec<(u64, u64, u64)> = uids
        .iter()
        .map(|uid| {
            let rec: Value =
                serde_json::from_slice(&fs::read(node.root().join("pods").join(uid).join("monitor.json")).unwrap())
                    .unwrap();
            memory(rec["pid"].as_u64().unwrap() as u32)
        })
        .collect();
    let mut rss: Vec<u64> = monitors.iter().map(|m| m.0).collect();
    let mut pss: Vec<u64> = monitors.iter().map(|m| m.1).collect();
    let mut anon: Vec<u64> = monitors.iter().map(|m| m.2).collect();

    // Everything goes: the pods (from several clients at once), then the daemon.
    std::thread::scope(|s| {
        let node = &node;
        for chunk in names.chunks(10) {
            s.spawn(move || {
                for name in chunk {
                    node.ok(&["delete", "pod", name]);
                }
            });
        }
    });
    // SAFETY: kill(2) on our own child's pid, which we have not waited for yet.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    // A daemon that does not stop must not hang `make bench`: said, then killed.
    let end = Instant::now() + Duration::from_secs(20);
    let stopped = loop {
        if let Some(s) = daemon.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > end {
            let _ = daemon.kill();
            let _ = daemon.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    fg.assert_clean();
    node.assert_clean();
    let left = cgroups_named(&format!("nodectl-pod-{PREFIX}"));
    assert!(left.is_empty(), "cgroups left: {left:?}");

    println!("nodectl daemon, {PODS} pods (busybox sleep 3600, own root, bridge and CIDR), MiB:");
    let row = |what: &str, m: (u64, u64, u64), threads: u64, aim: &str| {
        println!("  {what:<34} {:6.1}   {:6.2}   {:6.2}   {threads:>7}    {aim}", mib(m.0), mib(m.1), mib(m.2));
    };
    println!("  {:<34} {:>6}   {:>6}   {:>6}   {:>7}    aim", "", "RSS", "Pss", "Anon", "threads");
    row("the daemon idle, right after start", idle, idle_threads, "under 15 MB");
    row(&format!("the daemon with {PODS} running pods"), busy, busy_threads, "");
    for (what, p) in [("min", 0.0), ("p50", 0.5), ("max", 1.0)] {
        let m = (pct(&mut rss, p), pct(&mut pss, p), pct(&mut anon, p));
        row(&format!("a pod's monitor, {what} of {PODS}"), m, 1, if p == 0.5 { "under 1 MB" } else { "" });
    }
    println!("until the container's process runs (it writes into a FIFO on a hostPath), {PODS} pods, alternating:");
    let fg50 = pct(&mut foreground, 0.5);
    println!(
        "  nodectl run FILE (foreground)        p50 {:7.2} ms   p99 {:7.2} ms",
        ms(fg50),
        ms(pct(&mut foreground, 0.99))
    );
    let d50 = pct(&mut detached, 0.5);
    println!(
        "  nodectl run --detach FILE            p50 {:7.2} ms   p99 {:7.2} ms   (aim: p50 within 5 ms of the foreground's: {:+.2} ms)",
        ms(d50),
        ms(pct(&mut detached, 0.99)),
        ms(d50) - ms(fg50)
    );
    println!(
        "  run --detach returns (pod admitted)  p50 {:7.2} ms   p99 {:7.2} ms",
        ms(pct(&mut admitted, 0.5)),
        ms(pct(&mut admitted, 0.99))
    );
    match stopped {
        Some(s) if s.success() => {}
        Some(s) => println!("(the daemon exited with {s})"),
        None => println!("(the daemon did not stop within 20 s of SIGTERM: killed)"),
    }
}
