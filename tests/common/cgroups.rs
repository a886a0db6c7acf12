//! Cgroups beneath the test's own, for the engines (podman, containerd) that are told to
//! put their containers there, and their removal afterwards.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

/// An absolute cgroup path of our own, named after `tag`, beneath the deepest of our
/// cgroups (on a hybrid host, memory's), which is below ours in every other hierarchy
/// too, so the one path is ours everywhere. A new one each call: tests run in parallel
/// and each removes its own tree.
pub fn parent_beneath_ours(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let deepest = fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2).map(str::to_string))
        .max_by_key(|p| p.len())
        .unwrap_or_else(|| "/".into());
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    format!("{}/nodectl-{tag}-{}-{n}", deepest.trim_end_matches('/'), std::process::id())
}

/// Removes the cgroup `parent` (an absolute path) and all beneath it in every hierarchy,
/// children first; a pure cgroup2 host has it directly under /sys/fs/cgroup.
pub fn remove_everywhere(parent: &str) {
    let relative = parent.trim_start_matches('/');
    for entry in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        remove_tree(&entry.path().join(relative));
    }
    remove_tree(&Path::new("/sys/fs/cgroup").join(relative));
}

fn remove_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&e.path());
        }
    }
    let _ = fs::remove_dir(dir);
}
