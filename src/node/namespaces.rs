//! Namespaces that outlive every process in them, held by bind mounts of their nsfs files
//! (as `ip netns add` holds network namespaces), so a pod needs no pause process: its
//! containers join the UTS, IPC and network namespaces by path.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use nix::mount::MsFlags;
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
pub fn hold(flags: CloneFlags, targets: &[(&str, &Path)], hostname: Option<&str>) -> io::Result<()> {
    let (mut ready_r, mut ready_w) = std::os::unix::net::UnixStream::pair().map_err(context("socketpair"))?;
    // SAFETY: the caller is single-threaded (the pod runner never starts threads), so the
    // child may run ordinary Rust until it _exits.
    let child = match unsafe { nix::unistd::fork() }.map_err(|e| context("fork")(e.into()))? {
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
        _ => Err(io::Error::other(format!("unshare({flags:?}) in a helper process failed"))),
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

fn bind_all(child: Pid, targets: &[(&str, &Path)]) -> io::Result<()> {
    for (kind, path) in targets {
        fs::File::create(path).map_err(context(&format!("create {}", path.display())))?;
        let source = format!("/proc/{child}/ns/{kind}");
        nix::mount::mount(Some(source.as_str()), *path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| context(&format!("bind {source} onto {}", path.display()))(e.into()))?;
    }
    Ok(())
}

/// An io::Error that says what was being done, keeping the kind of the one it wraps.
fn context(what: &str) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}
