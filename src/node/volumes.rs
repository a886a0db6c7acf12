//! A pod's volumes, made on the host under the pod's directory before any container
//! starts: emptyDir (a directory, or a tmpfs for medium Memory), hostPath (checked against
//! its type), configMap and secret (their keys written as files; secrets on a tmpfs so they
//! never reach the disk, as the kubelet keeps them), downwardAPI (the pod's own fields and
//! its containers' resources) and projected (any of those, and a service account token, in
//! one directory, on a tmpfs). Containers bind-mount what is here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret, Volume,
};
use nix::mount::MsFlags;

use super::PlanError;
use crate::model::manifest::Manifest;
use crate::model::quantity;

/// The kubelet's default for secret files: 0644, so images that run as a non-root user can
/// read them (the directory, a tmpfs, is the pod's alone).
const SECRET_DEFAULT_MODE: u32 = 0o644;
const CONFIG_MAP_DEFAULT_MODE: u32 = 0o644;
/// A projected service account token's mode when none is given: the kubelet's 0600 would
/// keep it from a non-root process only where fsGroup is set, which nodectl does not do yet,
/// so the volume's mode applies as for any other projected file.
const PROJECTED_DEFAULT_MODE: u32 = 0o644;

/// Where each volume of the pod is on the host.
#[derive(Debug, Default)]
pub struct Volumes {
    pub paths: BTreeMap<String, PathBuf>,
    /// Volumes the kubelet mounts read-only whatever the container asks (configMap, secret,
    /// downwardAPI, projected).
    pub read_only: BTreeSet<String>,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> PlanError {
    PlanError::io(what)
}

/// Whether `v` holds files made from the pod's sources (configMap, secret, downwardAPI,
/// projected): those the kubelet mounts read-only in every container, and keeps up to date.
pub fn from_sources(v: &Volume) -> bool {
    v.config_map.is_some() || v.secret.is_some() || v.downward_api.is_some() || v.projected.is_some()
}

/// Makes every volume of the manifest's pod below `dir` (the pod's `volumes/` directory).
pub fn prepare(dir: &Path, manifest: &Manifest) -> Result<Volumes, PlanError> {
    let mut out = Volumes::default();
    let pod = &manifest.pod;
    let Some(spec) = &pod.spec else { return Ok(out) };
    fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let field = format!("spec.volumes[{i}]");
        let path = prepare_one(dir, v, &field, manifest)?;
        out.paths.insert(v.name.clone(), path);
        if from_sources(v) {
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
        if from_sources(v) {
            out.read_only.insert(v.name.clone());
        }
    }
    out
}

/// Brings the configMap, secret, downwardAPI and projected volumes that [`prepare`] made
/// below `dir` up to the manifest's sources (a ConfigMap changed in the API, a label of the
/// pod, a renewed token), as the kubelet's sync does; a volume not written yet is left to
/// [`prepare`]. Returns the volumes whose files changed, and why others could not be
/// brought up to date (their files stay as they were, as the kubelet keeps them while a
/// source is missing).
pub fn refresh(dir: &Path, manifest: &Manifest) -> (Vec<String>, Vec<PlanError>) {
    let (mut changed, mut errors) = (Vec::new(), Vec::new());
    for (i, v) in manifest.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).enumerate() {
        let own = dir.join(&v.name);
        if fs::symlink_metadata(own.join("..data")).is_err() {
            continue;
        }
        let written = match source_files(v, &format!("spec.volumes[{i}]"), manifest) {
            Some(Ok((files, f))) => write_files(&own, files, &f),
            Some(Err(e)) => Err(e),
            None => continue,
        };
        match written {
            Ok(true) => changed.push(v.name.clone()),
            Ok(false) => {}
            Err(e) => errors.push(e),
        }
    }
    (changed, errors)
}

fn prepare_one(dir: &Path, v: &Volume, field: &str, manifest: &Manifest) -> Result<PathBuf, PlanError> {
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
    // The rest hold files from the pod's sources, written as the kubelet's atomic writer
    // does; secrets and projections (which may hold a token) on a tmpfs, never the disk.
    let on_tmpfs = v.secret.is_some() || v.projected.is_some();
    let Some(files) = source_files(v, field, manifest) else {
        return Err(PlanError::invalid(
            field.to_string(),
            "must specify exactly one of: emptyDir, hostPath, configMap, secret, downwardAPI, projected".into(),
        ));
    };
    let (files, f) = files?;
    fs::create_dir(&own).map_err(io(format!("create {}", own.display())))?;
    if on_tmpfs {
        mount_tmpfs(&own, "mode=0755")?;
    } else {
        fs::set_permissions(&own, fs::Permissions::from_mode(0o755)).map_err(io(format!("chmod {}", own.display())))?;
    }
    write_files(&own, files, &f)?;
    Ok(own)
}

/// The files of a configMap, secret, downwardAPI or projected volume as its sources are
/// now, with the field that names the volume's kind in errors; None for other kinds.
fn source_files(v: &Volume, field: &str, manifest: &Manifest) -> Option<Result<(Vec<File>, String), PlanError>> {
    let files = if let Some(c) = &v.config_map {
        let mode = c.default_mode.map(|m| m as u32).unwrap_or(CONFIG_MAP_DEFAULT_MODE);
        let f = format!("{field}.configMap");
        key_files(
            config_map_source(&manifest.config_maps, &c.name),
            c.items.as_deref(),
            mode,
            c.optional == Some(true),
            &format!("{f}.name"),
            &f,
        )
        .map(|files| (files, f))
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let mode = s.default_mode.map(|m| m as u32).unwrap_or(SECRET_DEFAULT_MODE);
        let f = format!("{field}.secret");
        key_files(
            secret_source(&manifest.secrets, &name),
            s.items.as_deref(),
            mode,
            s.optional == Some(true),
            &format!("{f}.secretName"),
            &f,
        )
        .map(|files| (files, f))
    } else if let Some(d) = &v.downward_api {
        let mode = d.default_mode.map(|m| m as u32).unwrap_or(CONFIG_MAP_DEFAULT_MODE);
        let f = format!("{field}.downwardAPI");
        downward_files(&manifest.pod, d.items.as_deref().unwrap_or_default(), mode, &f).map(|files| (files, f))
    } else if let Some(p) = &v.projected {
        let f = format!("{field}.projected");
        projected_files(v, p, manifest, &f).map(|files| (files, f))
    } else {
        return None;
    };
    Some(files)
}

fn projected_files(
    v: &Volume,
    p: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
    manifest: &Manifest,
    f: &str,
) -> Result<Vec<File>, PlanError> {
    let mode = p.default_mode.map(|m| m as u32).unwrap_or(PROJECTED_DEFAULT_MODE);
    let mut files = Vec::new();
    for (j, source) in p.sources.iter().flatten().enumerate() {
        let sf = format!("{f}.sources[{j}]");
        let keyed = match (&source.config_map, &source.secret) {
            (Some(c), _) => Some((
                config_map_source(&manifest.config_maps, &c.name),
                c.items.as_deref(),
                c.optional,
                format!("{sf}.configMap"),
            )),
            (None, Some(s)) => Some((
                secret_source(&manifest.secrets, &s.name),
                s.items.as_deref(),
                s.optional,
                format!("{sf}.secret"),
            )),
            (None, None) => None,
        };
        if let Some((keys, items, optional, at)) = keyed {
            files.extend(key_files(keys, items, mode, optional == Some(true), &format!("{at}.name"), &at)?);
        } else if let Some(d) = &source.downward_api {
            files.extend(downward_files(
                &manifest.pod,
                d.items.as_deref().unwrap_or_default(),
                mode,
                &format!("{sf}.downwardAPI"),
            )?);
        } else if let Some(t) = &source.service_account_token {
            let at = format!("{sf}.serviceAccountToken");
            let Some(token) = manifest.tokens.get(&token_key(&v.name, &t.path)) else {
                return Err(PlanError::invalid(
                    at,
                    "a service account token comes from a cluster's API server: only a joined node \
                     (nodectl daemon --server) can project one"
                        .into(),
                ));
            };
            files.push((t.path.clone(), token.clone().into_bytes(), mode));
        } else {
            return Err(PlanError::invalid(
                sf,
                "must specify exactly one of: configMap, secret, downwardAPI, serviceAccountToken".into(),
            ));
        }
    }
    Ok(files)
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

/// Where a projected volume's service account token is kept in [`Manifest::tokens`].
pub fn token_key(volume: &str, path: &str) -> String {
    format!("{volume}/{path}")
}

/// A file to write in a volume: its path inside the volume, its bytes and its mode.
type File = (String, Vec<u8>, u32);

/// A ConfigMap or Secret a volume names: how messages call it, and its keys' bytes when
/// the manifest (or, on a joined node, the API) has it.
struct KeySource<'a> {
    kind: &'static str,
    name: &'a str,
    data: Option<BTreeMap<String, Vec<u8>>>,
}

fn config_map_source<'a>(maps: &BTreeMap<String, ConfigMap>, name: &'a str) -> KeySource<'a> {
    let data = maps.get(name).map(|cm| {
        let mut data: BTreeMap<String, Vec<u8>> =
            cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
        data.extend(cm.binary_data.iter().flatten().map(|(k, b)| (k.clone(), b.0.clone())));
        data
    });
    KeySource { kind: "configmap", name, data }
}

fn secret_source<'a>(secrets: &BTreeMap<String, Secret>, name: &'a str) -> KeySource<'a> {
    let data = secrets.get(name).map(|secret| {
        let mut data: BTreeMap<String, Vec<u8>> =
            secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        data.extend(secret.string_data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())));
        data
    });
    KeySource { kind: "secret", name, data }
}

/// The files of a source's keys (or of `items` of them); none for a missing optional one.
fn key_files(
    source: KeySource,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: bool,
    name_field: &str,
    field: &str,
) -> Result<Vec<File>, PlanError> {
    let what = format!("{} \"{}\"", source.kind, source.name);
    let Some(data) = source.data else {
        if optional {
            return Ok(Vec::new());
        }
        return Err(PlanError::missing(name_field.into(), format!("{what} not found in the manifest")));
    };
    select(&data, items, mode, optional, field, &what)
}

fn select(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: bool,
    field: &str,
    what: &str,
) -> Result<Vec<File>, PlanError> {
    let Some(items) = items else {
        return Ok(data.iter().map(|(k, v)| (k.clone(), v.clone(), mode)).collect());
    };
    let mut out = Vec::new();
    for (j, item) in items.iter().enumerate() {
        if !safe_relative(&item.path) {
            return Err(PlanError::invalid(
                format!("{field}.items[{j}].path"),
                format!("Invalid value: \"{}\": must be a relative path without '..'", item.path),
            ));
        }
        match data.get(&item.key) {
            Some(v) => out.push((item.path.clone(), v.clone(), item.mode.map(|m| m as u32).unwrap_or(mode))),
            None if optional => {}
            None => {
                return Err(PlanError::missing(
                    format!("{field}.items[{j}].key"),
                    format!("key \"{}\" not found in {what}", item.key),
                ));
            }
        }
    }
    Ok(out)
}

/// The files of a downward API volume (or projection): the pod's own fields and its
/// containers' resources, as the kubelet writes them.
fn downward_files(pod: &Pod, items: &[DownwardAPIVolumeFile], mode: u32, field: &str) -> Result<Vec<File>, PlanError> {
    let mut out = Vec::new();
    for (j, item) in items.iter().enumerate() {
        let at = format!("{field}.items[{j}]");
        if !safe_relative(&item.path) {
            return Err(PlanError::invalid(
                format!("{at}.path"),
                format!("Invalid value: \"{}\": must be a relative path without '..'", item.path),
            ));
        }
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), None) => pod_field(pod, f, &format!("{at}.fieldRef"))?,
            (None, Some(r)) => container_resource(pod, r, &format!("{at}.resourceFieldRef"))?,
            _ => {
                return Err(PlanError::invalid(at, "must specify exactly one of: fieldRef, resourceFieldRef".into()));
            }
        };
        out.push((item.path.clone(), value.into_bytes(), item.mode.map(|m| m as u32).unwrap_or(mode)));
    }
    Ok(out)
}

/// A map as the kubelet writes labels and annotations: `key="value"` lines in key order,
/// the value quoted as Go's %q quotes it.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let lines: Vec<String> =
        map.into_iter().flatten().map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone()))).collect();
    lines.join("\n")
}

/// What a downward API volume may show of the pod (the kubelet allows the metadata only in
/// volumes: the rest may change while the files stay).
fn pod_field(pod: &Pod, f: &ObjectFieldSelector, field: &str) -> Result<String, PlanError> {
    let m = &pod.metadata;
    let path = f.field_path.as_str();
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix).and_then(|rest| rest.strip_prefix("['")).and_then(|rest| rest.strip_suffix("']"))
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_else(|| "default".into()),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        _ if subscript("metadata.labels").is_some() => {
            let key = subscript("metadata.labels").unwrap_or_default();
            m.labels.as_ref().and_then(|l| l.get(key)).cloned().unwrap_or_default()
        }
        _ if subscript("metadata.annotations").is_some() => {
            let key = subscript("metadata.annotations").unwrap_or_default();
            m.annotations.as_ref().and_then(|l| l.get(key)).cloned().unwrap_or_default()
        }
        other => {
            return Err(PlanError::invalid(
                format!("{field}.fieldPath"),
                format!(
                    "Unsupported value: \"{other}\": supported values: \"metadata.annotations\", \"metadata.labels\", \"metadata.name\", \"metadata.namespace\", \"metadata.uid\""
                ),
            ));
        }
    })
}

/// A container's cpu or memory limit or request in units of the divisor, rounded up as the
/// kubelet rounds it. A limit the container does not set is the node's capacity, as the
/// kubelet reports its allocatable.
fn container_resource(pod: &Pod, r: &ResourceFieldSelector, field: &str) -> Result<String, PlanError> {
    let spec = pod.spec.as_ref();
    let containers = spec.into_iter().flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()));
    let name = r.container_name.as_deref().unwrap_or_default();
    let Some(c) = containers.into_iter().find(|c| c.name == name) else {
        return Err(PlanError::invalid(
            format!("{field}.containerName"),
            format!("Invalid value: \"{name}\": must name a container of the pod"),
        ));
    };
    let (which, resource) = r.resource.split_once('.').unwrap_or(("", ""));
    let set = c.resources.as_ref().and_then(|res| match which {
        "limits" => res.limits.as_ref(),
        "requests" => res.requests.as_ref(),
        _ => None,
    });
    let given = set.and_then(|m| m.get(resource)).map(|q| q.0.clone());
    // An unset request is the limit if there is one (the API's defaulting), else 0.
    let given = given.or_else(|| {
        (which == "requests")
            .then(|| c.resources.as_ref().and_then(|res| res.limits.as_ref()).and_then(|l| l.get(resource)))
            .flatten()
            .map(|q| q.0.clone())
    });
    let divisor = r.divisor.as_ref().map(|d| d.0.as_str()).unwrap_or("1");
    let bad = |m: String| PlanError::invalid(field.to_string(), m);
    match (which, resource) {
        ("limits" | "requests", "cpu") => {
            let millis = match given {
                Some(q) => quantity::cpu_millis(&q).map_err(bad)?,
                None if which == "requests" => 0,
                None => 1000 * std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1),
            };
            let per = quantity::cpu_millis(divisor).map_err(bad)?.max(1);
            Ok(((millis + per - 1) / per).to_string())
        }
        ("limits" | "requests", "memory" | "ephemeral-storage") => {
            let bytes = match given {
                Some(q) => quantity::memory_bytes(&q).map_err(bad)?,
                None if which == "requests" => 0,
                None if resource == "memory" => host_memory_bytes(),
                None => 0,
            };
            let per = quantity::memory_bytes(divisor).map_err(bad)?.max(1);
            Ok(((bytes + per - 1) / per).to_string())
        }
        _ => Err(PlanError::invalid(
            format!("{field}.resource"),
            format!(
                "Unsupported value: \"{}\": supported values: \"limits.cpu\", \"limits.ephemeral-storage\", \"limits.memory\", \"requests.cpu\", \"requests.ephemeral-storage\", \"requests.memory\"",
                r.resource
            ),
        )),
    }
}

/// MemTotal of /proc/meminfo, in bytes (0 if unreadable).
fn host_memory_bytes() -> i64 {
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// Writes `files` in `dir` in the kubelet's atomic layout, or brings what an earlier write
/// left there up to them; Ok(false) when that was so already.
fn write_files(dir: &Path, files: Vec<File>, field: &str) -> Result<bool, PlanError> {
    // The kubelet's atomic layout: the files in a directory named for this write, `..data`
    // a symlink to it, and each top-level name a symlink through `..data`; an update
    // writes a new directory and swaps `..data` in one rename, so a reader never sees half
    // of one version and half of another. An update that changes nothing writes nothing.
    let data = dir.join("..data");
    let old = fs::read_link(&data).ok().filter(|o| o.components().count() == 1);
    if let Some(old) = &old
        && same_files(&dir.join(old), &files)
    {
        return Ok(false);
    }
    let stamp = format!(
        "..{}",
        chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()).format("%Y_%m_%d_%H_%M_%S.%9f")
    );
    let version = dir.join(&stamp);
    fs::create_dir(&version).map_err(io(format!("create {}", version.display())))?;
    let top = match write_version(&version, files, field) {
        Ok(top) => top,
        Err(e) => {
            let _ = fs::remove_dir_all(&version);
            return Err(e);
        }
    };
    let tmp_link = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link).map_err(io(format!("link {}", tmp_link.display())))?;
    fs::rename(&tmp_link, &data).map_err(io(format!("rename {}", tmp_link.display())))?;
    for name in &top {
        let link = dir.join(name);
        // Made already by an earlier version, or by a refresh that came in between.
        match std::os::unix::fs::symlink(Path::new("..data").join(name), &link) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(PlanError::io(format!("link {}", link.display()))(e));
            }
            _ => {}
        }
    }
    if let Some(old) = old {
        // Names the new version no longer has lose their links, then the old version goes.
        for entry in fs::read_dir(dir).map_err(io(format!("read {}", dir.display())))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !top.contains(&name) && entry.file_type().is_ok_and(|t| t.is_symlink()) {
                fs::remove_file(entry.path()).map_err(io(format!("remove {}", entry.path().display())))?;
            }
        }
        let old = dir.join(old);
        fs::remove_dir_all(&old).map_err(io(format!("remove {}", old.display())))?;
    }
    Ok(true)
}

/// Writes `files` into the new, empty directory `version`; returns their top-level names.
fn write_version(version: &Path, files: Vec<File>, field: &str) -> Result<BTreeSet<String>, PlanError> {
    fs::set_permissions(version, fs::Permissions::from_mode(0o755))
        .map_err(io(format!("chmod {}", version.display())))?;
    let mut top: BTreeSet<String> = BTreeSet::new();
    for (rel, bytes, mode) in files {
        if !safe_relative(&rel) || rel.starts_with("..") {
            return Err(PlanError::invalid(field.to_string(), format!("{rel:?} is not a valid file name")));
        }
        let path = version.join(&rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
        }
        // Written with the final mode from the start, so no moment exists where a secret is
        // readable by more than the manifest allows.
        let mut f =
            fs::OpenOptions::new().write(true).create_new(true).mode(mode & 0o777).open(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    PlanError::invalid(field.to_string(), format!("conflicting duplicate paths: {rel:?}"))
                } else {
                    PlanError::io(format!("create {}", path.display()))(e)
                }
            })?;
        f.set_permissions(fs::Permissions::from_mode(mode & 0o777)).map_err(io(format!("chmod {}", path.display())))?;
        f.write_all(&bytes).map_err(io(format!("write {}", path.display())))?;
        if let Some(first) = Path::new(&rel).components().next() {
            top.insert(first.as_os_str().to_string_lossy().into_owned());
        }
    }
    Ok(top)
}

/// Whether the written version `version` holds exactly `files` (paths, bytes and modes).
fn same_files(version: &Path, files: &[File]) -> bool {
    let mut want: Vec<(PathBuf, &[u8], u32)> = files
        .iter()
        .map(|(rel, bytes, mode)| (Path::new(rel).components().collect(), &bytes[..], mode & 0o777))
        .collect();
    want.sort();
    let mut have: Vec<(PathBuf, Vec<u8>, u32)> = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let Ok(entries) = fs::read_dir(version.join(&rel)) else { return false };
        for entry in entries.flatten() {
            let (path, rel) = (entry.path(), rel.join(entry.file_name()));
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(rel),
                Ok(t) if t.is_file() => {
                    let (Ok(bytes), Ok(meta)) = (fs::read(&path), entry.metadata()) else { return false };
                    have.push((rel, bytes, meta.permissions().mode() & 0o777));
                }
                _ => return false,
            }
        }
    }
    have.sort();
    have.len() == want.len() && have.iter().zip(&want).all(|(h, w)| (&h.0, &h.1[..], h.2) == (&w.0, w.1, w.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(greeting: &str, extra_key: Option<&str>, tier: &str) -> Manifest {
        let extra = extra_key.map(|k| format!("  {k}: more\n")).unwrap_or_default();
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, labels: {{tier: {tier}}}}}\nspec:\n  containers: [{{name: c, image: busybox}}]\n  volumes:\n  - {{name: config, configMap: {{name: greeting}}}}\n  - {{name: info, downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}}}\n  - {{name: scratch, emptyDir: {{}}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: greeting}}\ndata:\n  text: {greeting}\n{extra}"
        );
        crate::model::manifest::parse("test", &text).unwrap()
    }

    fn versions(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != "..data")
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_refresh_rewrites_only_the_volumes_whose_sources_changed_and_drops_gone_keys() {
        let dir = tempfile::tempdir().unwrap();
        let first = manifest("hello", Some("extra"), "front");
        prepare(dir.path(), &first).unwrap();
        let (config, info) = (dir.path().join("config"), dir.path().join("info"));
        assert_eq!(fs::read_to_string(config.join("text")).unwrap(), "hello");
        assert_eq!(fs::read_to_string(config.join("extra")).unwrap(), "more");
        let (config_v1, info_v1) = (versions(&config), versions(&info));

        // Nothing changed: nothing is written.
        let (changed, errors) = refresh(dir.path(), &first);
        assert!(changed.is_empty() && errors.is_empty(), "{changed:?} {errors:?}");
        assert_eq!((versions(&config), versions(&info)), (config_v1.clone(), info_v1.clone()));

        // The ConfigMap changed (a key changed, one gone): only its volume is rewritten, in
        // a new version that replaced the old one, and the gone key's link is gone.
        let second = manifest("bye", None, "front");
        let (changed, errors) = refresh(dir.path(), &second);
        assert_eq!(changed, ["config"], "{errors:?}");
        assert_eq!(fs::read_to_string(config.join("text")).unwrap(), "bye");
        assert!(fs::symlink_metadata(config.join("extra")).is_err(), "the gone key's file is gone");
        let config_v2 = versions(&config);
        assert_eq!(config_v2.len(), 1);
        assert_ne!(config_v2, config_v1);
        assert_eq!(versions(&info), info_v1);

        // A label changed: the downward API's file follows; a new key gets its link.
        let third = manifest("bye", Some("added"), "back");
        let (changed, _) = refresh(dir.path(), &third);
        assert_eq!(changed, ["config", "info"]);
        assert_eq!(fs::read_to_string(info.join("labels")).unwrap(), "tier=\"back\"");
        assert_eq!(fs::read_to_string(config.join("added")).unwrap(), "more");
        assert!(fs::read_dir(dir.path().join("scratch")).unwrap().next().is_none(), "the emptyDir is not touched");

        // A volume not written yet is left to prepare.
        let later = tempfile::tempdir().unwrap();
        fs::create_dir(later.path().join("config")).unwrap();
        assert!(refresh(later.path(), &third).0.is_empty());
        assert!(fs::read_dir(later.path().join("config")).unwrap().next().is_none());
    }
}
