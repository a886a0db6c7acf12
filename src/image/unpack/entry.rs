//! Writes one tar entry at a time, confined to the root (see `confined`).

use std::ffi::CString;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::confined::{Dir, Root, cstring, fchown_fchmod, fset_xattr};
use super::{Created, OPAQUE, UnpackError, WHITEOUT_PREFIX, Whiteouts, normalise, split};

/// What an entry makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

impl EntryKind {
    fn of(t: tar::EntryType) -> Option<EntryKind> {
        use tar::EntryType as T;
        Some(match t {
            T::Regular | T::Continuous | T::GNUSparse => EntryKind::File,
            T::Directory => EntryKind::Dir,
            T::Symlink => EntryKind::Symlink,
            T::Link => EntryKind::Hardlink,
            T::Char => EntryKind::Char,
            T::Block => EntryKind::Block,
            T::Fifo => EntryKind::Fifo,
            _ => return None,
        })
    }
}

/// Owner, mode, time and xattrs of an entry, with PAX records taking precedence over the
/// ustar header (PAX carries ids over 2^21 and sub-second times).
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(CString, Vec<u8>)>,
}

const PAX_XATTR: &str = "SCHILY.xattr.";

/// overlayfs reads its own metadata from `trusted.overlay.*`; a layer that brought such
/// xattrs could forge whiteouts, redirects or metacopy origins in our mounts.
fn forbidden_xattr(key: &str) -> bool {
    key.starts_with("trusted.overlay.")
}

pub struct Unpacker<'r> {
    root: &'r Root,
    mode: Whiteouts,
    /// The last parent directory resolved, by path: consecutive entries mostly share one.
    /// An entry that replaces a component of this path has a shorter parent, so it evicts
    /// the cache before it changes anything; the explicit resets below are a second guard.
    cache: Option<(Vec<u8>, OwnedFd)>,
    created: Created,
    /// Directory mtimes, set at the end: writing into a directory changes its mtime.
    dir_times: Vec<(Vec<u8>, i64)>,
    buf: Vec<u8>,
}

fn err<'a>(path: &'a [u8], op: &'static str) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Entry { path: String::from_utf8_lossy(path).into_owned(), op, source }
}

fn invalid(path: &[u8], reason: &'static str) -> UnpackError {
    UnpackError::Invalid { path: String::from_utf8_lossy(path).into_owned(), reason }
}

fn is_exists(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EEXIST)
}

impl<'r> Unpacker<'r> {
    pub fn new(root: &'r Root, mode: Whiteouts) -> Self {
        Unpacker {
            root,
            mode,
            cache: None,
            created: Created::default(),
            dir_times: Vec::new(),
            buf: vec![0; 256 * 1024],
        }
    }

    /// Resolves (creating if missing, as docker does, 0755 root) the parent directory.
    fn parent(&mut self, entry: &[u8], parent: &[u8]) -> Result<BorrowedFd<'_>, UnpackError> {
        let hit = matches!(&self.cache, Some((p, _)) if p == parent);
        if !hit {
            let fd = match self.root.open_dir(parent) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.make_parents(entry, parent)?,
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(invalid(entry, "a parent is not a directory"));
                }
                Err(e) => return Err(err(entry, "resolve parent directory")(e)),
            };
            self.cache = Some((parent.to_vec(), fd));
        }
        Ok(self.cache.as_ref().expect("set above").1.as_fd())
    }

    fn make_parents(&mut self, entry: &[u8], parent: &[u8]) -> Result<OwnedFd, UnpackError> {
        let mut fd = self.root.open_dir(b"").map_err(err(entry, "open root"))?;
        let mut done = 0;
        for comp in parent.split(|&b| b == b'/') {
            let prefix = &parent[..done + comp.len()];
            done += comp.len() + 1;
            match self.root.open_dir(prefix) {
                Ok(next) => fd = next,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let name = cstring(comp).map_err(err(entry, "name"))?;
                    match Dir(fd.as_fd()).mkdir(&name, 0o755) {
                        Ok(()) => {}
                        // A dangling symlink in the way: refuse rather than guess.
                        Err(e) if is_exists(&e) => {
                            return Err(invalid(entry, "a parent directory is a dangling symlink"));
                        }
                        Err(e) => return Err(err(entry, "create parent directory")(e)),
                    }
                    fd = self.root.open_dir(prefix).map_err(err(entry, "open created parent"))?;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(invalid(entry, "a parent is not a directory"));
                }
                Err(e) => return Err(err(entry, "resolve parent directory")(e)),
            }
        }
        Ok(fd)
    }

    /// Applies one entry; returns the bytes of file data written.
    pub fn apply<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<u64, UnpackError> {
        let raw = e.path_bytes().into_owned();
        let path = normalise(&raw).map_err(|reason| invalid(&raw, reason))?;
        let header_type = e.header().entry_type();
        let Some(kind) = EntryKind::of(header_type) else {
            tracing::warn!(path = %String::from_utf8_lossy(&raw), kind = ?header_type, "skipping tar entry of unsupported type");
            return Ok(0);
        };
        let meta = self.meta(e, &path)?;
        let (parent, name) = split(&path);
        let (parent, name) = (parent.to_vec(), name.to_vec());

        if name.is_empty() {
            // The layer's own root, "./": only its metadata can change.
            if kind != EntryKind::Dir {
                return Err(invalid(&raw, "only a directory may name the root"));
            }
            let fd = self.root.open_dir(b"").map_err(err(&path, "open root"))?;
            let dir = Dir(fd.as_fd()).open_subdir(&cstring(b".").expect("static")).map_err(err(&path, "open root"))?;
            self.set_dir_meta(&path, dir.as_fd(), &meta)?;
            return Ok(0);
        }
        if name == OPAQUE {
            return self.opaque(&path, &parent);
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.starts_with(WHITEOUT_PREFIX) {
                return Err(invalid(&raw, "whiteout names no file"));
            }
            return self.whiteout(&path, &parent, hidden);
        }

        let cname = cstring(&name).map_err(err(&path, "name"))?;
        let written = match kind {
            EntryKind::Dir => {
                self.make_dir(&path, &parent, &cname, &meta)?;
                0
            }
            EntryKind::File => self.make_file(e, &path, &parent, &cname, &meta)?,
            EntryKind::Symlink => {
                let target = e.link_name_bytes().ok_or_else(|| invalid(&path, "symlink without a target"))?;
                let target = cstring(&target).map_err(err(&path, "symlink target"))?;
                self.create(&path, &parent, &cname, |d| d.symlink(&target, &cname))?;
                self.finish_node(&path, &parent, &cname, &meta, false)?;
                0
            }
            EntryKind::Hardlink => {
                let target = e.link_name_bytes().ok_or_else(|| invalid(&path, "hardlink without a target"))?;
                let target = normalise(&target).map_err(|reason| invalid(&path, reason))?;
                self.hardlink(&path, &parent, &cname, &target)?;
                0
            }
            EntryKind::Char | EntryKind::Block | EntryKind::Fifo => {
                let (fmt, dev) = match kind {
                    EntryKind::Char => (libc::S_IFCHR, device(e)),
                    EntryKind::Block => (libc::S_IFBLK, device(e)),
                    _ => (libc::S_IFIFO, 0),
                };
                self.create(&path, &parent, &cname, |d| d.mknod(&cname, fmt | (meta.mode & 0o777), dev))?;
                self.finish_node(&path, &parent, &cname, &meta, true)?;
                0
            }
        };
        self.created.insert(&path);
        Ok(written)
    }

    fn meta<R: Read>(&self, e: &mut tar::Entry<'_, R>, path: &[u8]) -> Result<Meta, UnpackError> {
        let h = e.header();
        let bad = |_| invalid(path, "malformed numeric field in the header");
        let mut m = Meta {
            uid: h.uid().map_err(bad)? as u32,
            gid: h.gid().map_err(bad)? as u32,
            mode: h.mode().map_err(bad)? & 0o7777,
            mtime: h.mtime().map_err(bad)? as i64,
            xattrs: Vec::new(),
        };
        if let Some(exts) = e.pax_extensions().map_err(UnpackError::Read)? {
            for ext in exts {
                let ext = ext.map_err(UnpackError::Read)?;
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                let number = || std::str::from_utf8(value).ok().and_then(|v| v.split('.').next()?.parse::<i64>().ok());
                match key {
                    "uid" => m.uid = number().ok_or_else(|| invalid(path, "bad PAX uid"))? as u32,
                    "gid" => m.gid = number().ok_or_else(|| invalid(path, "bad PAX gid"))? as u32,
                    "mtime" => m.mtime = number().ok_or_else(|| invalid(path, "bad PAX mtime"))?,
                    k if k.starts_with(PAX_XATTR) => {
                        let name = &k[PAX_XATTR.len()..];
                        if forbidden_xattr(name) {
                            tracing::warn!(path = %String::from_utf8_lossy(path), xattr = name, "ignoring overlayfs xattr in layer");
                            continue;
                        }
                        m.xattrs.push((cstring(name.as_bytes()).map_err(err(path, "xattr name"))?, value.to_vec()));
                    }
                    _ => {}
                }
            }
        }
        Ok(m)
    }

    /// Runs `make` in the parent; if the name is taken, removes what is there (as a later
    /// layer's entry replaces an earlier one) and runs it again.
    fn create(
        &mut self,
        path: &[u8],
        parent: &[u8],
        name: &CString,
        make: impl Fn(&Dir<'_>) -> io::Result<()>,
    ) -> Result<(), UnpackError> {
        let fd = self.parent(path, parent)?;
        let dir = Dir(fd);
        match make(&dir) {
            Ok(()) => return Ok(()),
            Err(e) if is_exists(&e) => {}
            Err(e) => return Err(err(path, "create")(e)),
        }
        let replaced_dir = dir.lstat(name).map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR).unwrap_or(false);
        dir.remove_all(name).map_err(err(path, "replace existing entry"))?;
        make(&dir).map_err(err(path, "create"))?;
        if replaced_dir {
            // Cached descendants of the removed directory are gone with it.
            self.cache = None;
        }
        Ok(())
    }

    fn make_dir(&mut self, path: &[u8], parent: &[u8], name: &CString, meta: &Meta) -> Result<(), UnpackError> {
        let fd = self.parent(path, parent)?;
        let dir = Dir(fd);
        match dir.mkdir(name, 0o700) {
            Ok(()) => {}
            Err(e) if is_exists(&e) => {
                let st = dir.lstat(name).map_err(err(path, "stat existing entry"))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    dir.remove_all(name).map_err(err(path, "replace existing entry"))?;
                    dir.mkdir(name, 0o700).map_err(err(path, "create directory"))?;
                    self.cache = None;
                }
            }
            Err(e) => return Err(err(path, "create directory")(e)),
        }
        let sub = Dir(self.parent(path, parent)?).open_subdir(name).map_err(err(path, "open directory"))?;
        self.set_dir_meta(path, sub.as_fd(), meta)
    }

    fn set_dir_meta(&mut self, path: &[u8], fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), UnpackError> {
        fchown_fchmod(fd, meta.uid, meta.gid, meta.mode).map_err(err(path, "set owner and mode"))?;
        for (k, v) in &meta.xattrs {
            fset_xattr(fd, k, v).map_err(err(path, "set xattr"))?;
        }
        self.dir_times.push((path.to_vec(), meta.mtime));
        Ok(())
    }

    fn make_file<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        path: &[u8],
        parent: &[u8],
        name: &CString,
        meta: &Meta,
    ) -> Result<u64, UnpackError> {
        let fd = self.parent(path, parent)?;
        let mut file = match Dir(fd).create_file(name, 0o600) {
            Ok(f) => f,
            Err(e) if is_exists(&e) => {
                let fd = self.parent(path, parent)?;
                let dir = Dir(fd);
                dir.remove_all(name).map_err(err(path, "replace existing entry"))?;
                dir.create_file(name, 0o600).map_err(err(path, "create file"))?
            }
            Err(e) => return Err(err(path, "create file")(e)),
        };
        // Runs of zeros become holes (as GNU tar's --sparse and Go's archive/tar for
        // containerd write them): a layer of a few KiB with a GNU sparse entry may describe
        // gigabytes of zeros, which must not take gigabytes of disk.
        let mut written = 0u64;
        let mut hole_at_end = false;
        loop {
            let n = match e.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(x) if x.kind() == io::ErrorKind::Interrupted => continue,
                Err(x) => return Err(UnpackError::Read(x)),
            };
            let chunk = &self.buf[..n];
            if chunk.iter().all(|&b| b == 0) {
                file.seek(SeekFrom::Current(n as i64)).map_err(err(path, "seek over a hole"))?;
                hole_at_end = true;
            } else {
                file.write_all(chunk).map_err(err(path, "write file"))?;
                hole_at_end = false;
            }
            written += n as u64;
        }
        if hole_at_end {
            // A seek past the end makes no bytes: the file's length is set instead.
            file.set_len(written).map_err(err(path, "extend file"))?;
        }
        let expected = e.header().entry_size().unwrap_or(written);
        if written < expected && e.header().entry_type() != tar::EntryType::GNUSparse {
            return Err(UnpackError::Read(io::Error::new(io::ErrorKind::UnexpectedEof, "file data ends early")));
        }
        fchown_fchmod(file.as_fd(), meta.uid, meta.gid, meta.mode).map_err(err(path, "set owner and mode"))?;
        for (k, v) in &meta.xattrs {
            fset_xattr(file.as_fd(), k, v).map_err(err(path, "set xattr"))?;
        }
        let ts = libc::timespec { tv_sec: meta.mtime as libc::time_t, tv_nsec: 0 };
        // SAFETY: the file is open and `times` holds the two timespecs futimens reads.
        if unsafe { libc::futimens(std::os::fd::AsRawFd::as_raw_fd(&file), [ts, ts].as_ptr()) } != 0 {
            return Err(err(path, "set times")(io::Error::last_os_error()));
        }
        Ok(written)
    }

    /// Owner, mode (not for symlinks), xattrs and time of a node made by name.
    fn finish_node(
        &mut self,
        path: &[u8],
        parent: &[u8],
        name: &CString,
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        let fd = self.parent(path, parent)?;
        let dir = Dir(fd);
        dir.chown(name, meta.uid, meta.gid).map_err(err(path, "set owner"))?;
        if chmod {
            // The node was just made by us in a tree nothing else writes to; mknod's mode
            // went through the umask, so set it again, now that the owner is right.
            // SAFETY: name is NUL-terminated; the dirfd is valid for the call.
            if unsafe {
                libc::fchmodat(std::os::fd::AsRawFd::as_raw_fd(&dir.0), name.as_ptr(), meta.mode as libc::mode_t, 0)
            } != 0
            {
                return Err(err(path, "set mode")(io::Error::last_os_error()));
            }
        }
        for (k, v) in &meta.xattrs {
            if let Err(e) = dir.set_xattr(name, k, v) {
                // Linux refuses user.* xattrs on symlinks and device nodes; tar warns too.
                if e.raw_os_error() == Some(libc::EPERM) {
                    tracing::warn!(path = %String::from_utf8_lossy(path), xattr = ?k, "xattr not allowed on this file type");
                    continue;
                }
                return Err(err(path, "set xattr")(e));
            }
        }
        dir.set_times(name, meta.mtime).map_err(err(path, "set times"))
    }

    fn hardlink(&mut self, path: &[u8], parent: &[u8], name: &CString, target: &[u8]) -> Result<(), UnpackError> {
        let (src_parent, src_name) = split(target);
        if src_name.is_empty() {
            return Err(invalid(path, "hardlink to the root"));
        }
        let not_here = || invalid(path, "hardlink target is not in this layer");
        let src_fd = self.root.open_dir(src_parent).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => not_here(),
            _ => err(path, "resolve hardlink target")(e),
        })?;
        let src_name = cstring(src_name).map_err(err(path, "hardlink target"))?;
        Dir(src_fd.as_fd()).lstat(&src_name).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) { not_here() } else { err(path, "stat hardlink target")(e) }
        })?;
        let src = Dir(src_fd.as_fd());
        self.create(path, parent, name, |d| d.link_from(&src, &src_name, name))
    }

    fn opaque(&mut self, path: &[u8], parent: &[u8]) -> Result<u64, UnpackError> {
        let fd = self.parent(path, parent)?.try_clone_to_owned().map_err(err(path, "dup"))?;
        let fd = fd.as_fd();
        match self.mode {
            Whiteouts::Overlay => {
                let dot = cstring(b".").expect("static");
                let dir = Dir(fd).open_subdir(&dot).map_err(err(path, "open opaque directory"))?;
                fset_xattr(dir.as_fd(), &cstring(b"trusted.overlay.opaque").expect("static"), b"y")
                    .map_err(err(path, "mark directory opaque"))?;
            }
            Whiteouts::Apply => {
                let created = &self.created;
                let prefix = if parent.is_empty() { Vec::new() } else { [parent, b"/"].concat() };
                Dir(fd)
                    .clear(|name| !created.contains(&[prefix.as_slice(), name].concat()))
                    .map_err(err(path, "empty opaque directory"))?;
                self.cache = None;
            }
        }
        Ok(0)
    }

    fn whiteout(&mut self, path: &[u8], parent: &[u8], hidden: &[u8]) -> Result<u64, UnpackError> {
        let name = cstring(hidden).map_err(err(path, "name"))?;
        match self.mode {
            Whiteouts::Overlay => {
                // SAFETY: makedev is a pure computation.
                let dev = libc::makedev(0, 0);
                self.create(path, parent, &name, |d| d.mknod(&name, libc::S_IFCHR, dev))?;
            }
            Whiteouts::Apply => {
                let hidden_path = if parent.is_empty() { hidden.to_vec() } else { [parent, b"/", hidden].concat() };
                if self.created.contains(&hidden_path) {
                    return Ok(0);
                }
                let fd = match self.root.open_dir(parent) {
                    Ok(fd) => fd,
                    // Nothing there to hide.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => return Ok(0),
                    Err(e) => return Err(err(path, "resolve whiteout parent")(e)),
                };
                Dir(fd.as_fd()).remove_all(&name).map_err(err(path, "apply whiteout"))?;
                self.cache = None;
            }
        }
        Ok(0)
    }

    /// Sets directory times, deepest first, now that nothing more is written into them.
    pub fn finish(mut self) -> Result<(), UnpackError> {
        self.cache = None;
        let mut times = std::mem::take(&mut self.dir_times);
        times.sort_by_key(|(p, _)| {
            std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count() + usize::from(!p.is_empty()))
        });
        for (path, mtime) in times {
            let (parent, name) = split(&path);
            let fd = match self.root.open_dir(parent) {
                Ok(fd) => fd,
                // Removed by a later whiteout in Apply mode.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(err(&path, "resolve directory")(e)),
            };
            let name = if name.is_empty() {
                cstring(b".").expect("static")
            } else {
                cstring(name).map_err(err(&path, "name"))?
            };
            match Dir(fd.as_fd()).set_times(&name, mtime) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(err(&path, "set times")(e)),
            }
        }
        Ok(())
    }
}

fn device<R: Read>(e: &tar::Entry<'_, R>) -> libc::dev_t {
    let h = e.header();
    let major = h.device_major().ok().flatten().unwrap_or(0);
    let minor = h.device_minor().ok().flatten().unwrap_or(0);
    libc::makedev(major, minor)
}
