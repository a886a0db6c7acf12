//! Bind sources a container's init in a user namespace cannot reach itself. Its root is
//! an unprivileged uid on the host, so a source under a 0700 directory (a bundle made by
//! `mktemp -d`, say) is out of its reach, though the runtime, root on the host, was asked
//! to bind it. As runc's nsexec does, the runtime opens every bind source O_PATH in the
//! init's new mount namespace (so that the mounts the descriptors name are ones the init
//! may clone) and passes them over; the init binds from the descriptor.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::ForkResult;
use oci_spec::runtime::LinuxNamespaceType;

use super::spec::Config;
use super::sync::{Channel, MAX_FDS, Msg};

/// The opened sources, by index in the spec's `mounts`.
#[derive(Default)]
pub struct MountSources {
    fds: HashMap<usize, OwnedFd>,
}

impl MountSources {
    pub fn get(&self, index: usize) -> Option<BorrowedFd<'_>> {
        self.fds.get(&index).map(|f| f.as_fd())
    }
}

/// Whether the init needs the runtime to open its bind sources: it has a user namespace
/// (made or joined) and mounts of its own, and binds something.
pub fn wanted(cfg: &Config) -> bool {
    cfg.namespace(LinuxNamespaceType::User).is_some()
        && cfg.namespace(LinuxNamespaceType::Mount).is_some()
        && cfg.mounts.iter().any(|m| m.is_bind())
}

/// A bind mount's source as the init would resolve it: relative to the bundle.
fn source_path(cfg: &Config, source: Option<&Path>) -> PathBuf {
    let src = source.unwrap_or(Path::new(""));
    if src.is_absolute() { src.to_path_buf() } else { cfg.bundle.join(src) }
}

/// Runtime side: a helper process enters the mount namespace of `init` (the pid that made
/// it), opens each bind source and sends the descriptors to the init over `chan`; returns
/// once the helper is done. A source that cannot be opened is left out: the init then
/// tries it itself and reports the error with the mount's name.
pub fn open_for(init: i32, cfg: &Config, chan: &Channel) -> Result<(), String> {
    let ns = open(format!("/proc/{init}/ns/mnt").as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("open the init's mount namespace: {e}"))?;
    // A fork, not a setns of our own: entering a mount namespace moves the caller's root
    // and working directory, which the runtime still needs. The caller (create) is
    // single-threaded.
    // SAFETY: no other thread exists (create checked), so the child may do anything.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let code = match helper(ns.as_fd(), cfg, chan) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("nodectl-runtime: open bind sources: {e}");
                    1
                }
            };
            // SAFETY: _exit skips the destructors and atexit handlers of the runtime's
            // copy of this process.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(other) => Err(format!("the helper opening bind sources ended with {other:?}")),
            Err(e) => Err(format!("wait for the helper opening bind sources: {e}")),
        },
    }
}

fn helper(ns: BorrowedFd<'_>, cfg: &Config, chan: &Channel) -> Result<(), String> {
    nix::sched::setns(ns, CloneFlags::CLONE_NEWNS).map_err(|e| format!("enter the init's mount namespace: {e}"))?;
    let opened: Vec<(usize, OwnedFd)> = cfg
        .mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| m.is_bind())
        .filter_map(|(i, m)| {
            let path = source_path(cfg, m.source.as_deref());
            open(&path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).ok().map(|fd| (i, fd))
        })
        .collect();
    for chunk in opened.chunks(MAX_FDS) {
        let indexes = chunk.iter().map(|(i, _)| *i).collect();
        let fds: Vec<BorrowedFd<'_>> = chunk.iter().map(|(_, f)| f.as_fd()).collect();
        chan.send_with_fds(&Msg::MountFds { indexes }, &fds).map_err(|e| format!("send: {e}"))?;
    }
    Ok(())
}

/// Init side: asks for the sources and takes them until the runtime says it is done.
pub fn receive(chan: &Channel) -> Result<MountSources, String> {
    chan.send(&Msg::MountSources).map_err(|e| format!("setup channel: {e}"))?;
    let mut got = MountSources::default();
    loop {
        match chan.recv_with_fds().map_err(|e| format!("setup channel: {e}"))? {
            Some((Msg::MountFds { indexes }, fds)) => {
                if indexes.len() != fds.len() {
                    return Err(format!("setup protocol: {} bind sources for {} mounts", fds.len(), indexes.len()));
                }
                got.fds.extend(indexes.into_iter().zip(fds));
            }
            Some((Msg::MountSourcesDone, _)) => return Ok(got),
            Some((other, _)) => return Err(format!("setup protocol: expected bind sources, got {other:?}")),
            None => return Err(super::init::RUNTIME_GONE.into()),
        }
    }
}
