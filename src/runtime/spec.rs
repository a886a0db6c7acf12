//! The OCI runtime spec (a bundle's config.json) read with oci-spec's types and turned,
//! once, into the plain [`Config`] the rest of the runtime works from. Every check that
//! can be made before a process exists is made here, so a bad bundle fails `create` with
//! a message that names the field, and the container's init has nothing left to parse.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxCapabilities, LinuxNamespaceType, Process, Spec};

use super::cgroups::{DeviceRule, Resources, Throttle, ThrottleKind, WeightDevice};
use crate::sys::mount::MountAttr;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {field}: {message}")]
    Parse { path: PathBuf, field: String, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid { path: PathBuf, field: String, message: String },
}

/// A namespace the container gets: a new one, or the one at `path` to join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub kind: LinuxNamespaceType,
    pub path: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMap {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// One mount, options already split into flags, propagation and filesystem data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    pub destination: PathBuf,
    pub fstype: String,
    pub source: Option<PathBuf>,
    pub flags: MsFlags,
    /// MS_SHARED, MS_SLAVE, … (with MS_REC) applied after the mount, in order.
    pub propagation: Vec<MsFlags>,
    /// Attributes set and cleared on the mount and every mount below it (`rro`, `rnoexec`,
    /// `rnosuid`, …, runc's recursive options), through mount_setattr with AT_RECURSIVE.
    pub recursive: MountAttr,
    pub data: String,
}

impl MountSpec {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub path: PathBuf,
    /// 'c', 'b' or 'p'.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The five capability sets, as kernel capability lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: Vec<caps::Capability>,
    pub effective: Vec<caps::Capability>,
    pub permitted: Vec<caps::Capability>,
    pub inheritable: Vec<caps::Capability>,
    pub ambient: Vec<caps::Capability>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: libc::__rlimit_resource_t,
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// What the container's process (or an exec'd one) runs as and with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessConfig {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub rlimits: Vec<Rlimit>,
    pub caps: Option<CapSets>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i32>,
    pub terminal: bool,
    pub console_size: Option<(u16, u16)>,
    /// The AppArmor profile the program starts under (None: as the runtime was).
    pub apparmor_profile: Option<String>,
}

/// One hook; also kept in the container's record for the hooks `start` and `delete` run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hook {
    pub path: PathBuf,
    pub args: Vec<String>,
    /// None when the spec gives no `env`: a hook run in the container then gets the
    /// process's environment, as with runc (Go's exec with a nil Env).
    pub env: Option<Vec<String>>,
    pub timeout: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    pub prestart: Vec<Hook>,
    pub create_runtime: Vec<Hook>,
    pub create_container: Vec<Hook>,
    pub start_container: Vec<Hook>,
    pub poststart: Vec<Hook>,
    pub poststop: Vec<Hook>,
}

/// A checked bundle: everything `create` needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub readonly_root: bool,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub namespaces: Vec<Namespace>,
    pub uid_maps: Vec<IdMap>,
    pub gid_maps: Vec<IdMap>,
    pub mounts: Vec<MountSpec>,
    pub devices: Vec<Device>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// Propagation of the container's mount tree ("rootfsPropagation"), default rslave.
    pub rootfs_propagation: MsFlags,
    pub sysctls: BTreeMap<String, String>,
    pub process: ProcessConfig,
    pub resources: Resources,
    pub cgroups_path: Option<String>,
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    pub hooks: Hooks,
    pub annotations: BTreeMap<String, String>,
    pub oci_version: String,
}

impl Config {
    pub fn namespace(&self, kind: LinuxNamespaceType) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.kind == kind)
    }

    /// Whether the container gets a namespace of its own (new) of this kind.
    pub fn new_namespace(&self, kind: LinuxNamespaceType) -> bool {
        self.namespace(kind).is_some_and(|n| n.path.is_none())
    }
}

/// Reads `<bundle>/config.json`.
pub fn load(bundle: &Path) -> Result<Config, SpecError> {
    let path = bundle.join("config.json");
    let text = fs::read(&path).map_err(|source| SpecError::Read { path: path.clone(), source })?;
    let spec = parse(&path, &text)?;
    let bundle = bundle.canonicalize().map_err(|source| SpecError::Read { path: bundle.to_path_buf(), source })?;
    from_spec(&path, &bundle, &spec)
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &[u8]) -> Result<T, SpecError> {
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        SpecError::Parse {
            path: path.to_path_buf(),
            field: if field == "." { "(document)".into() } else { field },
            message: e.into_inner().to_string(),
        }
    })
}

/// Reads a process.json as `exec --process` takes it.
pub fn load_process(path: &Path) -> Result<ProcessConfig, SpecError> {
    let text = fs::read(path).map_err(|source| SpecError::Read { path: path.to_path_buf(), source })?;
    // runc takes a process.json without "user" as uid 0, gid 0 (Go's zero value), and
    // tools write them so (runc's tty.bats); the OCI type insists on the field.
    let mut doc: serde_json::Value = parse(path, &text)?;
    if let Some(obj) = doc.as_object_mut() {
        obj.entry("user").or_insert_with(|| serde_json::json!({"uid": 0, "gid": 0}));
    }
    let text = serde_json::to_vec(&doc).map_err(|e| SpecError::Parse {
        path: path.to_path_buf(),
        field: "(document)".into(),
        message: e.to_string(),
    })?;
    let process: Process = parse(path, &text)?;
    process_config(&Checker { path }, &process, "")
}

struct Checker<'a> {
    path: &'a Path,
}

impl Checker<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError::Invalid { path: self.path.to_path_buf(), field: field.into(), message: message.into() }
    }
}

fn from_spec(path: &Path, bundle: &Path, spec: &Spec) -> Result<Config, SpecError> {
    let ck = Checker { path };
    if spec.version().is_empty() {
        return Err(ck.err("ociVersion", "is required"));
    }
    let root = spec.root().as_ref().ok_or_else(|| ck.err("root", "is required"))?;
    let rootfs = if root.path().is_absolute() { root.path().clone() } else { bundle.join(root.path()) };
    if !rootfs.is_dir() {
        return Err(ck.err("root.path", format!("{} is not a directory", rootfs.display())));
    }
    let process = spec.process().as_ref().ok_or_else(|| ck.err("process", "is required"))?;
    let process = process_config(&ck, process, "process.")?;

    let linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces: Vec<Namespace> = Vec::new();
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        if namespaces.iter().any(|n| n.kind == ns.typ()) {
            return Err(ck.err(format!("linux.namespaces[{i}].type"), format!("{} is listed twice", ns.typ())));
        }
        if ns.path().as_ref().is_some_and(|p| !p.is_absolute()) {
            return Err(ck.err(format!("linux.namespaces[{i}].path"), "must be absolute"));
        }
        namespaces.push(Namespace { kind: ns.typ(), path: ns.path().clone() });
    }
    let maps = |list: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> Vec<IdMap> {
        list.iter()
            .flatten()
            .map(|m| IdMap { container: m.container_id(), host: m.host_id(), size: m.size() })
            .collect()
    };
    let uid_maps = maps(linux.uid_mappings());
    let gid_maps = maps(linux.gid_mappings());
    let new_userns = namespaces.iter().any(|n| n.kind == LinuxNamespaceType::User && n.path.is_none());
    if new_userns && (uid_maps.is_empty() || gid_maps.is_empty()) {
        return Err(ck.err("linux.uidMappings", "a new user namespace needs uidMappings and gidMappings"));
    }
    if !new_userns && (!uid_maps.is_empty() || !gid_maps.is_empty()) {
        return Err(ck.err("linux.uidMappings", "id mappings need a new user namespace in linux.namespaces"));
    }
    if !namespaces.iter().any(|n| n.kind == LinuxNamespaceType::Mount) {
        // The spec says a namespace left out is inherited. As runc does, the container
        // then shares our mount namespace and is only chrooted into its root: anything
        // that needs a mount would be made on the host, so it is refused, except the
        // mounts list, which runc ignores there (generated specs always have one).
        let needs_mounts = [
            ("linux.maskedPaths", linux.masked_paths().as_ref().is_some_and(|v| !v.is_empty())),
            ("linux.readonlyPaths", linux.readonly_paths().as_ref().is_some_and(|v| !v.is_empty())),
            ("linux.devices", linux.devices().as_ref().is_some_and(|v| !v.is_empty())),
            ("root.readonly", root.readonly().unwrap_or(false)),
        ];
        if let Some((field, _)) = needs_mounts.iter().find(|(_, set)| *set) {
            return Err(
                ck.err(*field, "needs a mount namespace of its own (add {\"type\": \"mount\"} to linux.namespaces)")
            );
        }
        if spec.mounts().as_ref().is_some_and(|m| !m.is_empty()) {
            tracing::warn!("no mount namespace: the mounts list is not applied (it would mount on the host)");
        }
    }

    let mut mounts = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        mounts.push(mount_spec(&ck, i, m)?);
    }
    let mut devices = Vec::new();
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        let field = format!("linux.devices[{i}]");
        if !d.path().is_absolute() {
            return Err(ck.err(format!("{field}.path"), "must be absolute"));
        }
        let kind = match d.typ().as_str() {
            "c" | "u" => 'c',
            "b" => 'b',
            "p" => 'p',
            other => return Err(ck.err(format!("{field}.type"), format!("{other:?} is not one of c, u, b, p"))),
        };
        devices.push(Device {
            path: d.path().clone(),
            kind,
            major: d.major(),
            minor: d.minor(),
            mode: d.file_mode().unwrap_or(0o666),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    let rootfs_propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        Some(p) => propagation_flag(p).ok_or_else(|| {
            ck.err(
                "linux.rootfsPropagation",
                format!("{p:?} is not a propagation (shared, slave, private, unbindable, with an optional r)"),
            )
        })?,
    };
    let mut sysctls = BTreeMap::new();
    for (k, v) in linux.sysctl().iter().flatten() {
        if k.is_empty() || k.contains("..") || k.starts_with('/') {
            return Err(ck.err(format!("linux.sysctl.{k}"), "is not a sysctl name"));
        }
        // A sysctl outside the container's own namespaces would change the host for
        // everyone (kernel.printk_ratelimit did): refused, as runc refuses it.
        let own = sysctl_namespace(k).filter(|kind| {
            namespaces.iter().any(|n| {
                n.kind == *kind && n.path.as_deref().is_none_or(|p| !super::namespaces::same_as_ours(*kind, p))
            })
        });
        if own.is_none() {
            let why = match sysctl_namespace(k) {
                Some(LinuxNamespaceType::Network) => {
                    "needs a network namespace of the container's own (not the host's)".to_string()
                }
                Some(kind) => format!("needs a {kind} namespace of the container's own (not the host's)"),
                None => "is not in a separate kernel namespace: it would change the host".to_string(),
            };
            return Err(ck.err(format!("linux.sysctl.{k}"), why));
        }
        sysctls.insert(k.clone(), v.clone());
    }
    let mut resources =
        linux.resources().as_ref().map(|r| resources(&ck, "linux.resources", r)).transpose()?.unwrap_or_default();
    // As runc's specconv builds them: every device denied, then the spec's own rules, then
    // the standard nodes. A node in linux.devices gets no access of its own: opening it is
    // up to linux.resources.devices alone (an rwm rule for each one let a container whose
    // spec denied everything write the host's /dev/kmsg). The init makes the nodes inside
    // its cgroup, so each may be made (`m`), which runc allows for every device.
    let spec_rules = std::mem::take(&mut resources.devices);
    let make_nodes = devices.iter().filter(|d| d.kind != 'p').map(|d| DeviceRule {
        allow: true,
        kind: d.kind,
        major: Some(d.major),
        minor: Some(d.minor),
        access: "m".into(),
    });
    resources.devices = std::iter::once(deny_all_devices())
        .chain(spec_rules)
        .chain(always_allowed_devices())
        .chain(make_nodes)
        .collect();
    let cgroups_path = linux.cgroups_path().as_ref().map(|p| p.to_string_lossy().into_owned());
    if let Some(p) = &cgroups_path {
        // systemd-style "slice:prefix:name" is accepted (as runc does with --systemd-cgroup)
        // by taking it as a plain path below our own cgroup.
        if p.contains(':') && p.split(':').count() != 3 {
            return Err(ck.err("linux.cgroupsPath", "is neither a path nor slice:prefix:name"));
        }
    }
    let hooks = spec.hooks().as_ref().map(hooks).unwrap_or_default();
    Ok(Config {
        bundle: bundle.to_path_buf(),
        rootfs,
        readonly_root: root.readonly().unwrap_or(false),
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        domainname: spec.domainname().clone().filter(|h| !h.is_empty()),
        namespaces,
        uid_maps,
        gid_maps,
        mounts,
        devices,
        masked_paths: linux.masked_paths().clone().unwrap_or_default(),
        readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
        rootfs_propagation,
        sysctls,
        process,
        resources,
        cgroups_path,
        seccomp: linux.seccomp().clone(),
        hooks,
        annotations: spec.annotations().iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect(),
        oci_version: spec.version().clone(),
    })
}

fn process_config(ck: &Checker<'_>, p: &Process, prefix: &str) -> Result<ProcessConfig, SpecError> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(ck.err(format!("{prefix}args"), "must name the program to run"));
    }
    if !p.cwd().is_absolute() {
        return Err(ck.err(format!("{prefix}cwd"), "must be an absolute path"));
    }
    let mut rlimits: Vec<Rlimit> = Vec::new();
    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        let name = r.typ().to_string();
        let resource = rlimit_resource(&name)
            .ok_or_else(|| ck.err(format!("{prefix}rlimits[{i}].type"), format!("{name} is not a resource limit")))?;
        if rlimits.iter().any(|x| x.resource == resource) {
            return Err(ck.err(format!("{prefix}rlimits[{i}].type"), format!("{name} is listed twice")));
        }
        if r.soft() > r.hard() {
            return Err(ck.err(format!("{prefix}rlimits[{i}]"), "soft limit is above the hard limit"));
        }
        rlimits.push(Rlimit { resource, name, soft: r.soft(), hard: r.hard() });
    }
    let caps = p.capabilities().as_ref().map(|c| cap_sets(ck, c, prefix)).transpose()?;
    if p.oom_score_adj().is_some_and(|adj| !(-1000..=1000).contains(&adj)) {
        return Err(ck.err(format!("{prefix}oomScoreAdj"), "must be within -1000..=1000"));
    }
    Ok(ProcessConfig {
        args,
        env: p.env().clone().unwrap_or_default(),
        cwd: p.cwd().clone(),
        uid: p.user().uid(),
        gid: p.user().gid(),
        additional_gids: p.user().additional_gids().clone().unwrap_or_default(),
        umask: p.user().umask(),
        rlimits,
        caps,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        oom_score_adj: p.oom_score_adj(),
        terminal: p.terminal().unwrap_or(false),
        console_size: p
            .console_size()
            .map(|b| (b.height().min(u16::MAX as u64) as u16, b.width().min(u16::MAX as u64) as u16)),
        apparmor_profile: p.apparmor_profile().clone().filter(|s| !s.is_empty()),
    })
}

fn cap_sets(ck: &Checker<'_>, c: &LinuxCapabilities, prefix: &str) -> Result<CapSets, SpecError> {
    let conv = |set: &Option<oci_spec::runtime::Capabilities>,
                name: &str|
     -> Result<Vec<caps::Capability>, SpecError> {
        let mut out: Vec<caps::Capability> = Vec::new();
        for cap in set.iter().flatten() {
            let text = serde_json::to_value(cap).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            let parsed: caps::Capability = text.parse().map_err(|_| {
                ck.err(
                    format!("{prefix}capabilities.{name}"),
                    format!("{text} is not a capability this kernel interface knows"),
                )
            })?;
            out.push(parsed);
        }
        out.sort_by_key(|c| c.index());
        Ok(out)
    };
    Ok(CapSets {
        bounding: conv(c.bounding(), "bounding")?,
        effective: conv(c.effective(), "effective")?,
        permitted: conv(c.permitted(), "permitted")?,
        inheritable: conv(c.inheritable(), "inheritable")?,
        ambient: conv(c.ambient(), "ambient")?,
    })
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

pub fn propagation_flag(p: &str) -> Option<MsFlags> {
    Some(match p {
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

fn mount_spec(ck: &Checker<'_>, i: usize, m: &oci_spec::runtime::Mount) -> Result<MountSpec, SpecError> {
    let field = format!("mounts[{i}]");
    if !m.destination().is_absolute() {
        return Err(
            ck.err(format!("{field}.destination"), format!("{} is not an absolute path", m.destination().display()))
        );
    }
    let mut flags = MsFlags::empty();
    let mut propagation = Vec::new();
    let mut data: Vec<&str> = Vec::new();
    let mut recursive = MountAttr::default();
    for opt in m.options().iter().flatten() {
        if let Some((set, clear)) = recursive_attr(opt) {
            // Later options win, as with the others.
            recursive.set = (recursive.set & !clear) | set;
            recursive.clear = (recursive.clear & !set) | clear;
            continue;
        }
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            // Options other runtimes take that change nothing here.
            "tmpcopyup" | "nosymfollow" | "idmap" | "ridmap" | "copy-symlink" | "" => continue,
            o => {
                if let Some(p) = propagation_flag(o) {
                    propagation.push(p);
                } else {
                    data.push(o);
                }
                continue;
            }
        };
        flags = (flags | set) - clear;
    }
    let fstype = m.typ().clone().unwrap_or_default();
    if fstype == "bind" || fstype == "rbind" {
        flags |= MsFlags::MS_BIND;
    }
    if fstype.is_empty() && !flags.contains(MsFlags::MS_BIND) {
        return Err(ck.err(format!("{field}.type"), "is required unless the options say bind or rbind"));
    }
    if flags.contains(MsFlags::MS_BIND) && m.source().is_none() {
        return Err(ck.err(format!("{field}.source"), "a bind mount needs a source"));
    }
    Ok(MountSpec {
        destination: m.destination().clone(),
        fstype,
        source: m.source().clone(),
        flags,
        propagation,
        recursive,
        data: data.join(","),
    })
}

/// runc's recursive mount options: the MOUNT_ATTR_* bits each sets and clears. The atime
/// ones replace the whole atime mode, which the kernel wants cleared as one field.
fn recursive_attr(opt: &str) -> Option<(u64, u64)> {
    let atime = |mode: u64| Some((mode, libc::MOUNT_ATTR__ATIME));
    match opt {
        "rro" => Some((libc::MOUNT_ATTR_RDONLY, 0)),
        "rrw" => Some((0, libc::MOUNT_ATTR_RDONLY)),
        "rnosuid" => Some((libc::MOUNT_ATTR_NOSUID, 0)),
        "rsuid" => Some((0, libc::MOUNT_ATTR_NOSUID)),
        "rnodev" => Some((libc::MOUNT_ATTR_NODEV, 0)),
        "rdev" => Some((0, libc::MOUNT_ATTR_NODEV)),
        "rnoexec" => Some((libc::MOUNT_ATTR_NOEXEC, 0)),
        "rexec" => Some((0, libc::MOUNT_ATTR_NOEXEC)),
        "rnodiratime" => Some((libc::MOUNT_ATTR_NODIRATIME, 0)),
        "rdiratime" => Some((0, libc::MOUNT_ATTR_NODIRATIME)),
        "rnosymfollow" => Some((libc::MOUNT_ATTR_NOSYMFOLLOW, 0)),
        "rsymfollow" => Some((0, libc::MOUNT_ATTR_NOSYMFOLLOW)),
        "rnoatime" => atime(libc::MOUNT_ATTR_NOATIME),
        "rstrictatime" | "rnorelatime" => atime(libc::MOUNT_ATTR_STRICTATIME),
        "rrelatime" | "ratime" | "rnostrictatime" => atime(libc::MOUNT_ATTR_RELATIME),
        _ => None,
    }
}

fn resources(ck: &Checker<'_>, field: &str, r: &oci_spec::runtime::LinuxResources) -> Result<Resources, SpecError> {
    let mut out = Resources::default();
    if let Some(cpu) = r.cpu() {
        out.cpu_quota = cpu.quota();
        out.cpu_period = cpu.period();
        out.cpu_shares = cpu.shares();
        out.cpu_rt_period = cpu.realtime_period();
        out.cpu_rt_runtime = cpu.realtime_runtime();
        out.cpuset_cpus = cpu.cpus().clone().filter(|s| !s.is_empty());
        out.cpuset_mems = cpu.mems().clone().filter(|s| !s.is_empty());
    }
    if let Some(mem) = r.memory() {
        out.memory_limit = mem.limit();
        out.memory_swap = mem.swap();
        out.memory_reservation = mem.reservation();
        out.memory_swappiness = mem.swappiness();
        out.memory_disable_oom_killer = mem.disable_oom_killer();
        out.memory_kernel = mem.kernel();
        out.memory_kernel_tcp = mem.kernel_tcp();
    }
    if let Some(b) = r.block_io() {
        out.blkio_weight = b.weight();
        out.blkio_leaf_weight = b.leaf_weight();
        for d in b.weight_device().iter().flatten() {
            out.blkio_weight_devices.push(WeightDevice {
                major: d.major(),
                minor: d.minor(),
                weight: d.weight(),
                leaf_weight: d.leaf_weight(),
            });
        }
        let kinds = [
            (ThrottleKind::ReadBps, b.throttle_read_bps_device()),
            (ThrottleKind::WriteBps, b.throttle_write_bps_device()),
            (ThrottleKind::ReadIops, b.throttle_read_iops_device()),
            (ThrottleKind::WriteIops, b.throttle_write_iops_device()),
        ];
        for (kind, list) in kinds {
            for t in list.iter().flatten() {
                out.blkio_throttles.push(Throttle { kind, major: t.major(), minor: t.minor(), rate: t.rate() });
            }
        }
    }
    for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
        let size = h.page_size();
        // The kernel's own names: a number and KB, MB or GB (what hugetlb.<size>.* use).
        let well_formed = size.len() > 2
            && ["KB", "MB", "GB"]
                .iter()
                .any(|u| size.strip_suffix(u).is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())));
        if !well_formed {
            return Err(ck.err(
                format!("{field}.hugepageLimits[{i}].pageSize"),
                format!("{size:?} is not a huge page size as the kernel names them (2MB, 1GB)"),
            ));
        }
        let limit = u64::try_from(h.limit())
            .map_err(|_| ck.err(format!("{field}.hugepageLimits[{i}].limit"), "must not be negative"))?;
        out.hugetlb.push((size.clone(), limit));
    }
    if let Some(n) = r.network() {
        out.net_class_id = n.class_id();
        for (i, p) in n.priorities().iter().flatten().enumerate() {
            if p.name().is_empty() || p.name().contains([' ', '\n', '/']) {
                return Err(ck.err(format!("{field}.network.priorities[{i}].name"), "must be an interface name"));
            }
            out.net_priorities.push((p.name().clone(), p.priority()));
        }
    }
    // Sorted, so the files are written in the same order every time.
    let mut rdma: Vec<_> = r.rdma().iter().flatten().collect();
    rdma.sort_by(|a, b| a.0.cmp(b.0));
    for (device, limits) in rdma {
        if device.is_empty() || device.contains([' ', '\n']) {
            return Err(ck.err(format!("{field}.rdma"), format!("{device:?} is not an RDMA device name")));
        }
        out.rdma.push((device.clone(), limits.hca_handles(), limits.hca_objects()));
    }
    let mut unified: Vec<_> = r.unified().iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
    unified.sort();
    for (key, _) in &unified {
        crate::runtime::cgroups::check_unified_key(key)
            .map_err(|e| ck.err(format!("{field}.unified.{key}"), e.to_string()))?;
    }
    out.unified = unified;
    if let Some(p) = r.pids() {
        out.pids_limit = Some(p.limit());
    }
    for d in r.devices().iter().flatten() {
        let kind = match d.typ().map(|t| t.as_str().to_string()).as_deref() {
            None | Some("a") => 'a',
            Some("b") => 'b',
            _ => 'c',
        };
        out.devices.push(DeviceRule {
            allow: d.allow(),
            kind,
            major: d.major(),
            minor: d.minor(),
            access: d.access().clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The rule a container's device rules start from, as runc's start: nothing is allowed.
fn deny_all_devices() -> DeviceRule {
    DeviceRule { allow: false, kind: 'a', major: None, minor: None, access: "rwm".into() }
}

/// What every container may use whatever its device rules say, as runc allows them: the
/// default nodes, /dev/console, ptmx and the pty slaves. (Unlike runc, no `c *:* m` and
/// `b *:* m`: only the spec's own nodes may be made without a rule for them; and no
/// /dev/net/tun, which runc 1.2 dropped as well.)
fn always_allowed_devices() -> Vec<DeviceRule> {
    let c = |major, minor: Option<i64>| DeviceRule {
        allow: true,
        kind: 'c',
        major: Some(major),
        minor,
        access: "rwm".into(),
    };
    vec![
        c(1, Some(3)),
        c(1, Some(5)),
        c(1, Some(7)),
        c(1, Some(8)),
        c(1, Some(9)),
        c(5, Some(0)),
        c(5, Some(1)),
        c(5, Some(2)),
        c(136, None),
    ]
}

/// Reads a resources file as `update --resources` takes it (LinuxResources JSON).
pub fn load_resources(path: &Path) -> Result<Resources, SpecError> {
    let text = fs::read(path).map_err(|source| SpecError::Read { path: path.to_path_buf(), source })?;
    parse_resources(path, &text)
}

/// LinuxResources JSON already read; `origin` names it in errors.
pub fn parse_resources(origin: &Path, text: &[u8]) -> Result<Resources, SpecError> {
    let r: oci_spec::runtime::LinuxResources = parse(origin, text)?;
    resources(&Checker { path: origin }, "resources", &r)
}

fn hooks(h: &oci_spec::runtime::Hooks) -> Hooks {
    let conv = |list: &Option<Vec<oci_spec::runtime::Hook>>| -> Vec<Hook> {
        list.iter()
            .flatten()
            .map(|h| Hook {
                path: h.path().clone(),
                args: h.args().clone().unwrap_or_default(),
                env: h.env().clone(),
                timeout: h.timeout().filter(|t| *t > 0).map(|t| t as u64),
            })
            .collect()
    };
    Hooks {
        prestart: conv(h.prestart()),
        create_runtime: conv(h.create_runtime()),
        create_container: conv(h.create_container()),
        start_container: conv(h.start_container()),
        poststart: conv(h.poststart()),
        poststop: conv(h.poststop()),
    }
}

/// The config.json `runtime spec` writes: runc's defaults (a shell, pid/net/ipc/uts/mount
/// namespaces and cgroup on a cgroup2 host, the usual mounts, masked and read-only paths, three capabilities).
pub fn default_spec() -> serde_json::Value {
    let mut spec = Spec::default();
    spec.set_hostname(Some("nodectl".into()));
    if let Some(p) = spec.process_mut() {
        p.set_terminal(Some(true));
        let mut caps = LinuxCapabilities::default();
        caps.set_inheritable(None);
        caps.set_ambient(None);
        p.set_capabilities(Some(caps));
    }
    if let Some(r) = spec.root_mut() {
        r.set_path(PathBuf::from("rootfs"));
        r.set_readonly(Some(true));
    }
    // Deny every device but the defaults (always allowed), as runc's spec does.
    if let Some(l) = spec.linux_mut() {
        let mut res = l.resources().clone().unwrap_or_default();
        let deny_all = oci_spec::runtime::LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().ok();
        res.set_devices(deny_all.map(|d| vec![d]));
        l.set_resources(Some(res));
        // A cgroup namespace only on a pure cgroup2 host, as runc's spec: with v1
        // hierarchies runc's own tests (delete.bats, cgroups.bats) add one themselves and
        // a second is an error.
        let unified = matches!(super::cgroups::detect(), Ok(super::cgroups::Hierarchy::Unified { .. }));
        if !unified && let Some(ns) = l.namespaces_mut() {
            ns.retain(|n| n.typ() != LinuxNamespaceType::Cgroup);
        }
    }
    // oci-spec's version string (1.0.2-dev), which runc 1.1 and crun 1.8 accept too.
    serde_json::to_value(&spec).unwrap_or_default()
}

/// The namespace a sysctl belongs to, if any: the IPC ones, `fs.mqueue.*`, `net.*` and the
/// UTS names (runc's list); every other sysctl is the host's.
pub fn sysctl_namespace(key: &str) -> Option<LinuxNamespaceType> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(LinuxNamespaceType::Ipc)
    } else if key.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(LinuxNamespaceType::Uts)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Result<Config, SpecError> {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("rootfs")).unwrap();
        fs::write(dir.path().join("config.json"), serde_json::to_vec(&json).unwrap()).unwrap();
        load(dir.path())
    }

    #[test]
    fn sysctls_belong_to_the_namespaces_runc_names() {
        assert_eq!(sysctl_namespace("kernel.shmmax"), Some(LinuxNamespaceType::Ipc));
        assert_eq!(sysctl_namespace("fs.mqueue.msg_max"), Some(LinuxNamespaceType::Ipc));
        assert_eq!(sysctl_namespace("net.ipv4.ip_forward"), Some(LinuxNamespaceType::Network));
        assert_eq!(sysctl_namespace("kernel.domainname"), Some(LinuxNamespaceType::Uts));
        assert_eq!(sysctl_namespace("kernel.printk_ratelimit"), None);
        assert_eq!(sysctl_namespace("vm.overcommit_memory"), None);
    }

    #[test]
    fn a_host_wide_sysctl_is_refused_naming_it() {
        let mut s = default_spec();
        s["linux"]["sysctl"] = serde_json::json!({"kernel.printk_ratelimit": "9"});
        let e = config(s).unwrap_err().to_string();
        assert!(e.contains("linux.sysctl.kernel.printk_ratelimit") && e.contains("change the host"), "{e}");
        let mut s = default_spec();
        let ns = s["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "network");
        s["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
        let e = config(s).unwrap_err().to_string();
        assert!(e.contains("needs a network namespace"), "{e}");
    }

    #[test]
    fn the_default_spec_loads() {
        let c = config(default_spec()).unwrap();
        assert_eq!(c.process.args, ["sh"]);
        assert!(c.readonly_root);
        assert!(c.new_namespace(LinuxNamespaceType::Pid));
        let proc_mount = c.mounts.iter().find(|m| m.destination == Path::new("/proc")).unwrap();
        assert_eq!(proc_mount.fstype, "proc");
        let caps = c.process.caps.unwrap();
        assert_eq!(caps.bounding.len(), 3);
        assert!(caps.inheritable.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let mut s = default_spec();
        s["process"]["args"] = serde_json::json!([]);
        assert!(config(s).unwrap_err().to_string().contains("process.args: must name the program"));

        let mut s = default_spec();
        s["mounts"][1]["destination"] = "dev".into();
        assert!(config(s).unwrap_err().to_string().contains("mounts[1].destination"));

        let mut s = default_spec();
        s["process"]["rlimits"][0]["type"] = "RLIMIT_BOGUS".into();
        let e = config(s).unwrap_err().to_string();
        assert!(e.contains("process.rlimits[0].type"), "{e}");

        let mut s = default_spec();
        s["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "pid"}]);
        assert!(config(s).unwrap_err().to_string().contains("linux.namespaces[1].type"));

        let mut s = default_spec();
        s["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}, {"type": "user"}]);
        assert!(config(s).unwrap_err().to_string().contains("uidMappings"));

        let e = config(serde_json::json!({"ociVersion": "1.0.0", "root": {"path": "nope"}})).unwrap_err().to_string();
        assert!(e.contains("root.path"), "{e}");
    }

    #[test]
    fn mount_options_split_into_flags_propagation_and_data() {
        let mut s = default_spec();
        s["mounts"] = serde_json::json!([
            {"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "ro", "rw", "rprivate", "size=64k", "mode=755"]},
            {"destination": "/b", "source": "/tmp", "options": ["rbind", "rro", "noexec", "rnosuid", "rnoatime", "rrw"]},
        ]);
        let c = config(s).unwrap();
        assert_eq!(c.mounts[0].flags, MsFlags::MS_NOSUID);
        assert_eq!(c.mounts[0].propagation, [MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(c.mounts[0].data, "size=64k,mode=755");
        assert!(c.mounts[1].is_bind());
        // noexec is the top mount's; the r-options are for the whole tree, the last one of
        // a pair winning.
        assert!(c.mounts[1].flags.contains(MsFlags::MS_NOEXEC | MsFlags::MS_REC));
        assert!(!c.mounts[1].flags.contains(MsFlags::MS_RDONLY));
        let r = c.mounts[1].recursive;
        assert_eq!(r.set, libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOATIME);
        assert_eq!(r.clear, libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR__ATIME);
    }
}
