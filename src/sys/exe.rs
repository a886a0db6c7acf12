//! Our own executable: running it from a sealed, read-only mount (CVE-2019-5736) and
//! executing a file by fd.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use super::check;
use super::mount::{MountAttr, mount_setattr, open_tree_clone};

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
