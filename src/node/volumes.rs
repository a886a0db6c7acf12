//! A pod's volumes, made on the host under the pod's directory before any container
//! starts: emptyDir (a directory, or a tmpfs for medium Memory), hostPath (checked against
//! its type), configMap and secret (their keys written as files; secrets on a tmpfs so they
//! never reach the disk, as the kubelet keeps them). Containers bind-mount what is here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret, Volume};
use nix::mount::MsFlags;

use super::PlanError;
use crate::model::quantity;

/// The kubelet's default for secret files: 0644, so images that run as a non-root user can
/// read them (the directory, a tmpfs, is the pod's alone).
const SECRET_DEFAULT_MODE: u32 = 0o644;
const CONFIG_MAP_DEFAULT_MODE: u32 = 0o644;

/// Where each volume of the pod is on the host.
#[derive(Debug, Default)]
pub struct Volumes {
    pub paths: BTreeMap<String, PathBuf>,
    /// Volumes the kubelet mounts read-only whatever the container asks (configMap, secret).
    pub read_only: BTreeSet<String>,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> PlanError {
    PlanError::io(what)
}

/// Makes every volume of `pod` below `dir` (the pod's `volumes/` directory).
pub fn prepare(
    dir: &Path,
    pod: &Pod,
    config_maps: &BTreeMap<String, ConfigMap>,
    secrets: &BTreeMap<String, Secret>,
) -> Result<Volumes, PlanError> {
    let mut out = Volumes::default();
    let Some(spec) = &pod.spec else { return Ok(out) };
    fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let field = format!("spec.volumes[{i}]");
        let path = prepare_one(dir, v, &field, config_maps, secrets)?;
        out.paths.insert(v.name.clone(), path);
        if v.config_map.is_some() || v.secret.is_some() {
            out.read_only.insert(v.name.clone());
        }
    }
    Ok(out)
}

/// The volumes [`prepare`] made for `pod` below `dir`, found again (a daemon that restarted
/// resumes its pods without making their volumes again: an emptyDir keeps its contents).
pub fn existing(dir: &Path, pod: &Pod) -> Volumes {
    let mut out = Volumes::default();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = match &v.host_path {
            Some(h) => PathBuf::from(&h.path),
            None => dir.join(&v.name),
        };
        out.paths.insert(v.name.clone(), path);
        if v.config_map.is_some() || v.secret.is_some() {
            out.read_only.insert(v.name.clone());
        }
    }
    out
}

fn prepare_one(
    dir: &Path,
    v: &Volume,
    field: &str,
    config_maps: &BTreeMap<String, ConfigMap>,
    secrets: &BTreeMap<String, Secret>,
) -> Result<PathBuf, PlanError> {
    let own = dir.join(&v.name);
    if let Some(e) = &v.empty_dir {
        fs::create_dir(&own).map_err(io(format!("create {}", own.display())))?;
        if e.medium.as_deref() == Some("Memory") {
            let mut data = "mode=0777".to_string();
            if let Some(size) = &e.size_limit {
                let bytes = quantity::memory_bytes(&size.0)
                    .map_err(|m| PlanError::invalid(format!("{field}.emptyDir.sizeLimit"), m))?;
                data.push_str(&format!(",size={bytes}"));
            }
            mount_tmpfs(&own, &data)?;
        } else {
            // The kubelet makes emptyDir world-writable, so any user in the pod may use it.
            fs::set_permissions(&own, fs::Permissions::from_mode(0o777))
                .map_err(io(format!("chmod {}", own.display())))?;
        }
        return Ok(own);
    }
    if let Some(h) = &v.host_path {
        let path = PathBuf::from(&h.path);
        check_host_path(&path, h.type_.as_deref().unwrap_or(""), &format!("{field}.hostPath"))?;
        return Ok(path);
    }
    if let Some(c) = &v.config_map {
        fs::create_dir(&own).map_err(io(format!("create {}", own.display())))?;
        fs::set_permissions(&own, fs::Permissions::from_mode(0o755)).map_err(io(format!("chmod {}", own.display())))?;
        let mode = c.default_mode.map(|m| m as u32).unwrap_or(CONFIG_MAP_DEFAULT_MODE);
        let f = format!("{field}.configMap");
        match config_maps.get(&c.name) {
            Some(cm) => {
                let mut data: BTreeMap<String, Vec<u8>> =
                    cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
                for (k, b) in cm.binary_data.iter().flatten() {
                    data.insert(k.clone(), b.0.clone());
                }
                write_keys(
                    &own,
                    &data,
                    c.items.as_deref(),
                    mode,
                    c.optional == Some(true),
                    &f,
                    &format!("configmap \"{}\"", c.name),
                )?;
            }
            None if c.optional == Some(true) => {}
            None => {
                return Err(PlanError::missing(
                    format!("{f}.name"),
                    format!("configmap \"{}\" not found in the manifest", c.name),
                ));
            }
        }
        return Ok(own);
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        fs::create_dir(&own).map_err(io(format!("create {}", own.display())))?;
        mount_tmpfs(&own, "mode=0755")?;
        let mode = s.default_mode.map(|m| m as u32).unwrap_or(SECRET_DEFAULT_MODE);
        let f = format!("{field}.secret");
        match secrets.get(&name) {
            Some(secret) => {
                let mut data: BTreeMap<String, Vec<u8>> =
                    secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
                for (k, v) in secret.string_data.iter().flatten() {
                    data.insert(k.clone(), v.clone().into_bytes());
                }
                write_keys(
                    &own,
                    &data,
                    s.items.as_deref(),
                    mode,
                    s.optional == Some(true),
                    &f,
                    &format!("secret \"{name}\""),
                )?;
            }
            None if s.optional == Some(true) => {}
            None => {
                return Err(PlanError::missing(
                    format!("{f}.secretName"),
                    format!("secret \"{name}\" not found in the manifest"),
                ));
            }
        }
        return Ok(own);
    }
    Err(PlanError::invalid(
        field.to_string(),
        "must specify exactly one of: emptyDir, hostPath, configMap, secret".into(),
    ))
}

fn mount_tmpfs(target: &Path, data: &str) -> Result<(), PlanError> {
    nix::mount::mount(Some("tmpfs"), target, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(data))
        .map_err(PlanError::errno(format!("mount tmpfs ({data}) on {}", target.display())))
}

/// The hostPath types' checks, in the kubelet's words.
fn check_host_path(path: &Path, kind: &str, field: &str) -> Result<(), PlanError> {
    let meta = fs::metadata(path);
    let bad = |what: &str| {
        Err(PlanError::invalid(
            format!("{field}.path"),
            format!("hostPath type check failed: {} is not {what}", path.display()),
        ))
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => bad("a directory"),
            Err(_) => {
                fs::create_dir_all(path).map_err(io(format!("create {}", path.display())))?;
                fs::set_permissions(path, fs::Permissions::from_mode(0o755))
                    .map_err(io(format!("chmod {}", path.display())))
            }
        },
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => bad("a file"),
            Err(_) => {
                fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(path)
                    .map_err(io(format!("create {}", path.display())))?;
                Ok(())
            }
        },
        "Directory" => {
            if meta.is_ok_and(|m| m.is_dir()) {
                Ok(())
            } else {
                bad("a directory")
            }
        }
        "File" => {
            if meta.is_ok_and(|m| m.is_file()) {
                Ok(())
            } else {
                bad("a file")
            }
        }
        "Socket" => {
            if meta.is_ok_and(|m| m.file_type().is_socket()) {
                Ok(())
            } else {
                bad("a socket file")
            }
        }
        "CharDevice" => {
            if meta.is_ok_and(|m| m.file_type().is_char_device()) {
                Ok(())
            } else {
                bad("a character device")
            }
        }
        "BlockDevice" => {
            if meta.is_ok_and(|m| m.file_type().is_block_device()) {
                Ok(())
            } else {
                bad("a block device")
            }
        }
        other => Err(PlanError::invalid(
            format!("{field}.type"),
            format!(
                "Unsupported value: \"{other}\": supported values: \"\", \"DirectoryOrCreate\", \"Directory\", \"FileOrCreate\", \"File\", \"Socket\", \"CharDevice\", \"BlockDevice\""
            ),
        )),
    }
}

/// A path inside the volume: relative, no `..`, not empty.
fn safe_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))
}

fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: bool,
    field: &str,
    what: &str,
) -> Result<(), PlanError> {
    let files: Vec<(String, &[u8], u32)> = match items {
        None => data.iter().map(|(k, v)| (k.clone(), v.as_slice(), mode)).collect(),
        Some(items) => {
            let mut out = Vec::new();
            for (j, item) in items.iter().enumerate() {
                if !safe_relative(&item.path) {
                    return Err(PlanError::invalid(
                        format!("{field}.items[{j}].path"),
                        format!("Invalid value: \"{}\": must be a relative path without '..'", item.path),
                    ));
                }
                match data.get(&item.key) {
                    Some(v) => out.push((item.path.clone(), v.as_slice(), item.mode.map(|m| m as u32).unwrap_or(mode))),
                    None if optional => {}
                    None => {
                        return Err(PlanError::missing(
                            format!("{field}.items[{j}].key"),
                            format!("key \"{}\" not found in {what}", item.key),
                        ));
                    }
                }
            }
            out
        }
    };
    // The kubelet's atomic layout: the files in a directory named for this write, `..data`
    // a symlink to it, and each top-level name a symlink through `..data`; an update
    // writes a new directory and swaps `..data` in one rename, so a reader never sees half
    // of one version and half of another.
    let stamp = format!(
        "..{}",
        chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()).format("%Y_%m_%d_%H_%M_%S.%9f")
    );
    let version = dir.join(&stamp);
    fs::create_dir(&version).map_err(io(format!("create {}", version.display())))?;
    fs::set_permissions(&version, fs::Permissions::from_mode(0o755))
        .map_err(io(format!("chmod {}", version.display())))?;
    let mut top: BTreeSet<String> = BTreeSet::new();
    for (rel, bytes, mode) in files {
        if !safe_relative(&rel) || rel.starts_with("..") {
            return Err(PlanError::invalid(
                field.to_string(),
                format!("key {rel:?} of {what} is not a valid file name"),
            ));
        }
        let path = version.join(&rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
        }
        // Written with the final mode from the start, so no moment exists where a secret is
        // readable by more than the manifest allows.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o777)
            .open(&path)
            .map_err(io(format!("create {}", path.display())))?;
        f.set_permissions(fs::Permissions::from_mode(mode & 0o777)).map_err(io(format!("chmod {}", path.display())))?;
        f.write_all(bytes).map_err(io(format!("write {}", path.display())))?;
        if let Some(first) = Path::new(&rel).components().next() {
            top.insert(first.as_os_str().to_string_lossy().into_owned());
        }
    }
    let tmp_link = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&stamp, &tmp_link).map_err(io(format!("link {}", tmp_link.display())))?;
    fs::rename(&tmp_link, dir.join("..data")).map_err(io(format!("rename {}", tmp_link.display())))?;
    for name in top {
        let link = dir.join(&name);
        std::os::unix::fs::symlink(Path::new("..data").join(&name), &link)
            .map_err(io(format!("link {}", link.display())))?;
    }
    Ok(())
}
