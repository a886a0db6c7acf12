//! A pod's sandbox on the host: its directory under `ROOT/pods/KEY`, the namespaces its
//! containers share (network, UTS, IPC, each held by a bind mount), its network attachment,
//! its /etc/hosts, /etc/hostname and /etc/resolv.conf, a shared /dev/shm, its volumes, and
//! its cgroup parent. Everything it makes is recorded in `pod.json` before it is made, so
//! [`teardown`] can undo it from the record alone, also after the owner was SIGKILLed.
//!
//! The owner holds an exclusive flock on `ROOT/pods/KEY/lock` for the pod's life: a pod
//! whose lock is free has no owner, and [`gc`] removes it.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use super::{PlanError, namespaces};
use crate::image::store::Store;
use crate::network::{self, NetConfig, PortMapping};
use crate::runtime::Runtime;
use crate::sys::lock::FileLock;

/// What teardown needs to know of a pod, written before any of it exists.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodRecord {
    pub key: String,
    pub name: String,
    pub namespace: String,
    /// Beneath our own cgroup; every container's cgroup is inside it.
    pub cgroup_parent: String,
    /// The bridge and pool the pod's address came from (none with hostNetwork).
    pub network: Option<NetRecord>,
}

/// A [`NetConfig`] as the record keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetRecord {
    pub bridge: String,
    pub cidr: String,
    pub state_dir: PathBuf,
}

impl NetRecord {
    fn of(cfg: &NetConfig) -> NetRecord {
        NetRecord { bridge: cfg.bridge.clone(), cidr: cfg.cidr.to_string(), state_dir: cfg.state_dir.clone() }
    }

    fn config(&self) -> Result<NetConfig, PlanError> {
        NetConfig::new(&self.bridge, &self.cidr, self.state_dir.clone())
            .map_err(PlanError::network("pod network in the record"))
    }
}

/// A pod's sandbox while its owner runs.
pub struct Sandbox {
    pub record: PodRecord,
    pub dir: PathBuf,
    /// Namespace files to join by path; None for the host's (hostNetwork).
    pub netns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    pub ipcns: PathBuf,
    pub hosts: PathBuf,
    pub hostname_file: PathBuf,
    /// What we wrote to `hostname_file`. Kept here because the file is bind-mounted
    /// writable into every container: reading it back would let a container feed us
    /// anything, of any size (a 64 MiB container once made `nodectl run` grow to 7 GB).
    pub hostname: String,
    pub resolv_conf: PathBuf,
    pub shm: PathBuf,
    pub ip: Option<Ipv4Addr>,
    /// Held for the pod's life; see the module comment.
    _lock: FileLock,
}

pub fn pods_dir(root: &Path) -> PathBuf {
    root.join("pods")
}

/// A key unique to this run of the pod: a prefix of its name and 8 random hex digits (short,
/// so container ids and veth names derived from it stay within their limits).
pub fn new_key(name: &str) -> String {
    let prefix: String = name.chars().take(40).collect();
    let prefix = prefix.trim_end_matches(['-', '.']);
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

fn host(what: String) -> impl FnOnce(std::io::Error) -> PlanError {
    PlanError::io(what)
}

/// What the sandbox is asked to be.
pub struct SandboxSpec<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub hostname: &'a str,
    /// None: the host's network, UTS and /etc files (hostNetwork).
    pub network: Option<&'a NetConfig>,
    pub ports: &'a [PortMapping],
    /// Size of /dev/shm, in bytes.
    pub shm_size: u64,
}

/// Makes the sandbox; on failure removes whatever part of it was made.
pub fn create(root: &Path, spec: &SandboxSpec<'_>) -> Result<Sandbox, PlanError> {
    let pods = pods_dir(root);
    fs::create_dir_all(&pods).map_err(host(format!("create {}", pods.display())))?;
    let key = new_key(spec.name);
    let record = PodRecord {
        key: key.clone(),
        name: spec.name.to_string(),
        namespace: spec.namespace.to_string(),
        cgroup_parent: format!("nodectl-pod-{key}"),
        network: spec.network.map(NetRecord::of),
    };
    // Made under a dot-name with the lock held and the record written, then renamed: gc
    // never sees a pod directory without its record and lock.
    let tmp = pods.join(format!(".new-{key}"));
    let dir = pods.join(&key);
    fs::create_dir(&tmp).map_err(host(format!("create {}", tmp.display())))?;
    let lock = match FileLock::exclusive(&tmp.join("lock")) {
        Ok(l) => l,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(PlanError::io(format!("lock {}", tmp.join("lock").display()))(e));
        }
    };
    let written =
        serde_json::to_vec_pretty(&record).map_err(|e| PlanError::io("encode pod.json")(e.into())).and_then(|json| {
            fs::write(tmp.join("pod.json"), json).map_err(host(format!("write {}", tmp.join("pod.json").display())))
        });
    if let Err(e) = written
        .and_then(|()| fs::rename(&tmp, &dir).map_err(host(format!("rename {} to {}", tmp.display(), dir.display()))))
    {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let mut sb = Sandbox {
        record,
        netns: None,
        utsns: None,
        ipcns: dir.join("ns/ipc"),
        hosts: dir.join("etc/hosts"),
        hostname_file: dir.join("etc/hostname"),
        hostname: String::new(),
        resolv_conf: dir.join("etc/resolv.conf"),
        shm: dir.join("shm"),
        ip: None,
        dir,
        _lock: lock,
    };
    match fill(&mut sb, spec) {
        Ok(()) => Ok(sb),
        Err(e) => {
            let _ = teardown(root, &sb.record);
            Err(e)
        }
    }
}

fn fill(sb: &mut Sandbox, spec: &SandboxSpec<'_>) -> Result<(), PlanError> {
    let ns = sb.dir.join("ns");
    let etc = sb.dir.join("etc");
    for d in [&ns, &etc, &sb.shm] {
        fs::create_dir(d).map_err(host(format!("create {}", d.display())))?;
    }
    let (net, uts) = (ns.join("net"), ns.join("uts"));
    let mut targets: Vec<(&str, &Path)> = vec![("ipc", &sb.ipcns)];
    let mut flags = CloneFlags::CLONE_NEWIPC;
    if spec.network.is_some() {
        targets.push(("net", &net));
        targets.push(("uts", &uts));
        flags |= CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS;
    }
    namespaces::hold(flags, &targets, spec.network.map(|_| spec.hostname))
        .map_err(PlanError::io("hold the pod's namespaces"))?;
    tracing::debug!("namespaces held");
    nix::mount::mount(
        Some("shm"),
        &sb.shm,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,size={}", spec.shm_size).as_str()),
    )
    .map_err(PlanError::errno(format!("mount tmpfs on {}", sb.shm.display())))?;

    let hosts_text = match spec.network {
        Some(cfg) => {
            sb.netns = Some(net.clone());
            sb.utsns = Some(uts);
            let attachment =
                network::setup(cfg, &sb.record.key, &net, spec.ports).map_err(PlanError::network("pod network"))?;
            crate::sys::process::wait_single_threaded();
            tracing::debug!(ip = %attachment.ip, "network set up");
            sb.ip = Some(attachment.ip);
            pod_hosts(spec.hostname, attachment.ip)
        }
        None => fs::read_to_string("/etc/hosts").unwrap_or_else(|_| pod_hosts("localhost", Ipv4Addr::LOCALHOST)),
    };
    fs::write(&sb.hosts, hosts_text).map_err(host(format!("write {}", sb.hosts.display())))?;
    let hostname = if spec.network.is_some() {
        spec.hostname.to_string()
    } else {
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
    };
    fs::write(&sb.hostname_file, format!("{hostname}\n"))
        .map_err(host(format!("write {}", sb.hostname_file.display())))?;
    sb.hostname = hostname;
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = if spec.network.is_some() { pod_resolv_conf(&host_resolv) } else { host_resolv };
    fs::write(&sb.resolv_conf, resolv).map_err(host(format!("write {}", sb.resolv_conf.display())))?;
    Ok(())
}

/// The kubelet's hosts file for a pod with its own network.
fn pod_hosts(hostname: &str, ip: Ipv4Addr) -> String {
    format!(
        "# Kubernetes-managed hosts file (nodectl).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n{ip}\t{hostname}\n"
    )
}

/// The host's resolv.conf without loopback nameservers, which in the pod's own network
/// namespace would be the pod itself (systemd-resolved's 127.0.0.53, a local dnsmasq).
pub fn pod_resolv_conf(host: &str) -> String {
    let mut out = String::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver")
            && let Some(addr) = words.next()
            && addr.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Removes everything a pod's record says it may have: its containers (killed), their root
/// filesystems, its network attachment, mounts, directory and cgroup parent. Parts already
/// gone are fine; every part is tried, and every failure is reported (as netavark does).
pub fn teardown(root: &Path, record: &PodRecord) -> Result<(), PlanError> {
    let mut failed: Vec<PlanError> = Vec::new();
    let mut note = |r: Result<(), PlanError>| {
        if let Err(e) = r {
            failed.push(e);
        }
    };
    let prefix = format!("{}.", record.key);
    let rt = Runtime::new(&root.join("runtime"));
    for id in rt.root.list().unwrap_or_default().into_iter().filter(|id| id.starts_with(&prefix)) {
        note(rt.delete(&id, true).map_err(PlanError::runtime(format!("delete container {id}"))));
    }
    if let Ok(store) = Store::open(root) {
        let rootfs_dir = store.root().join("rootfs");
        for entry in fs::read_dir(&rootfs_dir).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if id.starts_with(&prefix) {
                note(
                    crate::image::rootfs::remove(&store, &id)
                        .map_err(PlanError::rootfs(format!("remove root filesystem {id}"))),
                );
            }
        }
    }
    if let Some(net) = &record.network {
        note(
            net.config()
                .and_then(|cfg| network::teardown(&cfg, &record.key).map_err(PlanError::network("pod network"))),
        );
    }
    let dir = pods_dir(root).join(&record.key);
    // The namespace files, /dev/shm and volumes are all mounts below the pod's directory.
    note(crate::sys::mount::unmount_below(&dir).map_err(PlanError::io(format!("unmount below {}", dir.display()))));
    note(
        crate::runtime::cgroups::remove_parent(&record.cgroup_parent)
            .map_err(|source| PlanError::Cgroup { what: format!("remove cgroup {}", record.cgroup_parent), source }),
    );
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            note(Err(PlanError::io(format!("remove {}", dir.display()))(e)))
        }
        _ => {}
    }
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0)),
        _ => Err(PlanError::Teardown(failed)),
    }
}

/// What [`gc`] removed.
#[derive(Debug, Default)]
pub struct GcReport {
    pub pods: Vec<String>,
    pub errors: Vec<String>,
}

/// Tears down every pod whose owner is gone (its lock is free).
pub fn gc(root: &Path) -> GcReport {
    let mut report = GcReport::default();
    let pods = pods_dir(root);
    for entry in fs::read_dir(&pods).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let lock = dir.join("lock");
        // Only a directory whose lock file exists and is free is abandoned; one without a
        // lock file is a `.new-` directory whose maker died before locking, or foreign.
        if !lock.exists() {
            if name.starts_with(".new-") {
                let _ = fs::remove_dir_all(&dir);
            }
            continue;
        }
        let Ok(Some(_held)) = FileLock::try_exclusive(&lock) else { continue };
        if name.starts_with(".new-") {
            // Nothing but the lock and the record exists before the rename.
            let _ = fs::remove_dir_all(&dir);
            continue;
        }
        let record: Option<PodRecord> =
            fs::read(dir.join("pod.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
        match record {
            Some(rec) => match teardown(root, &rec) {
                Ok(()) => report.pods.push(rec.key),
                Err(e) => report.errors.push(format!("pod {}: {e}", rec.key)),
            },
            None => report.errors.push(format!("{}: no readable pod.json; left alone", dir.display())),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_nameservers_are_dropped() {
        let host = "# generated\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.2\nsearch example.org\noptions edns0\n";
        assert_eq!(pod_resolv_conf(host), "# generated\nnameserver 10.0.0.2\nsearch example.org\noptions edns0\n");
    }

    #[test]
    fn keys_fit_the_limits_of_what_is_named_after_them() {
        let k = new_key(&"a".repeat(253));
        assert!(k.len() <= 49, "{k}");
        assert!(new_key("web-").starts_with("web-"));
    }
}
