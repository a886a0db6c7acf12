//! Namespaces that outlive every process in them, held by bind mounts of their nsfs files
//! (as `ip netns add` holds network namespaces), so a pod needs no pause process: its
//! containers join the UTS, IPC and network namespaces by path.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};

/// Makes new namespaces of the kinds in `flags` (CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWNET)
/// and bind-mounts each onto its file in `targets` (`uts`, `ipc`, `net` → path). With a
/// UTS namespace, `hostname` is set in it.
///
/// A short-lived child makes them: we are single-threaded (the runtime will fork
/// containers from this process), and unsharing ourselves would move us too.
pub fn hold(flags: CloneFlags, targets: &[(&str, &Path)], hostname: Option<&str>) -> Result<(), String> {
    let (mut ready_r, mut ready_w) = std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    // SAFETY: the caller is single-threaded (the pod runner never starts threads), so the
    // child may run ordinary Rust until it _exits.
    let child = match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(ready_r);
            let ok = nix::sched::unshare(flags).is_ok() && hostname.is_none_or(|h| nix::unistd::sethostname(h).is_ok());
            let _ = ready_w.write_all(if ok { b"1" } else { b"0" });
            // Wait to be killed once the parent has its bind mounts.
            let mut b = [0u8; 1];
            let _ = ready_w.read(&mut b);
            // SAFETY: _exit skips the parent's destructors and atexit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(ready_w);
    let mut b = [0u8; 1];
    let result = match ready_r.read(&mut b) {
        Ok(1) if b[0] == b'1' => bind_all(child, targets),
        _ => Err(format!("unshare({flags:?}) in a helper process failed")),
    };
    let _ = kill(child, Signal::SIGKILL);
    let _ = waitpid(child, None);
    drop(ready_r);
    if result.is_err() {
        for (_, path) in targets {
            // Any namespace file, not only a network one: unmount and unlink.
            let _ = crate::network::remove_netns(path);
        }
    }
    result
}

fn bind_all(child: Pid, targets: &[(&str, &Path)]) -> Result<(), String> {
    for (kind, path) in targets {
        fs::File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
        let source = format!("/proc/{child}/ns/{kind}");
        nix::mount::mount(Some(source.as_str()), *path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| format!("bind {source} onto {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Waits for threads that have been joined to leave /proc/self/task: the runtime refuses
/// to fork while it sees more than one, and a joined thread's task may linger a moment.
pub fn wait_single_threaded() {
    for _ in 0..1000 {
        if fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1) <= 1 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// Unmounts everything mounted at or below `dir` (deepest first), so the directory can be
/// removed. Used for a pod's volumes and namespace files, also after a crash.
pub fn unmount_below(dir: &Path) -> Result<(), String> {
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        match nix::mount::umount2(Path::new(&p), MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(format!("unmount {p}: {e}")),
        }
    }
    Ok(())
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
