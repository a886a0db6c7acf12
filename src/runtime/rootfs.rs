//! The container's filesystem view, built inside its new mount namespace: the spec's
//! mounts, the default devices, pivot_root, masked and read-only paths, a read-only root.
//!
//! Every mount target is resolved inside the root filesystem with openat2(RESOLVE_IN_ROOT)
//! and mounted by file descriptor with the new mount API (fsopen/fsmount, open_tree,
//! move_mount), so a symlink in the image, or one swapped in while we work (the
//! CVE-2021-30465 class), can only ever point somewhere inside the container.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag};

use super::cgroups::{self, Hierarchy};
use super::mount_sources::MountSources;
use super::spec::{Config, Device, MountSpec};
use crate::sys::{self, mount::MountAttr};

const PROC_SUPER_MAGIC: i64 = 0x9fa0;

type Result<T> = std::result::Result<T, String>;

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{}: path holds a NUL byte", p.display()))
}

/// The path of `p` relative to the root, without `.` or leading `/`.
fn relative(p: &Path) -> PathBuf {
    p.components().filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir)).collect()
}

fn open_root(path: &Path) -> Result<OwnedFd> {
    let f = fs::File::open(path).map_err(|e| format!("open root filesystem {}: {e}", path.display()))?;
    Ok(OwnedFd::from(f))
}

/// Opens `path` beneath `root` as O_PATH, symlinks resolved as if `root` were `/`.
fn resolve(root: BorrowedFd<'_>, path: &Path) -> std::io::Result<OwnedFd> {
    let rel = relative(path);
    let rel = if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel };
    let c = CString::new(rel.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    sys::resolve::openat2(root, &c, libc::O_PATH, libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// Resolves `path` beneath `root`, creating what is missing: directories on the way, and
/// the last component as `last`.
fn resolve_or_create(root: BorrowedFd<'_>, path: &Path, last: Kind) -> Result<OwnedFd> {
    if let Ok(fd) = resolve(root, path) {
        return Ok(fd);
    }
    let rel = relative(path);
    let parts: Vec<_> = rel.components().collect();
    let mut so_far = PathBuf::new();
    for (i, part) in parts.iter().enumerate() {
        let parent = resolve(root, &so_far).map_err(|e| format!("{}: {e}", Path::new("/").join(&so_far).display()))?;
        so_far.push(part);
        if resolve(root, &so_far).is_ok() {
            continue;
        }
        let name = CString::new(part.as_os_str().as_bytes()).map_err(|_| "NUL in path".to_string())?;
        let is_last = i + 1 == parts.len();
        let rc = if is_last && last == Kind::File {
            // SAFETY: name is NUL-terminated; parent is an open directory fd.
            unsafe { libc::mknodat(parent.as_raw_fd(), name.as_ptr(), libc::S_IFREG | 0o644, 0) }
        } else {
            // SAFETY: as above.
            unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) }
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            // A dangling symlink: it points at something missing. We do not follow it to
            // create its target, as that target could be anywhere once resolved on the host.
            return Err(format!("create {}: {err}", Path::new("/").join(&so_far).display()));
        }
    }
    resolve(root, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A tmpfs or /dev asked to be read-only is mounted writable and made read-only in
/// `finish`, as runc's mountPropagate and finalizeRootfs do: /dev gets device nodes and
/// mount points (/dev/pts, /dev/shm) after it is mounted, and a tmpfs may get mounts below.
fn read_only_later(m: &MountSpec) -> bool {
    m.flags.contains(MsFlags::MS_RDONLY) && (m.fstype == "tmpfs" || m.destination == Path::new("/dev"))
}

/// The attributes a mount gets when it is made (without read-only if that comes later).
fn attrs_at_mount(m: &MountSpec) -> u64 {
    let attrs = attrs_of(m.flags);
    if read_only_later(m) { attrs & !libc::MOUNT_ATTR_RDONLY } else { attrs }
}

fn attrs_of(flags: MsFlags) -> u64 {
    let mut a = 0;
    for (ms, attr) in [
        (MsFlags::MS_RDONLY, libc::MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, libc::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, libc::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, libc::MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_NODIRATIME, libc::MOUNT_ATTR_NODIRATIME),
    ] {
        if flags.contains(ms) {
            a |= attr;
        }
    }
    if flags.contains(MsFlags::MS_NOATIME) {
        a |= libc::MOUNT_ATTR_NOATIME;
    } else if flags.contains(MsFlags::MS_STRICTATIME) {
        a |= libc::MOUNT_ATTR_STRICTATIME;
    }
    a
}

/// Everything before pivot_root, run by the container's init in its new mount namespace.
pub fn prepare(cfg: &Config, sources: &MountSources) -> Result<()> {
    // Nothing we mount may propagate back to the host: while we set up, a shared root
    // (whose peers may be the host's) is a slave, and an unbindable one could not be bound
    // onto itself; `finish` gives the new root the propagation asked for.
    let setup = if cfg.rootfs_propagation.intersects(MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE) {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        cfg.rootfs_propagation
    };
    mount(None::<&str>, "/", None::<&str>, setup, None::<&str>).map_err(|e| format!("set propagation of /: {e}"))?;
    make_parent_private(&cfg.rootfs)?;
    // pivot_root needs the new root to be a mount point.
    mount(Some(&cfg.rootfs), &cfg.rootfs, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| format!("bind {} onto itself: {e}", cfg.rootfs.display()))?;
    let root = open_root(&cfg.rootfs)?;
    let mut dev_is_bound = false;
    for (i, m) in cfg.mounts.iter().enumerate() {
        if m.destination == Path::new("/dev") && m.is_bind() {
            dev_is_bound = true;
        }
        mount_one(cfg, root.as_fd(), m, sources.get(i))
            .map_err(|e| format!("mounts[{i}] ({}): {e}", m.destination.display()))?;
    }
    if !dev_is_bound {
        default_devices(cfg, root.as_fd())?;
    }
    for d in &cfg.devices {
        make_device(cfg, root.as_fd(), d).map_err(|e| format!("linux.devices {}: {e}", d.path.display()))?;
    }
    // A missing working directory is made, as runc makes it (inside the root, as root).
    resolve_or_create(root.as_fd(), &cfg.process.cwd, Kind::Dir).map_err(|e| format!("process.cwd: {e}"))?;
    Ok(())
}

/// pivot_root needs the parent mount of the new root not to be shared.
fn make_parent_private(rootfs: &Path) -> Result<()> {
    let mounts = sys::mountinfo::read().map_err(|e| e.to_string())?;
    // The last, longest mount point holding the root is the mount it is on.
    let mut best: Option<&sys::mountinfo::Mount> = None;
    for m in &mounts {
        if rootfs.starts_with(&m.mount_point)
            && best.is_none_or(|b| m.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len())
        {
            best = Some(m);
        }
    }
    if let Some(m) = best.filter(|m| m.is_shared()) {
        let mp = &m.mount_point;
        mount(None::<&str>, mp, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
            .map_err(|e| format!("make {} private: {e}", mp.display()))?;
    }
    Ok(())
}

/// `opened`: the bind source, opened by the runtime where the init could not reach it.
fn mount_one(cfg: &Config, root: BorrowedFd<'_>, m: &MountSpec, opened: Option<BorrowedFd<'_>>) -> Result<()> {
    if m.fstype == "cgroup" || m.fstype == "cgroup2" {
        return mount_cgroups(cfg, root, m);
    }
    let tree = if m.is_bind() {
        let src = m.source.as_deref().unwrap_or(Path::new(""));
        let src = if src.is_absolute() { src.to_path_buf() } else { cfg.bundle.join(src) };
        let recursive = m.flags.contains(MsFlags::MS_REC);
        let (is_dir, tree) = match opened {
            Some(fd) => {
                let st = nix::sys::stat::fstat(fd).map_err(|e| format!("bind source {}: {e}", src.display()))?;
                let tree = sys::mount::open_tree_clone(Some(fd), c"", recursive, true)
                    .map_err(|e| format!("clone {}: {e}", src.display()))?;
                (st.st_mode & libc::S_IFMT == libc::S_IFDIR, tree)
            }
            None => {
                let meta = fs::metadata(&src).map_err(|e| format!("bind source {}: {e}", src.display()))?;
                let tree = sys::mount::open_tree_clone(None, &cstr(&src)?, recursive, false)
                    .map_err(|e| format!("clone {}: {e}", src.display()))?;
                (meta.is_dir(), tree)
            }
        };
        let attrs = attrs_at_mount(m);
        if attrs != 0 {
            let mut clear = attrs;
            if attrs & (libc::MOUNT_ATTR_NOATIME | libc::MOUNT_ATTR_STRICTATIME) != 0 {
                clear |= libc::MOUNT_ATTR__ATIME;
            }
            // The plain options are the top mount's, as a bind remount sets them; the
            // r-options below are for the whole tree.
            sys::mount::mount_setattr(
                tree.as_fd(),
                false,
                MountAttr { set: attrs, clear: clear & libc::MOUNT_ATTR__ATIME, propagation: 0 },
            )
            .map_err(|e| format!("set mount flags: {e}"))?;
        }
        let target = resolve_or_create(root, &m.destination, if is_dir { Kind::Dir } else { Kind::File })?;
        sys::mount::move_mount_to_fd(tree.as_fd(), target.as_fd()).map_err(|e| format!("attach: {e}"))?;
        tree
    } else {
        let source = m.source.as_ref().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| m.fstype.clone());
        let mut options = m.data.clone();
        for (flag, name) in [(MsFlags::MS_SYNCHRONOUS, "sync"), (MsFlags::MS_DIRSYNC, "dirsync")] {
            if m.flags.contains(flag) {
                options = if options.is_empty() { name.to_string() } else { format!("{options},{name}") };
            }
        }
        let tree = sys::mount::new_mount(&m.fstype, Some(&source), &options, attrs_at_mount(m))
            .map_err(|e| format!("mount {}: {e}", m.fstype))?;
        let target = resolve_or_create(root, &m.destination, Kind::Dir)?;
        sys::mount::move_mount_to_fd(tree.as_fd(), target.as_fd()).map_err(|e| format!("attach: {e}"))?;
        tree
    };
    if m.recursive != MountAttr::default() {
        sys::mount::mount_setattr(tree.as_fd(), true, m.recursive)
            .map_err(|e| format!("set recursive mount flags: {e}"))?;
    }
    for p in &m.propagation {
        let recursive = p.contains(MsFlags::MS_REC);
        let kind = (*p - MsFlags::MS_REC).bits();
        sys::mount::mount_setattr(tree.as_fd(), recursive, MountAttr { set: 0, clear: 0, propagation: kind })
            .map_err(|e| format!("set propagation: {e}"))?;
    }
    Ok(())
}

/// /sys/fs/cgroup: cgroup2 on a unified host; on a v1 host, a tmpfs holding one mount per
/// v1 hierarchy, as runc lays it out. A hybrid host's cgroup2 mount (`unified`) is left
/// out, as runc leaves it: it holds no controller the container could use, and mounting
/// cgroup2 costs 5 to 20 ms here, a third of a pod's start.
///
/// Without a cgroup namespace, a fresh cgroup mount would show the host's whole hierarchy
/// (every other tenant's cgroups, and limits that read unlimited at the root): the
/// container's own cgroup directory is bind-mounted instead, as runc does, so it sees its
/// own limits and nothing else. With a cgroup namespace a fresh mount shows its own root.
fn mount_cgroups(cfg: &Config, root: BorrowedFd<'_>, m: &MountSpec) -> Result<()> {
    let own_ns = cfg.namespace(oci_spec::runtime::LinuxNamespaceType::Cgroup).is_some();
    let own = if own_ns { Vec::new() } else { cgroups::own_cgroups().map_err(|e| e.to_string())? };
    let mounts = if own_ns { Vec::new() } else { sys::mountinfo::read().map_err(|e| e.to_string())? };
    // The container's own cgroup below the host's mount of the hierarchy at `dir`.
    let own_dir = |dir: &Path, controller: &str| -> Option<PathBuf> {
        let path = own.iter().find(|(c, _)| c == controller)?.1.clone();
        let mount_root = mounts.iter().rfind(|mi| mi.mount_point == dir).map(|mi| mi.root.clone())?;
        let rel = path.strip_prefix(&mount_root).ok()?;
        Some(dir.join(rel))
    };
    let bind_or_mount = |dir: &Path, controller: &str, fresh: &dyn Fn() -> Result<OwnedFd>| -> Result<OwnedFd> {
        match own_dir(dir, controller) {
            Some(src) => sys::mount::open_tree_clone(None, &cstr(&src)?, false, false)
                .and_then(|tree| {
                    sys::mount::mount_setattr(
                        tree.as_fd(),
                        false,
                        MountAttr {
                            set: attrs_of(m.flags)
                                | libc::MOUNT_ATTR_NOSUID
                                | libc::MOUNT_ATTR_NODEV
                                | libc::MOUNT_ATTR_NOEXEC,
                            clear: 0,
                            propagation: 0,
                        },
                    )
                    .map(|()| tree)
                })
                .map_err(|e| format!("bind {}: {e}", src.display())),
            None => fresh(),
        }
    };
    let attrs = attrs_of(m.flags) | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
    let hierarchy = cgroups::detect().map_err(|e| e.to_string())?;
    let target = resolve_or_create(root, &m.destination, Kind::Dir)?;
    match hierarchy {
        Hierarchy::Unified { mount } => {
            let tree = bind_or_mount(&mount, "", &|| {
                sys::mount::new_mount("cgroup2", Some("cgroup2"), "", attrs).map_err(|e| format!("mount cgroup2: {e}"))
            })?;
            sys::mount::move_mount_to_fd(tree.as_fd(), target.as_fd()).map_err(|e| format!("attach: {e}"))?;
        }
        Hierarchy::Legacy { mounts, .. } => {
            let tmpfs = sys::mount::new_mount("tmpfs", Some("tmpfs"), "mode=755", attrs & !libc::MOUNT_ATTR_RDONLY)
                .map_err(|e| format!("mount tmpfs: {e}"))?;
            sys::mount::move_mount_to_fd(tmpfs.as_fd(), target.as_fd()).map_err(|e| format!("attach: {e}"))?;
            let mut by_dir: Vec<(PathBuf, Vec<String>)> = Vec::new();
            for (controller, dir) in mounts {
                match by_dir.iter_mut().find(|(d, _)| *d == dir) {
                    Some((_, cs)) => cs.push(controller),
                    None => by_dir.push((dir, vec![controller])),
                }
            }
            for (dir, controllers) in by_dir {
                let name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
                let sub = resolve_or_create(root, &m.destination.join(&name), Kind::Dir)?;
                let tree = bind_or_mount(&dir, &controllers[0], &|| {
                    sys::mount::new_mount("cgroup", Some("cgroup"), &controllers.join(","), attrs)
                        .map_err(|e| format!("mount cgroup {}: {e}", controllers.join(",")))
                })?;
                sys::mount::move_mount_to_fd(tree.as_fd(), sub.as_fd()).map_err(|e| format!("attach: {e}"))?;
            }
            if m.flags.contains(MsFlags::MS_RDONLY) {
                sys::mount::mount_setattr(
                    tmpfs.as_fd(),
                    false,
                    MountAttr { set: libc::MOUNT_ATTR_RDONLY, clear: 0, propagation: 0 },
                )
                .map_err(|e| format!("make read-only: {e}"))?;
            }
        }
    }
    Ok(())
}

const DEFAULT_DEVICES: [(&str, i64, i64); 6] =
    [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

fn default_devices(cfg: &Config, root: BorrowedFd<'_>) -> Result<()> {
    for (name, major, minor) in DEFAULT_DEVICES {
        let path = Path::new("/dev").join(name);
        if cfg.devices.iter().any(|d| d.path == path) {
            continue;
        }
        let d = Device { path, kind: 'c', major, minor, mode: 0o666, uid: 0, gid: 0 };
        make_device(cfg, root, &d).map_err(|e| format!("device /dev/{name}: {e}"))?;
    }
    let dev = resolve_or_create(root, Path::new("/dev"), Kind::Dir)?;
    for (target, name) in [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ] {
        let (t, n) = (CString::new(target).unwrap_or_default(), CString::new(name).unwrap_or_default());
        // SAFETY: both strings are NUL-terminated; dev is an open directory fd.
        let rc = unsafe { libc::symlinkat(t.as_ptr(), dev.as_raw_fd(), n.as_ptr()) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EEXIST) && name == "ptmx" {
                // An image's /dev/ptmx node would bypass the container's devpts: replace it.
                // SAFETY: as above.
                unsafe { libc::unlinkat(dev.as_raw_fd(), n.as_ptr(), 0) };
                // SAFETY: as above.
                if unsafe { libc::symlinkat(t.as_ptr(), dev.as_raw_fd(), n.as_ptr()) } != 0 {
                    return Err(format!("symlink /dev/ptmx: {}", std::io::Error::last_os_error()));
                }
            } else if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("symlink /dev/{name}: {e}"));
            }
        }
    }
    Ok(())
}

fn make_device(cfg: &Config, root: BorrowedFd<'_>, d: &Device) -> Result<()> {
    let parent_path = d.path.parent().unwrap_or(Path::new("/"));
    let name = d.path.file_name().ok_or("no file name")?;
    let parent = resolve_or_create(root, parent_path, Kind::Dir)?;
    // O_PATH fds cannot be used with mknodat; reopen the directory for real.
    let dir = sys::resolve::openat2(parent.as_fd(), c".", libc::O_DIRECTORY | libc::O_RDONLY, libc::RESOLVE_BENEATH)
        .map_err(|e| e.to_string())?;
    let cname = CString::new(name.as_bytes()).map_err(|_| "NUL in name")?;
    if cfg.new_namespace(oci_spec::runtime::LinuxNamespaceType::User) {
        // A user namespace cannot make device nodes: bind the host's.
        let target = resolve_or_create(root, &d.path, Kind::File)?;
        let tree = sys::mount::open_tree_clone(None, &cstr(&d.path)?, false, false)
            .map_err(|e| format!("clone host {}: {e}", d.path.display()))?;
        return sys::mount::move_mount_to_fd(tree.as_fd(), target.as_fd()).map_err(|e| format!("attach: {e}"));
    }
    let kind = match d.kind {
        'b' => SFlag::S_IFBLK,
        'p' => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    // SAFETY: cname is NUL-terminated; dir is an open directory fd.
    unsafe { libc::unlinkat(dir.as_raw_fd(), cname.as_ptr(), 0) };
    let dev = nix::sys::stat::makedev(d.major as u64, d.minor as u64);
    nix::sys::stat::mknodat(dir.as_fd(), cname.as_c_str(), kind, Mode::from_bits_truncate(d.mode & 0o7777), dev)
        .map_err(|e| format!("mknod: {e}"))?;
    nix::unistd::fchownat(
        dir.as_fd(),
        cname.as_c_str(),
        Some(d.uid.into()),
        Some(d.gid.into()),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| format!("chown: {e}"))?;
    nix::sys::stat::fchmodat(
        dir.as_fd(),
        cname.as_c_str(),
        Mode::from_bits_truncate(d.mode & 0o7777),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| format!("chmod: {e}"))?;
    Ok(())
}

/// pivot_root into the container's root and drop the old one, without a directory for it
/// (the `pivot_root(".", ".")` idiom runc and crun use).
pub fn pivot(cfg: &Config) -> Result<()> {
    let new_root = open_root(&cfg.rootfs)?;
    nix::unistd::fchdir(new_root.as_fd()).map_err(|e| format!("chdir to root: {e}"))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root {}: {e}", cfg.rootfs.display()))?;
    // The old root is stacked on "."; keep its unmount from reaching the host.
    mount(None::<&str>, ".", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| format!("make old root a slave: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

/// Enters the root without a mount namespace of our own, where pivot_root would move
/// the host's root: chroot, as runc does there.
pub fn chroot(cfg: &Config) -> Result<()> {
    nix::unistd::chroot(&cfg.rootfs).map_err(|e| format!("chroot {}: {e}", cfg.rootfs.display()))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

/// After pivot_root: masked and read-only paths, read-only tmpfs and /dev mounts, then a
/// read-only root.
pub fn finish(cfg: &Config) -> Result<()> {
    let root = open_root(Path::new("/"))?;
    for p in &cfg.masked_paths {
        let Ok(target) = resolve(root.as_fd(), Path::new(p)) else { continue };
        let is_dir =
            nix::sys::stat::fstat(target.as_fd()).map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR).unwrap_or(false);
        let tree = if is_dir {
            sys::mount::new_mount("tmpfs", Some("tmpfs"), "size=0", libc::MOUNT_ATTR_RDONLY)
                .map_err(|e| format!("mask {p}: {e}"))?
        } else {
            sys::mount::open_tree_clone(None, c"/dev/null", false, false)
                .map_err(|e| format!("mask {p} with /dev/null: {e}"))?
        };
        sys::mount::move_mount_to_fd(tree.as_fd(), target.as_fd()).map_err(|e| format!("mask {p}: {e}"))?;
    }
    for p in &cfg.readonly_paths {
        let Ok(target) = resolve(root.as_fd(), Path::new(p)) else { continue };
        let tree = sys::mount::open_tree_clone(Some(target.as_fd()), c"", true, true)
            .map_err(|e| format!("read-only {p}: {e}"))?;
        sys::mount::mount_setattr(
            tree.as_fd(),
            true,
            MountAttr {
                set: libc::MOUNT_ATTR_RDONLY
                    | libc::MOUNT_ATTR_NOSUID
                    | libc::MOUNT_ATTR_NODEV
                    | libc::MOUNT_ATTR_NOEXEC,
                clear: 0,
                propagation: 0,
            },
        )
        .map_err(|e| format!("read-only {p}: {e}"))?;
        sys::mount::move_mount_to_fd(tree.as_fd(), target.as_fd()).map_err(|e| format!("read-only {p}: {e}"))?;
    }
    // Read-only tmpfs and /dev, now that what goes inside is made (runc's finalizeRootfs,
    // after the masks): only the mount itself, as runc's remountReadonly; the mounts below
    // (/dev/pts, /dev/shm) keep their own options.
    for m in cfg.mounts.iter().filter(|m| read_only_later(m)) {
        let target = resolve(root.as_fd(), &m.destination)
            .map_err(|e| format!("make {} read-only: {e}", m.destination.display()))?;
        sys::mount::mount_setattr(
            target.as_fd(),
            false,
            MountAttr { set: libc::MOUNT_ATTR_RDONLY, clear: 0, propagation: 0 },
        )
        .map_err(|e| format!("make {} read-only: {e}", m.destination.display()))?;
    }
    if cfg.readonly_root {
        sys::mount::mount_setattr(
            root.as_fd(),
            false,
            MountAttr { set: libc::MOUNT_ATTR_RDONLY, clear: 0, propagation: 0 },
        )
        .map_err(|e| format!("make / read-only: {e}"))?;
    }
    if cfg.rootfs_propagation.intersects(MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE) {
        // Last, now that the root is the container's own: shared (with peers only later
        // mounts of the container will have) or unbindable (which the masks above, bound
        // from /dev/null, could not have been).
        mount(None::<&str>, "/", None::<&str>, cfg.rootfs_propagation, None::<&str>)
            .map_err(|e| format!("set propagation of the new root: {e}"))?;
    }
    Ok(())
}

/// Writes `value` to /proc/`rel`, refusing unless the file really is on procfs and was
/// reached without symlinks or mount crossings (a fake /proc cannot take the write).
pub fn write_proc(rel: &str, value: &str) -> Result<()> {
    let proc = fs::File::open("/proc").map_err(|e| format!("open /proc: {e}"))?;
    if sys::mount::fs_type(proc.as_fd()).ok() != Some(PROC_SUPER_MAGIC) {
        return Err(format!("/proc is not procfs: refusing to write /proc/{rel}"));
    }
    let c = CString::new(rel).map_err(|_| "NUL in path")?;
    let fd = sys::resolve::openat2(
        proc.as_fd(),
        &c,
        libc::O_WRONLY,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV,
    )
    .map_err(|e| format!("open /proc/{rel}: {e}"))?;
    if sys::mount::fs_type(fd.as_fd()).ok() != Some(PROC_SUPER_MAGIC) {
        return Err(format!("/proc/{rel} is not on procfs: refusing to write it"));
    }
    nix::unistd::write(&fd, value.as_bytes()).map_err(|e| format!("write /proc/{rel}: {e}"))?;
    Ok(())
}

pub fn sysctls(cfg: &Config) -> Result<()> {
    for (k, v) in &cfg.sysctls {
        write_proc(&format!("sys/{}", k.replace('.', "/")), v).map_err(|e| format!("sysctl {k}: {e}"))?;
    }
    Ok(())
}
