//! Network namespaces held by a bind mount, as `ip netns add` makes them: a pod's
//! namespace outlives any process, so pods need no pause container.
//!
//! Namespace changes happen only in short-lived threads of our own (`setns` and
//! `unshare(CLONE_NEWNET)` affect the calling thread alone), so the caller's threads
//! never change namespace, whatever runtime they belong to.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};

use super::{Error, Result};

fn io_err(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io { op, path: path.to_path_buf(), source }
}

/// Creates a new network namespace held by a bind mount at `path`. The file must not
/// exist yet (an existing one may already hold a namespace in use by a pod).
pub fn create_netns(path: &Path) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_err("creating the network namespace file", path, e))?;
    let made = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            // The thread's own namespace; /proc/self would name the main thread's.
            mount(Some("/proc/thread-self/ns/net"), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    });
    if let Err(e) = made {
        let _ = std::fs::remove_file(path);
        return Err(io_err("creating a network namespace at", path, e));
    }
    Ok(())
}

/// Unmounts and removes a namespace made by `create_netns`. A missing file or a file
/// that is no longer a mount point is not an error, so this can run after a crash.
pub fn remove_netns(path: &Path) -> Result<()> {
    // MNT_DETACH: a process that still has the file open (a dying pod's helper)
    // must not make the removal fail; the namespace goes with its last user.
    crate::sys::mount::unmount_detach(path).map_err(|e| io_err("unmounting the network namespace", path, e))?;
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing the network namespace file", path, e)),
    }
}

/// Opens the namespace file at `path`; the kernel refuses it at `setns` or
/// IFLA_NET_NS_FD if it is not a network namespace.
pub(crate) fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| io_err("opening the network namespace", path, e))
}

/// Runs `f` in a thread that has joined the network namespace `ns`. Sockets made
/// there stay in that namespace after the thread ends.
pub(crate) fn run_in<T: Send>(ns: &File, path: &Path, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| io_err("entering the network namespace", path, e.into()))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io_err("running in the network namespace", path, io::Error::other("thread panicked"))))
    })
}

/// Runs `f` inside the network namespace held at `path` (in a helper thread), e.g. to
/// open a listening socket or connect from inside a pod's namespace.
pub fn run_in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T> {
    let ns = open(path)?;
    run_in(&ns, path, f)
}
