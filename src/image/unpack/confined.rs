//! File operations confined to one directory tree.
//!
//! Every path is resolved by openat2(2) with RESOLVE_IN_ROOT: the kernel treats the target
//! as `/`, so `..`, absolute symlinks and relative symlinks that climb all stay inside it,
//! even if the tree changes between two calls. Only the last component of an entry is then
//! touched, with *at calls that never follow it. This is the whole defence against hostile
//! layers (CVE-2018-15664 and the many tar path-traversal bugs before it).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// openat2 on `dir` with `how`; the fd it returns is owned by the caller.
use crate::sys::resolve::openat2;

/// The directory tree every operation is confined to.
pub struct Root {
    fd: OwnedFd,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let c = cstring(path.as_os_str().as_bytes())?;
        // SAFETY: `c` is NUL-terminated; the fd returned is owned below.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: open just returned this fd to us.
        Ok(Root { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens directory `rel` (relative, already free of `..`), resolving every symlink on the
    /// way inside the root. An empty `rel` is the root itself.
    pub fn open_dir(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let path = if rel.is_empty() { cstring(b".")? } else { cstring(rel)? };
        openat2(self.fd(), &path, libc::O_DIRECTORY | libc::O_PATH, libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS)
    }
}

/// Directory-relative operations on the final component only; none follows a symlink there.
pub struct Dir<'a>(pub BorrowedFd<'a>);

impl Dir<'_> {
    fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    pub fn lstat(&self, name: &CStr) -> io::Result<libc::stat> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: name is NUL-terminated and st points to writable memory of the right size.
        check(unsafe { libc::fstatat(self.raw(), name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) })?;
        // SAFETY: fstatat succeeded, so it filled st.
        Ok(unsafe { st.assume_init() })
    }

    pub fn mkdir(&self, name: &CStr, mode: u32) -> io::Result<()> {
        // SAFETY: name is NUL-terminated; the dirfd is valid for the call.
        check(unsafe { libc::mkdirat(self.raw(), name.as_ptr(), mode as libc::mode_t) })
    }

    pub fn mknod(&self, name: &CStr, mode: u32, dev: libc::dev_t) -> io::Result<()> {
        // SAFETY: as for mkdir.
        check(unsafe { libc::mknodat(self.raw(), name.as_ptr(), mode as libc::mode_t, dev) })
    }

    pub fn symlink(&self, target: &CStr, name: &CStr) -> io::Result<()> {
        // SAFETY: both strings are NUL-terminated; the dirfd is valid for the call.
        check(unsafe { libc::symlinkat(target.as_ptr(), self.raw(), name.as_ptr()) })
    }

    /// A hard link to `src_name` in `src` (the link itself if it is a symlink: flags 0).
    pub fn link_from(&self, src: &Dir<'_>, src_name: &CStr, name: &CStr) -> io::Result<()> {
        // SAFETY: both dirfds are valid and both names NUL-terminated.
        check(unsafe { libc::linkat(src.raw(), src_name.as_ptr(), self.raw(), name.as_ptr(), 0) })
    }

    pub fn create_file(&self, name: &CStr, mode: u32) -> io::Result<std::fs::File> {
        let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: name is NUL-terminated; the fd returned is owned by the File below.
        let fd = unsafe { libc::openat(self.raw(), name.as_ptr(), flags, mode as libc::c_uint) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: openat just returned this fd to us.
        Ok(unsafe { std::fs::File::from_raw_fd(fd) })
    }

    /// Opens subdirectory `name` for reading, refusing a symlink.
    pub fn open_subdir(&self, name: &CStr) -> io::Result<OwnedFd> {
        let flags = libc::O_DIRECTORY | libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: name is NUL-terminated; the fd returned is owned below.
        let fd = unsafe { libc::openat(self.raw(), name.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: openat just returned this fd to us.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn chown(&self, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
        // SAFETY: name is NUL-terminated; AT_SYMLINK_NOFOLLOW changes a symlink itself.
        check(unsafe { libc::fchownat(self.raw(), name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
    }

    pub fn set_times(&self, name: &CStr, mtime: i64) -> io::Result<()> {
        let ts = libc::timespec { tv_sec: mtime as libc::time_t, tv_nsec: 0 };
        let times = [ts, ts];
        // SAFETY: name is NUL-terminated and `times` holds the two timespecs utimensat reads.
        check(unsafe { libc::utimensat(self.raw(), name.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
    }

    pub fn unlink(&self, name: &CStr, dir: bool) -> io::Result<()> {
        let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: name is NUL-terminated; unlinkat never follows the final component.
        check(unsafe { libc::unlinkat(self.raw(), name.as_ptr(), flags) })
    }

    /// Sets an xattr on `name` without following it: through the dirfd's /proc entry, which
    /// names this directory itself, then the final component with lsetxattr.
    pub fn set_xattr(&self, name: &CStr, key: &CStr, value: &[u8]) -> io::Result<()> {
        let path = proc_path(self.raw(), name)?;
        // SAFETY: path and key are NUL-terminated; value is a valid slice for its length.
        check(unsafe { libc::lsetxattr(path.as_ptr(), key.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
    }

    /// Removes `name` and, if it is a directory, everything below it, never following a
    /// symlink.
    pub fn remove_all(&self, name: &CStr) -> io::Result<()> {
        match self.unlink(name, false) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) || e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(e),
        }
        let sub = self.open_subdir(name)?;
        Dir(sub.as_fd()).clear(|_| true)?;
        self.unlink(name, true)
    }

    /// Removes, recursively, every entry for whose name `remove` answers true.
    pub fn clear(&self, mut remove: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        for name in self.names()? {
            if remove(name.as_bytes()) {
                self.remove_all(&name)?;
            }
        }
        Ok(())
    }

    /// The names in this directory, without `.` and `..`.
    pub fn names(&self) -> io::Result<Vec<CString>> {
        let dot = cstring(b".")?;
        // SAFETY: "." is NUL-terminated; the new fd is owned by the DIR stream below.
        let fd =
            unsafe { libc::openat(self.raw(), dot.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a directory fd we own; fdopendir takes it over (closedir closes it).
        let dir = unsafe { libc::fdopendir(fd) };
        if dir.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so fd is still ours to close.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        let mut out = Vec::new();
        loop {
            // SAFETY: dir is a valid DIR stream until closedir below.
            let ent = unsafe { libc::readdir64(dir) };
            if ent.is_null() {
                break;
            }
            // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                out.push(name.to_owned());
            }
        }
        // SAFETY: dir came from fdopendir and is closed exactly once.
        unsafe { libc::closedir(dir) };
        Ok(out)
    }
}

fn proc_path(fd: RawFd, name: &CStr) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{fd}/").into_bytes();
    p.extend_from_slice(name.to_bytes());
    cstring(&p)
}

/// Sets an xattr on an open file.
pub fn fset_xattr(fd: BorrowedFd<'_>, key: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: key is NUL-terminated and value a valid slice; fd is open for the call.
    check(unsafe { libc::fsetxattr(fd.as_raw_fd(), key.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

/// Sets owner and mode of an open file or directory: owner first, because chown clears the
/// setuid and setgid bits.
pub fn fchown_fchmod(fd: BorrowedFd<'_>, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    // SAFETY: fd is open for the duration of both calls.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })?;
    // SAFETY: as above.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })
}
