//! The syscalls the runtime needs that nix does not wrap: the new mount API (open_tree,
//! move_mount, mount_setattr), pidfds, and a few ioctls and prctls. Each is a thin, safe
//! function over one syscall; everything else in the runtime calls these, not libc.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

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

/// A pidfd for `pid`: signals sent through it cannot reach a recycled pid.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; the fd returned is ours.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: a null siginfo is allowed and means "as kill(2) would send it".
    check(unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal, std::ptr::null::<libc::siginfo_t>(), 0)
    })?;
    Ok(())
}

/// fstatfs(2)'s f_type: which filesystem an fd is on (PROC_SUPER_MAGIC, …).
pub fn fs_type(fd: BorrowedFd<'_>) -> io::Result<i64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: st is a valid out-pointer of the right type.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) } as libc::c_long)?;
    // SAFETY: fstatfs succeeded, so st is initialised.
    Ok(unsafe { st.assume_init() }.f_type)
}

/// prctl(2) with one integer argument.
fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(option, arg, 0, 0, 0) } as libc::c_long)?;
    Ok(())
}

/// Makes this process a subreaper, so orphaned descendants (a container's init after
/// its intermediate parent exits) become our children and we can wait for them.
pub fn set_child_subreaper() -> io::Result<()> {
    prctl(libc::PR_SET_CHILD_SUBREAPER, 1)
}

/// Asks for `signal` when our parent dies (a container init whose `create` was killed).
pub fn set_parent_death_signal(signal: i32) -> io::Result<()> {
    prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong)
}

pub fn set_no_new_privs() -> io::Result<()> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
}

pub fn set_keep_caps(keep: bool) -> io::Result<()> {
    prctl(libc::PR_SET_KEEPCAPS, keep as libc::c_ulong)
}

/// Makes the terminal on `fd` our controlling terminal (after setsid).
pub fn set_controlling_tty(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } as libc::c_long)?;
    Ok(())
}

/// The number of the pty slave behind a /dev/ptmx master.
pub fn pty_number(master: BorrowedFd<'_>) -> io::Result<u32> {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int to the pointer we pass.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } as libc::c_long)?;
    Ok(n)
}

pub fn unlock_pty(master: BorrowedFd<'_>) -> io::Result<()> {
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer we pass.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) } as libc::c_long)?;
    Ok(())
}

/// execveat(fd, "", argv, envp, AT_EMPTY_PATH): runs the file behind `fd`. Returns only on
/// error.
pub fn execveat_fd(fd: BorrowedFd<'_>, argv: &[std::ffi::CString], envp: &[std::ffi::CString]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: argv and envp are NULL-terminated arrays of pointers into CStrings that
    // outlive the call; on success the call does not return.
    unsafe {
        libc::syscall(libc::SYS_execveat, fd.as_raw_fd(), c"".as_ptr(), a.as_ptr(), e.as_ptr(), libc::AT_EMPTY_PATH)
    };
    io::Error::last_os_error()
}

/// openat2(2): `path` beneath `dir` under the RESOLVE_* rules in `resolve`.
pub fn openat2(dir: BorrowedFd<'_>, path: &CStr, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain data; all-zero is its documented empty value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    loop {
        // SAFETY: `how` is a valid open_how whose size we pass; path is NUL-terminated.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        match check(rc) {
            // SAFETY: the kernel just returned this fd to us.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) || e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A new, detached filesystem mount made with fsopen/fsconfig/fsmount: `options` is the
/// comma-separated data of mount(8) (`size=64k,mode=755`), `attrs` MOUNT_ATTR_* flags.
pub fn new_mount(fstype: &str, source: Option<&str>, options: &str, attrs: u64) -> io::Result<OwnedFd> {
    let c = |s: &str| std::ffi::CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let fstype_c = c(fstype)?;
    // SAFETY: fstype is NUL-terminated; the fd returned is ours.
    let fs = check(unsafe { libc::syscall(libc::SYS_fsopen, fstype_c.as_ptr(), libc::FSOPEN_CLOEXEC) })?;
    // SAFETY: the kernel just returned this fd to us.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    let config = |cmd: libc::c_uint, key: Option<&CStr>, value: Option<&CStr>| -> io::Result<()> {
        let k = key.map_or(std::ptr::null(), |k| k.as_ptr());
        let v = value.map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: key and value are NUL-terminated strings or null, as the command needs.
        check(unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, k, v, 0) })?;
        Ok(())
    };
    if let Some(src) = source {
        config(libc::FSCONFIG_SET_STRING, Some(c"source"), Some(&c(src)?))?;
    }
    for opt in options.split(',').filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some((k, v)) => config(libc::FSCONFIG_SET_STRING, Some(&c(k)?), Some(&c(v)?)),
            None => config(libc::FSCONFIG_SET_FLAG, Some(&c(opt)?), None),
        }
        .map_err(|e| io::Error::new(e.kind(), format!("option {opt:?}: {e}")))?;
    }
    config(libc::FSCONFIG_CMD_CREATE, None, None)?;
    // SAFETY: plain syscall on our fs context fd; the fd returned is ours.
    let m = check(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), libc::FSMOUNT_CLOEXEC, attrs) })?;
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(m as RawFd) })
}

/// Whether the file we run from sits on a read-only mount.
pub fn exe_is_sealed() -> io::Result<bool> {
    let exe = std::fs::File::open("/proc/self/exe")?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: st is a valid out-pointer of the right type.
    check(unsafe { libc::fstatvfs(exe.as_raw_fd(), st.as_mut_ptr()) } as libc::c_long)?;
    // SAFETY: fstatvfs succeeded, so st is initialised.
    Ok(unsafe { st.assume_init() }.f_flag & libc::ST_RDONLY != 0)
}

/// CVE-2019-5736: a process inside a container can reach our binary through
/// /proc/PID/exe of any of our processes that joins it, and write it once we exit. So
/// before we create or join a container we re-execute ourselves from a private,
/// read-only bind mount of our own binary (a detached mount no one else can see or
/// remount): /proc/PID/exe then leads to a file that cannot be opened for writing.
/// Costs one execve, no copy. Returns only on error; does nothing if already sealed.
pub fn reexec_sealed() -> io::Result<()> {
    if exe_is_sealed()? {
        return Ok(());
    }
    let tree = open_tree_clone(None, c"/proc/self/exe", false, false)?;
    mount_setattr(
        tree.as_fd(),
        false,
        MountAttr {
            set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
            clear: 0,
            propagation: 0,
        },
    )?;
    use std::os::unix::ffi::OsStrExt;
    let argv: Vec<std::ffi::CString> =
        std::env::args_os().map(|a| std::ffi::CString::new(a.as_bytes()).unwrap_or_default()).collect();
    let envp: Vec<std::ffi::CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            std::ffi::CString::new(kv).unwrap_or_default()
        })
        .collect();
    Err(execveat_fd(tree.as_fd(), &argv, &envp))
}
