//! Pod networking: a network namespace per pod held by a bind mount, a veth pair into
//! a bridge, an address from a persisted pool, and hostPort rules in an nftables table
//! of our own — all in-process over netlink (docs/architecture.md, decision 6), the jobs CNI's
//! bridge, host-local and portmap plugins do.
//!
//! `setup` allocates first and records the pod's veth name with its address, so that
//! whatever a crash leaves behind is found by `gc` from the pool file: a record whose
//! pod is gone, a veth on our bridge with no record, or rules tagged with a veth that
//! has no record.
//!
//! Every call blocks (netlink round trips, a file lock, and ~25 ms of the kernel's
//! RCU waits when a veth is deleted): from async code, call it on a blocking thread.
//! Helper threads are spawned and joined inside the calls that enter a namespace, so
//! the caller is as single-threaded afterwards as it was before.

mod bridge;
mod ipam;
pub mod masquerade;
mod netlink;
mod netns;
mod nft;
mod portmap;
pub mod routes;
mod rtnl;
pub mod services;
mod veth;
pub mod vxlan;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub use ipam::gateway;
pub use netns::{create_netns, remove_netns, run_in_netns};

pub const DEFAULT_BRIDGE: &str = "nodectl0";
pub const DEFAULT_POD_CIDR: &str = "10.88.0.0/16";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid bridge name {name:?}: {reason}")]
    InvalidBridge { name: String, reason: &'static str },
    #[error("invalid pod CIDR {cidr:?}: {reason}")]
    InvalidCidr { cidr: String, reason: String },
    #[error("a pod key must not be empty")]
    EmptyPodKey,
    #[error("invalid port mapping {mapping}: {reason}")]
    InvalidPort { mapping: String, reason: &'static str },
    #[error("host port {mapping} is already mapped by pod {pod:?}")]
    PortInUse { mapping: String, pod: String },
    #[error("the address pool {cidr} of bridge {bridge} is full ({allocated} pods have addresses)")]
    PoolFull { bridge: String, cidr: Ipv4Net, allocated: usize },
    #[error(
        "bridge {bridge} has addresses from {old} for {pods} pods, but its CIDR is now {new}; remove those pods first"
    )]
    CidrChanged { bridge: String, old: String, new: String, pods: usize },
    #[error("{name} exists and is not a bridge")]
    NotABridge { name: String },
    #[error("bridge {bridge} still has {pods} pods with addresses")]
    BridgeInUse { bridge: String, pods: usize },
    #[error("{op} {what}: {source}")]
    Netlink { op: &'static str, what: String, source: std::io::Error },
    #[error("nftables: {what}: {source}")]
    Nft { what: String, source: std::io::Error },
    #[error("{op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("state file {}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Where pods are attached: the bridge, the CIDR their addresses come from, and the
/// directory holding the address pool (e.g. ROOT/network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub bridge: String,
    pub cidr: Ipv4Net,
    pub state_dir: PathBuf,
    /// The pods' veth MTU; None: the kernel's (1500). Lower under a VXLAN overlay, whose
    /// headers must fit in the links' 1500 bytes.
    pub mtu: Option<u32>,
}

impl NetConfig {
    pub fn new(bridge: &str, cidr: &str, state_dir: PathBuf) -> Result<NetConfig> {
        Ok(NetConfig { bridge: check_bridge(bridge)?, cidr: parse_cidr(cidr)?, state_dir, mtu: None })
    }
}

impl NetConfig {
    /// The fields are public, so a config may not have come through `new`; the bridge
    /// name ends up in paths and the CIDR in address arithmetic, so check again.
    fn check(&self) -> Result<()> {
        check_bridge(&self.bridge)?;
        parse_cidr(&self.cidr.to_string())?;
        Ok(())
    }
}

fn check_bridge(name: &str) -> Result<String> {
    let bad = |reason| Err(Error::InvalidBridge { name: name.to_string(), reason });
    if name.is_empty() || name.len() > 15 {
        return bad("must be 1 to 15 characters (IFNAMSIZ)");
    }
    if name == "." || name == ".." || name.starts_with('-') {
        return bad("is not a usable interface name");
    }
    // Also a directory name under the state dir and part of the nftables table name.
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return bad("may hold only letters, digits, '-', '_' and '.'");
    }
    Ok(name.to_string())
}

fn parse_cidr(s: &str) -> Result<Ipv4Net> {
    let bad = |reason: String| Err(Error::InvalidCidr { cidr: s.to_string(), reason });
    let net: Ipv4Net = match s.trim().parse() {
        Ok(n) => n,
        Err(_) => return bad("not an IPv4 network like 10.88.0.0/16".into()),
    };
    if net.prefix_len() > 30 {
        return bad("the prefix must be /30 or shorter (room for a gateway and a pod)".into());
    }
    if net.network() != net.addr() {
        return bad(format!("host bits are set; the network is {}", net.trunc()));
    }
    Ok(net)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Only traffic to this host address; None: any of the host's addresses.
    pub host_ip: Option<Ipv4Addr>,
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(f, "{}->{}/{:?}", self.host_port, self.container_port, self.protocol)
    }
}

fn check_ports(ports: &[PortMapping]) -> Result<()> {
    let mut seen = BTreeSet::new();
    for p in ports {
        let bad = |reason| Err(Error::InvalidPort { mapping: p.to_string(), reason });
        if p.host_port == 0 || p.container_port == 0 {
            return bad("ports must be 1-65535");
        }
        if !seen.insert((p.host_ip, p.host_port, p.protocol as u8)) {
            return bad("the same host port is mapped twice");
        }
    }
    Ok(())
}

/// What a pod got: its address on the bridge's network and the host end of its veth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub host_veth: String,
}

/// What `gc` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Pods whose address was released, with that address.
    pub released: Vec<(String, Ipv4Addr)>,
    /// Host veths deleted (of released pods, and strays on the bridge with no record).
    pub veths_removed: Vec<String>,
    pub rules_removed: usize,
}

fn nl_open_err(what: &str, source: std::io::Error) -> Error {
    Error::Netlink { op: "opening a netlink socket for", what: what.to_string(), source }
}

/// Attaches the pod `pod_key` (unique per pod, e.g. namespace/name/uid) whose network
/// namespace is held at `netns`: ensures the bridge, allocates an address, creates a
/// veth pair whose pod end is eth0 with the address, lo and a default route via the
/// gateway, and adds hostPort rules. Calling it again for the same key replaces the
/// pod's veth and rules and keeps its address. On failure it undoes what it did, and
/// the pod is left with nothing.
pub fn setup(cfg: &NetConfig, pod_key: &str, netns: &Path, ports: &[PortMapping]) -> Result<Attachment> {
    cfg.check()?;
    if pod_key.is_empty() {
        return Err(Error::EmptyPodKey);
    }
    check_ports(ports)?;
    let ns = netns::open(netns)?;
    let host_veth = veth::host_name(&cfg.bridge, pod_key);
    let pool = ipam::Pool::new(&cfg.state_dir, &cfg.bridge, cfg.cidr);
    let (ip, existed) = {
        let mut l = pool.lock()?;
        let existed = l.get(pod_key).is_some();
        let ip = l.allocate(pod_key, &host_veth, ports)?;
        l.commit()?;
        (ip, existed)
    };
    let att = Attachment { ip, prefix: cfg.cidr.prefix_len(), gateway: ipam::gateway(cfg.cidr), host_veth };
    match attach(cfg, pod_key, (&ns, netns), ports, &att, existed) {
        Ok(()) => Ok(att),
        Err(e) => {
            if let Err(undo) = teardown(cfg, pod_key) {
                tracing::warn!(pod = pod_key, error = %undo, "undoing a failed network set-up");
            }
            Err(e)
        }
    }
}

fn attach(
    cfg: &NetConfig,
    key: &str,
    (ns, ns_path): (&std::fs::File, &Path),
    ports: &[PortMapping],
    att: &Attachment,
    existed: bool,
) -> Result<()> {
    let mut sock = rtnl::open().map_err(|e| nl_open_err("links", e))?;
    let bridge_index = bridge::ensure(&mut sock, cfg)?;
    if existed {
        // A second set-up of the same pod: start again from a clean slate.
        veth::delete(&mut sock, &att.host_veth)?;
        let mut nft = portmap::open().map_err(|e| nl_open_err("nftables", e))?;
        portmap::remove(&mut nft, &cfg.bridge, &att.host_veth)?;
    }
    if veth::create(&mut sock, &att.host_veth, bridge_index, (ns, ns_path), cfg.mtu)? && !existed {
        // A leftover of this pod without a record may have left rules too.
        let mut nft = portmap::open().map_err(|e| nl_open_err("nftables", e))?;
        portmap::remove(&mut nft, &cfg.bridge, &att.host_veth)?;
    }
    veth::configure_pod_side(ns, ns_path, att.ip, att.prefix, att.gateway)?;
    if !ports.is_empty() {
        let mut nft = portmap::open().map_err(|e| nl_open_err("nftables", e))?;
        portmap::add(&mut nft, cfg, &att.host_veth, key, att.ip, ports)?;
    }
    Ok(())
}

/// Detaches a pod: its hostPort rules, its host veth (the pod end goes with it) and
/// its address. Whatever is already gone is skipped, so this may run after a crash or
/// twice. The address is released last, so a crash midway leaves a record for `gc`.
pub fn teardown(cfg: &NetConfig, pod_key: &str) -> Result<()> {
    cfg.check()?;
    let pool = ipam::Pool::new(&cfg.state_dir, &cfg.bridge, cfg.cidr);
    // Not locked while detaching: deleting a veth waits out the kernel's RCU grace
    // periods (~25 ms here), and other pods' set-ups need the lock meanwhile.
    let rec = pool.lock()?.get(pod_key).cloned();
    let host_veth = rec.as_ref().map_or_else(|| veth::host_name(&cfg.bridge, pod_key), |r| r.veth.clone());
    detach(cfg, &host_veth, rec.as_ref().is_none_or(|r| !r.ports.is_empty()))?;
    let mut l = pool.lock()?;
    if l.release(pod_key).is_some() {
        l.commit()?;
    }
    Ok(())
}

fn detach(cfg: &NetConfig, host_veth: &str, has_rules: bool) -> Result<()> {
    if has_rules {
        let mut nft = portmap::open().map_err(|e| nl_open_err("nftables", e))?;
        portmap::remove(&mut nft, &cfg.bridge, host_veth)?;
    }
    let mut sock = rtnl::open().map_err(|e| nl_open_err("links", e))?;
    veth::delete(&mut sock, host_veth)?;
    Ok(())
}

/// The pods that have an address on this bridge, by key.
pub fn allocations(cfg: &NetConfig) -> Result<Vec<(String, Ipv4Addr)>> {
    cfg.check()?;
    let pool = ipam::Pool::new(&cfg.state_dir, &cfg.bridge, cfg.cidr);
    let l = pool.lock()?;
    Ok(l.pods().iter().map(|(k, a)| (k.clone(), a.ip)).collect())
}

/// The name `setup` gives the host end of the pod's veth.
pub fn host_veth_name(cfg: &NetConfig, pod_key: &str) -> String {
    veth::host_name(&cfg.bridge, pod_key)
}

/// Removes what pods that are gone left behind (for `nodectl gc` after a SIGKILL):
/// the addresses, veths and rules of every pod whose key `alive` says is gone, and
/// veths on the bridge and rules in its table that belong to no pod in the pool. The
/// bridge stays (see `remove_bridge`).
pub fn gc(cfg: &NetConfig, alive: impl Fn(&str) -> bool) -> Result<GcReport> {
    cfg.check()?;
    let pool = ipam::Pool::new(&cfg.state_dir, &cfg.bridge, cfg.cidr);
    // The lock is held throughout: a set-up records its veth under this lock before it
    // creates it, so no veth of a pod being set up can look like a stray here.
    let mut l = pool.lock()?;
    let mut report = GcReport::default();
    let dead: Vec<(String, ipam::Allocation)> =
        l.pods().iter().filter(|(k, _)| !alive(k)).map(|(k, a)| (k.clone(), a.clone())).collect();
    let mut sock = rtnl::open().map_err(|e| nl_open_err("links", e))?;
    for (key, a) in &dead {
        if veth::delete(&mut sock, &a.veth)? {
            report.veths_removed.push(a.veth.clone());
        }
        l.release(key);
        report.released.push((key.clone(), a.ip));
    }
    let known: BTreeSet<String> = l.pods().values().map(|a| a.veth.clone()).collect();
    if let Some(br) = rtnl::link(&mut sock, &cfg.bridge).map_err(|e| Error::Netlink {
        op: "looking up bridge",
        what: cfg.bridge.clone(),
        source: e,
    })? {
        let links = rtnl::links(&mut sock).map_err(|e| Error::Netlink {
            op: "listing links on bridge",
            what: cfg.bridge.clone(),
            source: e,
        })?;
        for link in &links {
            let Some(name) = rtnl::name(link) else {
                continue;
            };
            let stray = rtnl::master(link) == Some(br.header.index)
                && rtnl::kind(link) == Some(&netlink_packet_route::link::InfoKind::Veth)
                && !known.contains(name);
            if stray && veth::delete(&mut sock, name)? {
                report.veths_removed.push(name.to_string());
            }
        }
    }
    let mut nft = portmap::open().map_err(|e| nl_open_err("nftables", e))?;
    report.rules_removed = portmap::remove_where(&mut nft, &cfg.bridge, |v| !known.contains(v))?;
    l.commit()?;
    Ok(report)
}

/// Deletes the bridge, its nftables tables (hostPorts, Services, masquerade), its VXLAN
/// device and its address pool. Refused while any pod
/// has an address (run `teardown` or `gc` first). For tests and uninstalling.
pub fn remove_bridge(cfg: &NetConfig) -> Result<()> {
    cfg.check()?;
    let pool = ipam::Pool::new(&cfg.state_dir, &cfg.bridge, cfg.cidr);
    let l = pool.lock()?;
    if !l.pods().is_empty() {
        return Err(Error::BridgeInUse { bridge: cfg.bridge.clone(), pods: l.pods().len() });
    }
    let mut nft = portmap::open().map_err(|e| nl_open_err("nftables", e))?;
    portmap::delete_table(&mut nft, &cfg.bridge)?;
    services::delete_table(&cfg.bridge)
        .map_err(|e| Error::Nft { what: e.to_string(), source: std::io::Error::other("services") })?;
    masquerade::delete_table(&cfg.bridge)?;
    vxlan::remove(&cfg.bridge)?;
    let mut sock = rtnl::open().map_err(|e| nl_open_err("links", e))?;
    rtnl::delete_link(&mut sock, &cfg.bridge).map_err(|e| Error::Netlink {
        op: "deleting bridge",
        what: cfg.bridge.clone(),
        source: e,
    })?;
    let dir = pool.dir().to_path_buf();
    drop(l);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::Io { op: "removing the address pool", path: dir, source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_bad_value() {
        let d = PathBuf::from("/tmp/x");
        assert!(NetConfig::new("nodectl0", "10.88.0.0/16", d.clone()).is_ok());
        for (br, cidr, needle) in [
            ("a-very-long-bridge-name", "10.88.0.0/16", "a-very-long-bridge-name"),
            ("bad/name", "10.88.0.0/16", "bad/name"),
            ("", "10.88.0.0/16", "bridge name"),
            ("br", "10.88.0.1/16", "10.88.0.0/16"),
            ("br", "10.88.0.0/31", "/30"),
            ("br", "fd00::/64", "fd00::/64"),
            ("br", "nonsense", "nonsense"),
        ] {
            let e = NetConfig::new(br, cidr, d.clone()).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn a_hand_made_config_is_checked_before_use() {
        let dir = tempfile::tempdir().unwrap();
        let ns = dir.path().join("ns");
        for (bridge, cidr) in [("../etc", "10.0.0.0/24"), ("br", "10.0.0.0/32"), ("br", "10.0.0.9/24")] {
            let cfg = NetConfig {
                bridge: bridge.into(),
                cidr: cidr.parse().unwrap(),
                state_dir: dir.path().into(),
                mtu: None,
            };
            assert!(setup(&cfg, "k", &ns, &[]).is_err());
            assert!(teardown(&cfg, "k").is_err());
            assert!(gc(&cfg, |_| true).is_err());
        }
        let cfg = NetConfig::new("br", "10.0.0.0/24", dir.path().into()).unwrap();
        assert!(matches!(setup(&cfg, "", &ns, &[]), Err(Error::EmptyPodKey)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
    }

    #[test]
    fn duplicate_or_zero_ports_are_refused() {
        let p = |hp, cp| PortMapping { host_port: hp, container_port: cp, protocol: Protocol::Tcp, host_ip: None };
        assert!(check_ports(&[p(80, 8080), p(81, 8080)]).is_ok());
        assert!(check_ports(&[p(80, 8080), p(80, 9090)]).unwrap_err().to_string().contains("80->9090"));
        assert!(check_ports(&[p(0, 1)]).is_err());
    }
}
