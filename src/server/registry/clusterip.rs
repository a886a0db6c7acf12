//! Service cluster IPs: which address of `--service-cluster-ip-range` a Service gets, and
//! the record that says it is taken.
//!
//! As kube-apiserver 1.33's IPAddress objects, every taken address is one key in the store
//! (`/registry/networking.k8s.io/ipaddresses/<ip>`), written with a create that fails if
//! the key exists. So several servers on one store never hand out one address twice: the
//! store, not a server's memory, decides who got it.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use super::error::RegistryError;
use crate::server::store::{Backend, StoreError};

/// Where the records live (kube's IPAddress objects are cluster-scoped, named by address).
pub const PREFIX: &str = "/registry/networking.k8s.io/ipaddresses/";

/// kube-apiserver's default --service-cluster-ip-range.
pub const DEFAULT_RANGE: &str = "10.96.0.0/12";

static RANGE: OnceLock<Ipv4Net> = OnceLock::new();

/// Sets the range once, at the server's start (a second call, tests in one process, keeps
/// the first).
pub fn set_range(range: Ipv4Net) {
    let _ = RANGE.set(range);
}

pub fn range() -> Ipv4Net {
    // The default parses: a constant.
    *RANGE.get_or_init(|| DEFAULT_RANGE.parse().unwrap_or_else(|_| Ipv4Net::default()))
}

/// The range's first address, kept for the `kubernetes` Service (never handed out to
/// another).
pub fn first_address(range: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(range.network()).saturating_add(1))
}

fn key(ip: Ipv4Addr) -> String {
    format!("{PREFIX}{ip}")
}

/// The record of `ip` held by Service `ns/name`, as kube's IPAddress object.
fn record(ip: Ipv4Addr, ns: &str, name: &str) -> Vec<u8> {
    let obj = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip.to_string(),
            "labels": {
                "ipaddress.kubernetes.io/ip-family": "IPv4",
                "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
            },
        },
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": ns, "name": name}},
    });
    super::objects::encode(&obj)
}

/// The Service (namespace, name) a record names.
pub use super::records::holder;

/// The cause of an invalid clusterIPs, as kube's REST storage words it.
fn refused(name: &str, ips: &[String], why: String) -> RegistryError {
    let list: Vec<String> = ips.iter().map(|i| format!("{i:?}")).collect();
    RegistryError::invalid(
        "Service",
        name,
        vec![("spec.clusterIPs".into(), format!("Invalid value: []string{{{}}}: {why}", list.join(", ")))],
    )
}

fn store_error(e: StoreError) -> RegistryError {
    RegistryError::from_store(e, "ipaddresses", "")
}

/// Does this Service get a cluster IP? Not ExternalName, not headless.
pub fn wants_ip(spec: &Value) -> bool {
    spec["type"] != "ExternalName" && spec["clusterIP"] != "None"
}

/// Takes the address Service `ns/name` asks for, or a free one, and writes it into the
/// spec (clusterIP, clusterIPs). `Invalid` naming spec.clusterIPs if the requested address
/// is outside the range or taken.
pub fn allocate(store: &dyn Backend, spec: &mut Value, ns: &str, name: &str) -> Result<Ipv4Addr, RegistryError> {
    let range = range();
    let requested = spec["clusterIP"].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    if let Some(want) = requested {
        let ips = vec![want.clone()];
        let ip: Ipv4Addr = match want.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => ip,
            // Validation refuses what is not an address; IPv6 is not served.
            _ => return Err(refused(name, &ips, format!("failed to allocate IP {want}: not an IPv4 address"))),
        };
        if !usable(range, ip) {
            return Err(refused(
                name,
                &ips,
                format!(
                    "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}"
                ),
            ));
        }
        return match store.create(&key(ip), &record(ip, ns, name)) {
            Ok(_) => {
                spec["clusterIPs"] = json!([ip.to_string()]);
                Ok(ip)
            }
            Err(StoreError::AlreadyExists { .. }) => {
                Err(refused(name, &ips, format!("failed to allocate IP {ip}: provided IP is already allocated")))
            }
            Err(e) => Err(store_error(e)),
        };
    }
    let ip = allocate_any(store, range, ns, name)?;
    spec["clusterIP"] = json!(ip.to_string());
    spec["clusterIPs"] = json!([ip.to_string()]);
    Ok(ip)
}

/// An address of `range` a Service may be given: not the network or broadcast address.
fn usable(range: Ipv4Net, ip: Ipv4Addr) -> bool {
    range.contains(&ip) && ip != range.network() && (range.prefix_len() >= 31 || ip != range.broadcast())
}

/// A free address, from a random start so that servers sharing a store rarely race for
/// the same one; a lost race (the key exists) moves on to the next.
fn allocate_any(store: &dyn Backend, range: Ipv4Net, ns: &str, name: &str) -> Result<Ipv4Addr, RegistryError> {
    let base = u32::from(range.network());
    let size: u64 = 1u64 << (32 - u32::from(range.prefix_len()));
    // Offsets 2..size-1: not the network address, not the first (the `kubernetes`
    // Service's), not the broadcast address.
    if size < 4 {
        return Err(RegistryError::internal("failed to allocate a serviceIP: range is full"));
    }
    let span = size - 3;
    let taken: std::collections::HashSet<String> =
        store.list(PREFIX, None, 0, None).map_err(store_error)?.items.into_iter().map(|kv| kv.key).collect();
    let start = rand::random::<u64>() % span;
    for i in 0..span {
        let offset = 2 + (start + i) % span;
        let ip = Ipv4Addr::from(base.wrapping_add(offset as u32));
        let k = key(ip);
        if taken.contains(&k) {
            continue;
        }
        match store.create(&k, &record(ip, ns, name)) {
            Ok(_) => return Ok(ip),
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(store_error(e)),
        }
    }
    Err(RegistryError::internal("failed to allocate a serviceIP: range is full"))
}

/// Frees the addresses `spec` holds, if their records name Service `ns/name` (a record
/// another Service holds is left alone).
pub fn release(store: &dyn Backend, spec: &Value, ns: &str, name: &str) -> Result<(), RegistryError> {
    for ip in held(spec) {
        super::records::release(store, &key(ip), ns, name).map_err(store_error)?;
    }
    Ok(())
}

/// The IPv4 addresses a Service spec holds (clusterIPs, else clusterIP).
pub fn held(spec: &Value) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = match spec["clusterIPs"].as_array() {
        Some(a) if !a.is_empty() => a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect(),
        _ => spec["clusterIP"].as_str().and_then(|s| s.parse().ok()).into_iter().collect(),
    };
    out.dedup();
    out
}

/// Kube's repair controller, one pass: a record whose Service is gone or no longer holds
/// its address is freed; an address a Service holds without a record gets one again.
/// `services` are the stored Services, listed before this call. A record is freed only if
/// it was already an orphan, unchanged, in the previous pass (`suspects`): a Service being
/// created takes its record before it is stored, and must not lose it meanwhile.
/// Answers (freed, re-recorded).
pub fn repair(
    store: &dyn Backend,
    services: &[Value],
    suspects: &mut std::collections::HashSet<(String, i64)>,
) -> Result<(usize, usize), RegistryError> {
    let holds = super::records::holders(services, |spec| held(spec).into_iter().map(key));
    let record = |k: &str, ns: &str, name: &str| {
        let ip = k.strip_prefix(PREFIX).and_then(|s| s.parse().ok()).unwrap_or(Ipv4Addr::UNSPECIFIED);
        record(ip, ns, name)
    };
    super::records::repair(store, PREFIX, &holds, record, suspects).map_err(store_error)
}
