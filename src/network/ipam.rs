//! Pod addresses from a pool persisted on disk (CNI's host-local does the same job).
//!
//! One JSON file per bridge, `STATE/<bridge>/ipam.json`, changed only under an
//! exclusive flock on `STATE/<bridge>/ipam.lock`, so two `nodectl run` processes never
//! hand out the same address. The file is replaced by rename, so a crash leaves
//! either the old or the new pool, never half of one. It is not fsynced: losing the
//! last allocation to a power cut only matters if its pod survived the power cut,
//! which it does not.
//!
//! Addresses are handed out round-robin after the last one given, as host-local
//! does, so an address just released (whose conntrack entries and peers' ARP caches
//! may still point at the old pod) is not reused at once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{Error, PortMapping, Result};
use crate::sys::lock::FileLock;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    /// The host end of the pod's veth pair, so teardown and gc find it without the key.
    pub veth: String,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PoolFile {
    cidr: String,
    #[serde(default)]
    last: Option<Ipv4Addr>,
    #[serde(default)]
    pods: BTreeMap<String, Allocation>,
}

pub(crate) struct Pool {
    dir: PathBuf,
    bridge: String,
    cidr: Ipv4Net,
}

/// The pool, read under its lock; changes are written by `commit`, and the lock is
/// released when this is dropped.
pub(crate) struct Locked {
    _lock: FileLock,
    path: PathBuf,
    dir: PathBuf,
    bridge: String,
    cidr: Ipv4Net,
    file: PoolFile,
    dirty: bool,
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io { op, path: path.to_path_buf(), source }
}

impl Pool {
    pub fn new(state_dir: &Path, bridge: &str, cidr: Ipv4Net) -> Pool {
        Pool { dir: state_dir.join(bridge), bridge: bridge.to_string(), cidr }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn lock(&self) -> Result<Locked> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err("creating the address pool directory", &self.dir, e))?;
        let lock_path = self.dir.join("ipam.lock");
        let lock = FileLock::exclusive(&lock_path).map_err(|e| io_err("locking the address pool", &lock_path, e))?;
        let path = self.dir.join("ipam.json");
        let mut file = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<PoolFile>(&bytes)
                .map_err(|e| Error::State { path: path.clone(), reason: e.to_string() })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => PoolFile::default(),
            Err(e) => return Err(io_err("reading the address pool", &path, e)),
        };
        let want = self.cidr.to_string();
        if file.cidr != want {
            if !file.pods.is_empty() {
                return Err(Error::CidrChanged {
                    bridge: self.bridge.clone(),
                    old: file.cidr.clone(),
                    new: want,
                    pods: file.pods.len(),
                });
            }
            file.cidr = want;
            file.last = None;
        }
        Ok(Locked {
            _lock: lock,
            path,
            dir: self.dir.clone(),
            bridge: self.bridge.clone(),
            cidr: self.cidr,
            file,
            dirty: false,
        })
    }
}

impl Locked {
    pub fn get(&self, key: &str) -> Option<&Allocation> {
        self.file.pods.get(key)
    }

    pub fn pods(&self) -> &BTreeMap<String, Allocation> {
        &self.file.pods
    }

    /// Gives `key` an address: the one it already has, or the next free one. Refuses
    /// host ports another pod on this bridge maps: its DNAT rule would come first and
    /// take the traffic without a word.
    pub fn allocate(&mut self, key: &str, veth: &str, ports: &[PortMapping]) -> Result<Ipv4Addr> {
        for (other, a) in self.file.pods.iter().filter(|(k, _)| k.as_str() != key) {
            for p in ports {
                if a.ports.iter().any(|q| clash(p, q)) {
                    return Err(Error::PortInUse { mapping: p.to_string(), pod: other.clone() });
                }
            }
        }
        if let Some(a) = self.file.pods.get_mut(key) {
            a.veth = veth.to_string();
            a.ports = ports.to_vec();
            self.dirty = true;
            return Ok(a.ip);
        }
        let used: BTreeSet<Ipv4Addr> = self.file.pods.values().map(|a| a.ip).collect();
        let (first, last) = host_range(self.cidr);
        let (first, last) = (u32::from(first), u32::from(last));
        let start = match self.file.last.map(u32::from) {
            Some(l) if l >= first && l < last => l + 1,
            _ => first,
        };
        let span = last - first + 1;
        for i in 0..span {
            let ip = Ipv4Addr::from(first + (start - first + i) % span);
            if !used.contains(&ip) {
                self.file
                    .pods
                    .insert(key.to_string(), Allocation { ip, veth: veth.to_string(), ports: ports.to_vec() });
                self.file.last = Some(ip);
                self.dirty = true;
                return Ok(ip);
            }
        }
        Err(Error::PoolFull { bridge: self.bridge.clone(), cidr: self.cidr, allocated: used.len() })
    }

    pub fn release(&mut self, key: &str) -> Option<Allocation> {
        let a = self.file.pods.remove(key);
        self.dirty |= a.is_some();
        a
    }

    pub fn commit(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut tmp =
            tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| io_err("writing the address pool", &self.dir, e))?;
        let bytes = serde_json::to_vec_pretty(&self.file)
            .map_err(|e| Error::State { path: self.path.clone(), reason: e.to_string() })?;
        tmp.write_all(&bytes).map_err(|e| io_err("writing the address pool", tmp.path(), e))?;
        tmp.persist(&self.path).map_err(|e| io_err("replacing the address pool", &self.path, e.error))?;
        self.dirty = false;
        Ok(())
    }
}

fn clash(a: &PortMapping, b: &PortMapping) -> bool {
    a.host_port == b.host_port
        && a.protocol == b.protocol
        && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
}

/// The addresses pods may get: not the network address, not the gateway (the first
/// host address, on the bridge), not the broadcast address.
pub(crate) fn host_range(cidr: Ipv4Net) -> (Ipv4Addr, Ipv4Addr) {
    let net = u32::from(cidr.network());
    let bcast = u32::from(cidr.broadcast());
    (Ipv4Addr::from(net + 2), Ipv4Addr::from(bcast - 1))
}

/// The bridge's own address in the pod range (its first host address): the pods' default
/// gateway, and where the node's cluster DNS listens for them.
pub fn gateway(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(dir: &Path, cidr: &str) -> Pool {
        Pool::new(dir, "br", cidr.parse().unwrap())
    }

    #[test]
    fn the_gateway_is_the_ranges_first_address() {
        assert_eq!(gateway("10.244.3.0/24".parse().unwrap()), Ipv4Addr::new(10, 244, 3, 1));
    }

    #[test]
    fn skips_network_gateway_and_broadcast_and_fills_up() {
        let d = tempfile::tempdir().unwrap();
        let p = pool(d.path(), "10.1.2.0/29");
        let mut l = p.lock().unwrap();
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(l.allocate(&format!("pod{i}"), "v", &[]).unwrap());
        }
        assert_eq!(got, (2..=6).map(|i| Ipv4Addr::new(10, 1, 2, i)).collect::<Vec<_>>());
        let err = l.allocate("pod5", "v", &[]).unwrap_err().to_string();
        assert!(err.contains("10.1.2.0/29"), "{err}");
        // The same key gets the same address again.
        assert_eq!(l.allocate("pod2", "v", &[]).unwrap(), Ipv4Addr::new(10, 1, 2, 4));
        l.commit().unwrap();
    }

    #[test]
    fn persists_and_hands_out_round_robin() {
        let d = tempfile::tempdir().unwrap();
        let p = pool(d.path(), "10.1.2.0/29");
        {
            let mut l = p.lock().unwrap();
            l.allocate("a", "v", &[]).unwrap();
            l.allocate("b", "v", &[]).unwrap();
            l.release("a");
            l.commit().unwrap();
        }
        let mut l = p.lock().unwrap();
        assert_eq!(l.get("b").unwrap().ip, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(l.allocate("c", "v", &[]).unwrap(), Ipv4Addr::new(10, 1, 2, 4));
    }

    #[test]
    fn a_host_port_of_another_pod_is_refused() {
        use super::super::Protocol;
        let d = tempfile::tempdir().unwrap();
        let mut l = pool(d.path(), "10.1.2.0/29").lock().unwrap();
        let m = |port, protocol, host_ip| PortMapping { host_port: port, container_port: 80, protocol, host_ip };
        l.allocate("a", "v", &[m(80, Protocol::Tcp, Some(Ipv4Addr::LOCALHOST))]).unwrap();
        let err = l.allocate("b", "v", &[m(80, Protocol::Tcp, None)]).unwrap_err().to_string();
        assert!(err.contains("80") && err.contains("\"a\""), "{err}");
        l.allocate("b", "v", &[m(80, Protocol::Udp, None), m(80, Protocol::Tcp, Some(Ipv4Addr::new(10, 0, 0, 1)))])
            .unwrap();
        // The pod itself may map it again (a second set-up).
        l.allocate("a", "v", &[m(80, Protocol::Tcp, Some(Ipv4Addr::LOCALHOST))]).unwrap();
    }

    #[test]
    fn a_changed_cidr_with_pods_left_is_refused() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut l = pool(d.path(), "10.1.2.0/29").lock().unwrap();
            l.allocate("a", "v", &[]).unwrap();
            l.commit().unwrap();
        }
        let err = pool(d.path(), "10.9.0.0/24").lock().err().unwrap().to_string();
        assert!(err.contains("10.1.2.0/29") && err.contains("10.9.0.0/24"), "{err}");
    }

    #[test]
    fn a_corrupt_pool_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("br")).unwrap();
        std::fs::write(d.path().join("br/ipam.json"), b"{not json").unwrap();
        let err = pool(d.path(), "10.1.2.0/29").lock().err().unwrap().to_string();
        assert!(err.contains("ipam.json"), "{err}");
    }
}
