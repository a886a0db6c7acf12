//! openat2(2): paths resolved under the kernel's RESOLVE_* rules, the one way the
//! unpacker, the runtime's mounts and the pods' subPaths stay inside a root.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub use libc::{RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_NO_XDEV};

use super::check;

/// openat2(2): `path` beneath `dir` under the RESOLVE_* rules in `resolve`, always
/// O_CLOEXEC. EAGAIN (a concurrent rename raced the lookup) and EINTR are retried.
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

/// Opens `name` beneath `dir` for reading under the RESOLVE_* rules in `resolve`, and only
/// if it is a regular file: a FIFO would block a reader for ever and a device such as
/// /dev/zero never ends. The open itself does not block (O_NONBLOCK, cleared after the
/// check). Anything else is an InvalidData error saying what it is.
pub fn open_regular(dir: BorrowedFd<'_>, name: &str, resolve: u64) -> io::Result<std::fs::File> {
    let c =
        std::ffi::CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a file name"))?;
    let file = std::fs::File::from(openat2(dir, &c, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY, resolve)?);
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a regular file ({})", if kind.is_dir() { "a directory" } else { "a special file" }),
        ));
    }
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()))?;
    Ok(file)
}
