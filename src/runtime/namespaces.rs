//! Entering namespaces: joining existing ones by path (user first, so the others are
//! joined with its privileges) and creating new ones, and the id maps of a new user
//! namespace, which only a process outside it may write.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::sched::{CloneFlags, setns, unshare};
use oci_spec::runtime::LinuxNamespaceType;

use super::spec::{IdMap, Namespace};

pub fn clone_flag(kind: LinuxNamespaceType) -> CloneFlags {
    CloneFlags::from_bits_truncate(kind as i32)
}

/// The /proc/PID/ns file name of a namespace kind.
pub fn proc_name(kind: LinuxNamespaceType) -> &'static str {
    match kind {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Opens every namespace to join before joining any: once we are in another mount
/// namespace the paths may no longer resolve.
pub fn open_joins(list: &[Namespace]) -> Result<Vec<(LinuxNamespaceType, OwnedFd)>, String> {
    let mut out = Vec::new();
    for ns in list {
        if let Some(path) = &ns.path {
            let f = fs::File::open(path)
                .map_err(|e| format!("open {} namespace {}: {e}", proc_name(ns.kind), path.display()))?;
            out.push((ns.kind, OwnedFd::from(f)));
        }
    }
    // The user namespace first: joining it gives the capabilities to join the rest.
    out.sort_by_key(|(k, _)| *k != LinuxNamespaceType::User);
    Ok(out)
}

pub fn join<'a>(fds: impl IntoIterator<Item = &'a (LinuxNamespaceType, OwnedFd)>) -> Result<(), String> {
    for (kind, fd) in fds {
        setns(fd.as_fd(), clone_flag(*kind)).map_err(|e| format!("join {} namespace: {e}", proc_name(*kind)))?;
    }
    Ok(())
}

/// Creates the new namespaces in `kinds` (not user: that one comes first, on its own).
pub fn unshare_all(kinds: &[LinuxNamespaceType]) -> Result<(), String> {
    let flags = kinds.iter().fold(CloneFlags::empty(), |f, k| f | clone_flag(*k));
    if flags.is_empty() {
        return Ok(());
    }
    unshare(flags)
        .map_err(|e| format!("unshare namespaces {:?}: {e}", kinds.iter().map(|k| proc_name(*k)).collect::<Vec<_>>()))
}

pub fn unshare_user() -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("unshare user namespace: {e}"))
}

/// Our pid namespace for children, put back on drop. While it lives, the processes we
/// fork start in the container's pid namespace, which spares the init a fork of its own.
pub struct PidForChildren {
    own: OwnedFd,
}

/// Makes the children we fork from now on start in the pid namespace `join` (or a new one).
/// Only the children are affected (pid_for_children); we stay where we are.
pub fn pid_for_children(join: Option<&OwnedFd>) -> Result<PidForChildren, String> {
    let own = OwnedFd::from(fs::File::open("/proc/self/ns/pid").map_err(|e| format!("open our pid namespace: {e}"))?);
    match join {
        Some(fd) => setns(fd.as_fd(), CloneFlags::CLONE_NEWPID).map_err(|e| format!("join pid namespace: {e}"))?,
        None => unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare pid namespace: {e}"))?,
    }
    Ok(PidForChildren { own })
}

impl Drop for PidForChildren {
    fn drop(&mut self) {
        // Our own namespace is always one we may go back to; hooks and later forks must
        // not land in the container's.
        if let Err(e) = setns(self.own.as_fd(), CloneFlags::CLONE_NEWPID) {
            tracing::error!("restore our pid namespace for children: {e}");
        }
    }
}

/// Writes /proc/PID/{uid,gid}_map for a process that has just made a user namespace.
pub fn write_id_maps(pid: i32, uids: &[IdMap], gids: &[IdMap]) -> Result<(), String> {
    let fmt =
        |maps: &[IdMap]| maps.iter().map(|m| format!("{} {} {}\n", m.container, m.host, m.size)).collect::<String>();
    for (file, maps) in [("uid_map", uids), ("gid_map", gids)] {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, fmt(maps)).map_err(|e| format!("write {path}: {e}"))?;
    }
    Ok(())
}

/// Whether our own namespace of this kind is the same as the one at `path`.
pub fn same_as_ours(kind: LinuxNamespaceType, other: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ours = fs::metadata(format!("/proc/self/ns/{}", proc_name(kind)));
    let theirs = fs::metadata(other);
    matches!((ours, theirs), (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev())
}
