//! A pod's sandbox on the host: the namespaces its containers share (network, UTS, IPC, each
//! held by a bind mount), its network attachment, its /etc/hosts, /etc/hostname and
//! /etc/resolv.conf, a shared /dev/shm, its volumes, and its cgroup parent, all below
//! `ROOT/pods/UID` ([`super::pod_state`]). Everything it makes is recorded in `pod.json`
//! before it is made, so [`teardown`] can undo it from the record alone, also after every
//! process of the pod was SIGKILLed.
//!
//! The pod's owner (`nodectl run`) holds an exclusive flock on `ROOT/pods/UID/lock` for the
//! pod's life: a pod whose lock is free has no owner, and [`gc`] removes it. The pod's
//! monitor makes the sandbox ([`create`]) and is the parent of its containers.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use super::pod_state::{self, MonitorRecord};
use super::{PlanError, namespaces};
use crate::image::store::Store;
use crate::network::{self, NetConfig, PortMapping};
use crate::runtime::Runtime;
use crate::sys::lock::FileLock;

pub use super::pod_state::pods_dir;

/// What the sandbox is to be, and what teardown needs to know of it; written before any of
/// it exists.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    /// Short, unique among the pods of this root: container ids and veth names are made
    /// from it ([`pod_state::key_for`]).
    pub key: String,
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// Beneath our own cgroup; every container's cgroup is inside it.
    pub cgroup_parent: String,
    /// The bridge and pool the pod's address came from (none with hostNetwork).
    pub network: Option<NetRecord>,
    /// Set in the pod's UTS namespace and its /etc/hosts (with its own network).
    pub hostname: String,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Size of /dev/shm, in bytes.
    pub shm_size: u64,
    /// Kept by the node daemon, which outlives its own restarts: gc leaves it alone.
    #[serde(default)]
    pub daemon: bool,
    /// The pod's resolv.conf by its dnsPolicy (`node::resolv`); None: the host's, without
    /// loopback nameservers for a pod with its own network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<String>,
}

/// A [`NetConfig`] as the record keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetRecord {
    pub bridge: String,
    pub cidr: String,
    pub state_dir: PathBuf,
    /// The veths' MTU (under VXLAN); absent: the kernel's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

impl NetRecord {
    pub fn of(cfg: &NetConfig) -> NetRecord {
        NetRecord {
            bridge: cfg.bridge.clone(),
            cidr: cfg.cidr.to_string(),
            state_dir: cfg.state_dir.clone(),
            mtu: cfg.mtu,
        }
    }

    fn config(&self) -> Result<NetConfig, PlanError> {
        let mut cfg = NetConfig::new(&self.bridge, &self.cidr, self.state_dir.clone())
            .map_err(PlanError::network("pod network in the record"))?;
        cfg.mtu = self.mtu;
        Ok(cfg)
    }
}

/// A pod's sandbox: where its parts are.
#[derive(Clone, Debug)]
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
}

impl Sandbox {
    /// The sandbox of `record`, made by its monitor, which gave its address and hostname.
    pub fn at(root: &Path, record: &PodRecord, ip: Option<Ipv4Addr>, hostname: &str) -> Sandbox {
        let dir = pod_state::pod_dir(root, &record.uid);
        let own_network = record.network.is_some();
        Sandbox {
            record: record.clone(),
            netns: own_network.then(|| dir.join("ns/net")),
            utsns: own_network.then(|| dir.join("ns/uts")),
            ipcns: dir.join("ns/ipc"),
            hosts: dir.join("etc/hosts"),
            hostname_file: dir.join("etc/hostname"),
            hostname: hostname.to_string(),
            resolv_conf: dir.join("etc/resolv.conf"),
            shm: dir.join("shm"),
            ip,
            dir,
        }
    }
}

fn host(what: String) -> impl FnOnce(std::io::Error) -> PlanError {
    PlanError::io(what)
}

/// Makes the pod's directory with its record and `manifest` (the Pod it is made from, as
/// JSON) and locks it for the caller, its owner. Made under a dot-name with the lock held
/// and the record written, then renamed: gc never sees a pod directory without its record
/// and lock.
pub fn create_dir(root: &Path, record: &PodRecord, manifest: &[u8]) -> Result<FileLock, PlanError> {
    let pods = pods_dir(root);
    fs::create_dir_all(&pods).map_err(host(format!("create {}", pods.display())))?;
    let tmp = pods.join(format!(".new-{}", record.uid));
    let dir = pod_state::pod_dir(root, &record.uid);
    fs::create_dir(&tmp).map_err(host(format!("create {}", tmp.display())))?;
    let lock = match FileLock::exclusive(&tmp.join("lock")) {
        Ok(l) => l,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(PlanError::io(format!("lock {}", tmp.join("lock").display()))(e));
        }
    };
    let written = pod_state::write_json(&tmp.join("pod.json"), record)
        .and_then(|()| pod_state::write_atomic(&tmp.join("manifest.json"), manifest))
        .and_then(|()| fs::create_dir(tmp.join("containers")))
        .map_err(host(format!("write the record of pod {} in {}", record.name, tmp.display())))
        .and_then(|()| fs::rename(&tmp, &dir).map_err(host(format!("rename {} to {}", tmp.display(), dir.display()))));
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    Ok(lock)
}

/// Makes the sandbox of a pod whose directory exists ([`create_dir`]). On failure, what
/// was made stays recorded for the owner's [`teardown`].
pub fn create(root: &Path, record: &PodRecord) -> Result<Sandbox, PlanError> {
    let network = record.network.as_ref().map(NetRecord::config).transpose()?;
    let mut sb = Sandbox::at(root, record, None, &record.hostname);
    fill(&mut sb, network.as_ref())?;
    Ok(sb)
}

fn fill(sb: &mut Sandbox, network: Option<&NetConfig>) -> Result<(), PlanError> {
    let ns = sb.dir.join("ns");
    let etc = sb.dir.join("etc");
    for d in [&ns, &etc, &sb.shm] {
        fs::create_dir(d).map_err(host(format!("create {}", d.display())))?;
    }
    let (net, uts) = (ns.join("net"), ns.join("uts"));
    let mut targets: Vec<(&str, &Path)> = vec![("ipc", &sb.ipcns)];
    let mut flags = CloneFlags::CLONE_NEWIPC;
    if network.is_some() {
        targets.push(("net", &net));
        targets.push(("uts", &uts));
        flags |= CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS;
    }
    namespaces::hold(flags, &targets, network.map(|_| sb.record.hostname.as_str()))
        .map_err(PlanError::io("hold the pod's namespaces"))?;
    tracing::debug!("namespaces held");
    nix::mount::mount(
        Some("shm"),
        &sb.shm,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,size={}", sb.record.shm_size).as_str()),
    )
    .map_err(PlanError::errno(format!("mount tmpfs on {}", sb.shm.display())))?;

    let hosts_text = match network {
        Some(cfg) => {
            let attachment = network::setup(cfg, &sb.record.key, &net, &sb.record.ports)
                .map_err(PlanError::network("pod network"))?;
            crate::sys::process::wait_single_threaded();
            tracing::debug!(ip = %attachment.ip, "network set up");
            sb.ip = Some(attachment.ip);
            pod_hosts(&sb.record.hostname, attachment.ip)
        }
        None => fs::read_to_string("/etc/hosts").unwrap_or_else(|_| pod_hosts("localhost", Ipv4Addr::LOCALHOST)),
    };
    fs::write(&sb.hosts, hosts_text).map_err(host(format!("write {}", sb.hosts.display())))?;
    let hostname = if network.is_some() {
        sb.record.hostname.clone()
    } else {
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
    };
    fs::write(&sb.hostname_file, format!("{hostname}\n"))
        .map_err(host(format!("write {}", sb.hostname_file.display())))?;
    sb.hostname = hostname;
    let resolv = match &sb.record.resolv_conf {
        Some(text) => text.clone(),
        None => {
            let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            if network.is_some() { pod_resolv_conf(&host_resolv) } else { host_resolv }
        }
    };
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

/// Removes everything a pod's record says it may have: its monitor and containers
/// (killed), their root filesystems, its network attachment, mounts, directory and cgroup
/// parent. Parts already gone are fine; every part is tried, and every failure is reported
/// (as netavark does).
pub fn teardown(root: &Path, record: &PodRecord) -> Result<(), PlanError> {
    let mut failed: Vec<PlanError> = Vec::new();
    let mut note = |r: Result<(), PlanError>| {
        if let Err(e) = r {
            failed.push(e);
        }
    };
    let dir = pod_state::pod_dir(root, &record.uid);
    // A monitor still there (its owner was killed) would restart what we remove.
    if let Ok(Some(m)) = pod_state::read_json::<MonitorRecord>(&MonitorRecord::path(&dir))
        && m.pid != std::process::id() as i32
        && m.alive()
    {
        kill_and_wait(m.pid);
    }
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

/// SIGKILLs a process that is not our child and waits (up to a few seconds) until it is gone.
fn kill_and_wait(pid: i32) {
    use std::os::fd::AsFd;
    let Ok(fd) = crate::sys::process::pidfd_open(pid) else { return };
    if crate::sys::process::pidfd_send_signal(fd.as_fd(), libc::SIGKILL).is_err() {
        return;
    }
    let mut fds = [nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN)];
    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16));
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
            Some(rec) if rec.daemon => {}
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
}
