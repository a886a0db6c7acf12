//! The new mount API (fsopen, fsconfig, fsmount, open_tree, move_mount, mount_setattr):
//! mounts made detached and attached by fd, so that a path swapped for a symlink between
//! a check and a mount cannot redirect it (the CVE-2021-30465 class). Also unmounting a
//! whole subtree, and which filesystem an fd is on.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::mount::MntFlags;

use super::{check, mountinfo};

/// A detached copy of the mount tree at `path` (OPEN_TREE_CLONE), recursively if
/// `recursive`: a bind mount that is not yet attached anywhere.
pub fn open_tree_clone(
    dir: Option<BorrowedFd<'_>>,
    path: &CStr,
    recursive: bool,
    empty_path: bool,
) -> io::Result<OwnedFd> {
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    if empty_path {
        flags |= libc::AT_EMPTY_PATH as u32;
    }
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: path is a valid NUL-terminated string; the returned fd is new and owned by us.
    let fd = check(unsafe { libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) })?;
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches the detached mount `tree` onto the directory or file `target` (both by fd).
pub fn move_mount_to_fd(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: both paths are the empty string literal; the fds are borrowed and stay open.
    check(unsafe {
        libc::syscall(libc::SYS_move_mount, tree.as_raw_fd(), c"".as_ptr(), target.as_raw_fd(), c"".as_ptr(), flags)
    })?;
    Ok(())
}

/// Attaches the detached mount `tree` at the path `target`, for targets that are ours
/// (the image store's directories), not a container's.
pub fn move_mount_to_path(tree: BorrowedFd<'_>, target: &CStr) -> io::Result<()> {
    // SAFETY: "" with F_EMPTY_PATH names the tree fd; target is NUL-terminated and
    // outlives the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// Mount attributes (MOUNT_ATTR_*) to set and clear on a mount given by fd.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MountAttr {
    pub set: u64,
    pub clear: u64,
    pub propagation: u64,
}

pub fn mount_setattr(mount: BorrowedFd<'_>, recursive: bool, attr: MountAttr) -> io::Result<()> {
    let mut a: libc::mount_attr =
        libc::mount_attr { attr_set: attr.set, attr_clr: attr.clear, propagation: attr.propagation, userns_fd: 0 };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `a` is a valid mount_attr whose size we pass; the path is an empty literal.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &mut a as *mut libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })?;
    Ok(())
}

/// A filesystem context (fsopen): configured key by key, then created and mounted
/// detached. Each step is its own call so that callers can name the one that failed.
pub struct FsContext(OwnedFd);

impl FsContext {
    pub fn open(fstype: &str) -> io::Result<FsContext> {
        let fstype = cstring(fstype)?;
        // SAFETY: fstype is NUL-terminated; the fd returned is ours.
        let fd = check(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), libc::FSOPEN_CLOEXEC) })?;
        // SAFETY: the kernel just returned this fd to us.
        Ok(FsContext(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    fn config(&self, cmd: libc::c_uint, key: Option<&CStr>, value: Option<&CStr>) -> io::Result<()> {
        let k = key.map_or(std::ptr::null(), |k| k.as_ptr());
        let v = value.map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: key and value are NUL-terminated strings or null, as the command needs.
        check(unsafe { libc::syscall(libc::SYS_fsconfig, self.0.as_raw_fd(), cmd, k, v, 0) })?;
        Ok(())
    }

    /// `key=value` (FSCONFIG_SET_STRING).
    pub fn set_string(&self, key: &str, value: &CStr) -> io::Result<()> {
        self.config(libc::FSCONFIG_SET_STRING, Some(&cstring(key)?), Some(value))
    }

    /// A bare `key` such as `ro` (FSCONFIG_SET_FLAG).
    pub fn set_flag(&self, key: &str) -> io::Result<()> {
        self.config(libc::FSCONFIG_SET_FLAG, Some(&cstring(key)?), None)
    }

    /// Makes the superblock (FSCONFIG_CMD_CREATE).
    pub fn create(&self) -> io::Result<()> {
        self.config(libc::FSCONFIG_CMD_CREATE, None, None)
    }

    /// A detached mount of the created filesystem, with MOUNT_ATTR_* `attrs`.
    pub fn mount(&self, attrs: u64) -> io::Result<OwnedFd> {
        // SAFETY: plain syscall on our fs context fd; the fd returned is ours.
        let m = check(unsafe { libc::syscall(libc::SYS_fsmount, self.0.as_raw_fd(), libc::FSMOUNT_CLOEXEC, attrs) })?;
        // SAFETY: the kernel just returned this fd to us.
        Ok(unsafe { OwnedFd::from_raw_fd(m as RawFd) })
    }
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A new, detached filesystem mount: `options` is the comma-separated data of mount(8)
/// (`size=64k,mode=755`), `attrs` MOUNT_ATTR_* flags.
pub fn new_mount(fstype: &str, source: Option<&str>, options: &str, attrs: u64) -> io::Result<OwnedFd> {
    let fs = FsContext::open(fstype)?;
    if let Some(src) = source {
        fs.set_string("source", &cstring(src)?)?;
    }
    for opt in options.split(',').filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some((k, v)) => fs.set_string(k, &cstring(v)?),
            None => fs.set_flag(opt),
        }
        .map_err(|e| io::Error::new(e.kind(), format!("option {opt:?}: {e}")))?;
    }
    fs.create()?;
    fs.mount(attrs)
}

/// fstatfs(2)'s f_type: which filesystem an fd is on (PROC_SUPER_MAGIC, …).
pub fn fs_type(fd: BorrowedFd<'_>) -> io::Result<i64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: st is a valid out-pointer of the right type.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) } as libc::c_long)?;
    // SAFETY: fstatfs succeeded, so st is initialised.
    Ok(unsafe { st.assume_init() }.f_type)
}

/// Lazily unmounts `path`; one that is not mounted (EINVAL) or gone (ENOENT) is fine,
/// so cleanup paths can call this unconditionally.
pub fn unmount_detach(path: &Path) -> io::Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Unmounts everything mounted at or below `dir` (deepest first), so that the directory
/// can be removed. Every mount is tried; the first failure is returned.
pub fn unmount_below(dir: &Path) -> io::Result<()> {
    let mut points: Vec<_> =
        mountinfo::read()?.into_iter().map(|m| m.mount_point).filter(|p| p.starts_with(dir)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points.dedup();
    let mut first = None;
    for p in points {
        if let Err(e) = unmount_detach(&p) {
            first.get_or_insert_with(|| io::Error::new(e.kind(), format!("unmount {}: {e}", p.display())));
        }
    }
    first.map_or(Ok(()), Err)
}
