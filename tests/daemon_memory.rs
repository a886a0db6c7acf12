//! What the node daemon and its monitors keep resident (`make bench` measures it; these
//! tests keep the cheap wins from coming undone), for real, as root: a daemon on a state
//! root, bridge and pod CIDR of its own, its pods deleted and checked gone at the end.

mod common;

use common::daemon::Node;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A daemon on a state root of its own, with the busybox image.
fn node() -> Node {
    let mut node = Node::new("ndm", 200).with_busybox();
    node.start(&[]);
    node
}

/// Starts `n` pods running `sleep` and waits until all run; their uids.
fn sleepers(node: &Node, n: usize) -> Vec<String> {
    for i in 0..n {
        let p = node.file(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: sleeper-{i}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  \
             containers:\n  - {{name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}}\n"
        ));
        node.ok(&["run", "--detach", &p]);
    }
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let list: Value = serde_json::from_str(&node.ok(&["get", "pods", "-o", "json"])).unwrap();
        let running: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["status"]["containerStatuses"][0]["state"]["running"].is_object())
            .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
            .collect();
        if running.len() == n {
            return running;
        }
        assert!(Instant::now() < end, "{} of {n} pods running", running.len());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Deletes every pod and checks nothing of them is left.
fn delete_all_and_check(node: &Node, n: usize) {
    for i in 0..n {
        node.ok(&["delete", "pod", &format!("sleeper-{i}")]);
    }
    node.assert_clean();
}

/// The mappings of a process: (start, end, permissions, path).
fn maps(pid: u32) -> Vec<(u64, u64, String, String)> {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (a, b) = f[0].split_once('-').unwrap();
            let path = f.get(5).copied().unwrap_or("").to_string();
            (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap(), f[1].to_string(), path)
        })
        .collect()
}

/// glibc's arenas beyond the main one: anonymous heaps of 64 MiB reserved at 64 MiB
/// boundaries (the part in use read-write, the rest no-access).
fn extra_malloc_arenas(pid: u32) -> usize {
    const HEAP: u64 = 64 << 20;
    let m = maps(pid);
    m.iter()
        .enumerate()
        .filter(|(i, (start, end, perms, path))| {
            let reserved = match m.get(i + 1) {
                Some((s, e, p, path)) if *s == *end && p == "---p" && path.is_empty() => *e,
                _ => *end,
            };
            start % HEAP == 0 && reserved - start == HEAP && perms == "rw-p" && path.is_empty()
        })
        .count()
}

/// The resident size of a process's [heap], in KiB.
fn heap_rss_kib(pid: u32) -> u64 {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut in_heap = false;
    for l in smaps.lines() {
        // A mapping's header starts with its addresses; its fields with `Name:`.
        if !l.split_whitespace().next().is_some_and(|w| w.ends_with(':')) {
            in_heap = l.ends_with("[heap]");
        } else if in_heap && let Some(v) = l.strip_prefix("Rss:") {
            return v.trim().trim_end_matches("kB").trim().parse().unwrap();
        }
    }
    0
}

fn monitor_pid(root: &Path, uid: &str) -> u32 {
    let p: PathBuf = root.join("pods").join(uid).join("monitor.json");
    let rec: Value = serde_json::from_slice(&fs::read(p).unwrap()).unwrap();
    rec["pid"].as_u64().unwrap() as u32
}

/// Each pod has a thread in the daemon; with glibc's default every one of them got a
/// malloc arena of its own (15 of 300-900 KiB with 100 pods). The daemon uses one.
#[test]
fn the_daemons_pod_threads_share_one_malloc_arena() {
    let node = node();
    sleepers(&node, 6);
    let arenas = extra_malloc_arenas(node.daemon.as_ref().unwrap().id());
    assert_eq!(arenas, 0, "the daemon has {arenas} malloc arenas besides the main one");
    delete_all_and_check(&node, 6);
}

/// A monitor lives as long as its pod: the heap that making the sandbox and the
/// container's bundle left free goes back to the kernel once the container runs
/// (about 370 KiB resident before, 150 KiB after).
#[test]
fn a_monitor_gives_its_freed_heap_back_once_its_container_runs() {
    let node = node();
    let uid = sleepers(&node, 1).remove(0);
    let monitor = monitor_pid(node.root(), &uid);
    // It trims once it has answered the start, which may be a moment after the pod runs.
    let end = Instant::now() + Duration::from_secs(5);
    let mut heap = heap_rss_kib(monitor);
    while heap >= 256 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        heap = heap_rss_kib(monitor);
    }
    assert!(heap > 0 && heap < 256, "the monitor keeps {heap} KiB of heap resident");
    delete_all_and_check(&node, 1);
}
