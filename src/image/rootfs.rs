//! A container's root filesystem: an overlayfs mount of an image's layers (read-only,
//! shared with every other container of the image) under an upper and work directory of
//! its own. The runtime and pods call [`prepare`] and [`remove`]; nothing else mounts.
//!
//! Layout, under the store's `rootfs/<id>/`: `layers.json` (the ChainIDs, written before the
//! mount so that garbage collection never takes a layer in use), `upper/`, `work/`, `merged/`.
//!
//! The legacy mount(2) call passes all options in one page, which ~60 layers of full paths
//! overflow. Where the kernel has it (6.8+), each lower layer goes in its own
//! `fsconfig(…, "lowerdir+", …)` call instead; older kernels get short symlinks under the
//! store's `l/` directory (containers/storage does the same).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::digest::Digest;
use super::store::{ImageRecord, Store, remove_tree};
use crate::sys::mount::{FsContext, move_mount_to_path};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("container id {0:?} is invalid: use 1 to 128 of [A-Za-z0-9_.-], not starting with . or -")]
    BadId(String),
    #[error("root filesystem {0:?} already exists")]
    Exists(String),
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("layer {0} of the image is missing from the store (was it removed?)")]
    MissingLayer(Digest),
    #[error("mounting overlayfs at {path}: {step}: {source}")]
    Mount { path: PathBuf, step: &'static str, source: io::Error },
    #[error(
        "image has {layers} layers; their overlay mount options need {needed} bytes, over the kernel's {limit}, and this kernel lacks fsconfig lowerdir+ (Linux 6.8)"
    )]
    TooManyLayers { layers: usize, needed: usize, limit: usize },
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
}

type Result<T> = std::result::Result<T, RootfsError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io { op, path: path.to_path_buf(), source }
}

/// Container ids become directory names, so they are checked as strictly as runc does.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with(['.', '-'])
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(RootfsError::BadId(id.to_string())) }
}

pub fn dir(store: &Store, id: &str) -> PathBuf {
    store.root().join("rootfs").join(id)
}

/// Which kernel interface mounts the overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountApi {
    /// fsconfig with `lowerdir+` where the kernel has it, else [`MountApi::Legacy`].
    Auto,
    /// mount(2) with short symlinked layer paths, as on kernels before 6.8.
    Legacy,
}

/// Mounts a fresh root filesystem for container `id` from `image` and returns the path of
/// the merged view.
pub fn prepare(store: &Store, image: &ImageRecord, id: &str) -> Result<PathBuf> {
    prepare_with(store, image, id, MountApi::Auto)
}

pub fn prepare_with(store: &Store, image: &ImageRecord, id: &str, api: MountApi) -> Result<PathBuf> {
    validate_id(id)?;
    let _guard = store.shared_lock()?;
    let base = dir(store, id);
    match fs::create_dir(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(RootfsError::Exists(id.to_string())),
        Err(e) => return Err(io_err("create directory", &base)(e)),
    }
    let result = (|| {
        let record = serde_json::to_vec(&image.chain).expect("digests serialise");
        fs::write(base.join("layers.json"), record).map_err(io_err("write", &base))?;
        for sub in ["upper", "work", "merged"] {
            let p = base.join(sub);
            fs::create_dir(&p).map_err(io_err("create directory", &p))?;
        }
        // overlayfs lists lower directories topmost first.
        let mut lowers = Vec::with_capacity(image.chain.len());
        for chain_id in image.chain.iter().rev() {
            let p = store.layer_path(chain_id);
            if !p.is_dir() {
                return Err(RootfsError::MissingLayer(chain_id.clone()));
            }
            lowers.push(p);
        }
        let (upper, work, merged) = (base.join("upper"), base.join("work"), base.join("merged"));
        match api {
            MountApi::Auto => mount_overlay(store, &lowers, &upper, &work, &merged)?,
            MountApi::Legacy => mount_legacy(store, &lowers, &upper, &work, &merged)?,
        }
        Ok(base.join("merged"))
    })();
    if result.is_err() {
        let _ = remove_tree(&base);
    }
    result
}

/// Unmounts and deletes container `id`'s root filesystem. Removing one that is not there
/// is not an error, so cleanup paths can call it unconditionally.
pub fn remove(store: &Store, id: &str) -> Result<()> {
    validate_id(id)?;
    let base = dir(store, id);
    if !base.exists() {
        return Ok(());
    }
    let merged = base.join("merged");
    crate::sys::mount::unmount_detach(&merged).map_err(io_err("unmount", &merged))?;
    remove_tree(&base).map_err(io_err("remove", &base))
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths from the store have no NUL")
}

fn mount_overlay(store: &Store, lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    match mount_with_fsconfig(lowers, upper, work, target) {
        Ok(()) => Ok(()),
        // EINVAL: no "lowerdir+" before 6.8; ENOSYS: no new mount API at all.
        Err(RootfsError::Mount { source, .. })
            if matches!(source.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) =>
        {
            mount_legacy(store, lowers, upper, work, target)
        }
        Err(e) => Err(e),
    }
}

fn mount_with_fsconfig(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    let fail = |step| move |source| RootfsError::Mount { path: target.to_path_buf(), step, source };
    let fs = FsContext::open("overlay").map_err(fail("fsopen"))?;
    for lower in lowers {
        fs.set_string("lowerdir+", &cstr(lower)).map_err(fail("lowerdir+"))?;
    }
    fs.set_string("upperdir", &cstr(upper)).map_err(fail("upperdir"))?;
    fs.set_string("workdir", &cstr(work)).map_err(fail("workdir"))?;
    fs.create().map_err(fail("create"))?;
    let mnt = fs.mount(0).map_err(fail("fsmount"))?;
    move_mount_to_path(mnt.as_fd(), &cstr(target)).map_err(fail("move_mount"))
}

/// Short names under `l/` for each layer, so that the options fit in a page.
fn short_link(store: &Store, lower: &Path) -> Result<PathBuf> {
    let hex = lower.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let link = store.root().join("l").join(&hex[..hex.len().min(12)]);
    match fs::read_link(&link) {
        Ok(t) if t == lower => return Ok(link),
        Ok(_) => {
            let _ = fs::remove_file(&link);
        }
        Err(_) => {}
    }
    match std::os::unix::fs::symlink(lower, &link) {
        Ok(()) => Ok(link),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(link),
        Err(e) => Err(io_err("symlink", &link)(e)),
    }
}

fn mount_legacy(store: &Store, lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    let mut short = Vec::with_capacity(lowers.len());
    for l in lowers {
        short.push(short_link(store, l)?.to_string_lossy().into_owned());
    }
    let options = format!("lowerdir={},upperdir={},workdir={}", short.join(":"), upper.display(), work.display());
    let limit = page_size() - 1;
    if options.len() > limit {
        return Err(RootfsError::TooManyLayers { layers: lowers.len(), needed: options.len(), limit });
    }
    nix::mount::mount(Some("overlay"), target, Some("overlay"), nix::mount::MsFlags::empty(), Some(options.as_str()))
        .map_err(|e| RootfsError::Mount { path: target.to_path_buf(), step: "mount", source: e.into() })
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("abc-1.2_3").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "-x", &"a".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }
}
