//! Cgroup drivers on the real kernel, through whichever version this host has (hybrid v1
//! on the build machines; pure v2 is proven in the VM test). Each test makes its own
//! parent beneath this process's cgroup and removes it.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use nodectl::runtime::cgroups::{self, Cgroup, Resources};

static N: AtomicUsize = AtomicUsize::new(0);

/// A container-like cgroup under a parent of its own; both removed on drop.
struct TestCgroup {
    cg: Box<dyn Cgroup>,
    parent: String,
}

impl TestCgroup {
    fn new() -> TestCgroup {
        let parent = format!("nodectl-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        let cg = cgroups::open("c1", Some(&parent)).unwrap();
        cg.create().unwrap();
        TestCgroup { cg, parent }
    }

    /// Starts `script` under /bin/sh inside the cgroup: the shell waits on stdin until it
    /// has been moved in, so not one instruction runs outside.
    fn run(&self, script: &str) -> Child {
        let mut child = Command::new("/bin/sh")
            .args(["-c", &format!("read _go; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.cg.add_process(child.id() as i32).unwrap();
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        child
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for pid in self.cg.processes().unwrap_or_default() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.cg.freeze(false);
        self.cg.destroy().unwrap();
        cgroups::remove_parent(&self.parent).unwrap();
    }
}

#[test]
fn a_memory_limit_ends_in_an_oom_kill_that_is_counted() {
    let t = TestCgroup::new();
    t.cg.apply(&Resources { memory_limit: Some(20 << 20), memory_swap: Some(20 << 20), ..Default::default() }).unwrap();
    // `yes | head` really allocates (busybox and dash drop NULs from `$(...)`).
    let out = t.run("a=$(yes | head -c 67108864); echo survived").wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("survived"), "64 MB fit in a 20 MB limit");
    let stats = t.cg.stats().unwrap();
    assert!(stats.oom_kills >= 1, "no OOM kill counted: {stats:?}");
    assert_eq!(stats.memory_limit, Some(20 << 20));
    assert!(stats.memory_peak <= 20 << 20 && stats.memory_peak > 1 << 20, "{stats:?}");
}

#[test]
fn a_pids_limit_stops_forks() {
    let t = TestCgroup::new();
    t.cg.apply(&Resources { pids_limit: Some(4), ..Default::default() }).unwrap();
    let out = t
        .run("n=0; for i in 1 2 3 4 5 6 7 8; do (sleep 1) 2>/dev/null & done; wait; echo done")
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("fork"), "forks past the limit did not fail: {err}");
}

#[test]
fn cpu_and_cpuset_settings_take_and_usage_is_counted() {
    let t = TestCgroup::new();
    t.cg.apply(&Resources {
        cpu_quota: Some(20_000),
        cpu_period: Some(100_000),
        cpu_shares: Some(512),
        cpuset_cpus: Some("0".into()),
        ..Default::default()
    })
    .unwrap();
    let out = t.run("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo counted").wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "counted");
    let stats = t.cg.stats().unwrap();
    assert!(stats.cpu_usage_ns > 0, "{stats:?}");
    match cgroups::detect().unwrap() {
        cgroups::Hierarchy::Legacy { mounts, .. } => {
            let own = cgroups::own_cgroups().unwrap();
            let dir = |c: &str| {
                let mount = &mounts.iter().find(|(m, _)| m == c).unwrap().1;
                let mine = &own.iter().find(|(o, _)| o == c).unwrap().1;
                mount.join(mine.strip_prefix("/").unwrap()).join(t.cg.path())
            };
            let read = |c: &str, f: &str| std::fs::read_to_string(dir(c).join(f)).unwrap().trim().to_string();
            assert_eq!(read("cpu", "cpu.cfs_quota_us"), "20000");
            assert_eq!(read("cpu", "cpu.shares"), "512");
            assert_eq!(read("cpuset", "cpuset.cpus"), "0");
        }
        cgroups::Hierarchy::Unified { .. } => {}
    }
}

#[test]
fn freeze_and_thaw() {
    let t = TestCgroup::new();
    let child = t.run("sleep 0.3; echo awake");
    // Bounded wait for the shell to have forked sleep.
    for _ in 0..1000 {
        if t.cg.processes().unwrap().len() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    t.cg.freeze(true).unwrap();
    assert_eq!(t.cg.processes().unwrap().len(), 2, "sh and sleep, frozen in place");
    t.cg.freeze(false).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "awake");
}

#[test]
fn hostile_names_are_refused() {
    for bad in ["../escape", "a/../../b", ""] {
        assert!(cgroups::open(bad, None).is_err(), "{bad:?}");
        assert!(cgroups::open("x", Some(bad)).is_err(), "parent {bad:?}");
    }
}

/// A container cgroup no record names any more (its creation was cut short: the pod's
/// monitor was killed) must not keep the pod's cgroup parent from being removed.
#[test]
fn removing_a_parent_removes_an_empty_container_cgroup_left_below_it() {
    let parent = format!("nodectl-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    cgroups::open("orphan", Some(&parent)).unwrap().create().unwrap();
    // Before, the parent's rmdir met its child and failed with EBUSY.
    cgroups::remove_parent(&parent).unwrap();
    // Gone: making and removing it again finds nothing in the way.
    cgroups::remove_parent(&parent).unwrap();
}
