//! The addresses of `--service-lb-pool`, each held by one Service through a record in
//! the store (as cluster IPs are), so that two servers never give one address twice.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::json;

use crate::server::registry::records;
use crate::server::store::{Backend, StoreError};

/// Where the records live, one per address.
pub const PREFIX: &str = "/registry/nodectl.io/loadbalancerips/";

fn key(ip: Ipv4Addr) -> String {
    format!("{PREFIX}{ip}")
}

fn record(ip: Ipv4Addr, ns: &str, name: &str) -> Vec<u8> {
    let obj = json!({
        "apiVersion": "nodectl.io/v1",
        "kind": "LoadBalancerIP",
        "metadata": {"name": ip.to_string()},
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": ns, "name": name}},
    });
    crate::server::registry::objects::encode(&obj)
}

/// Why a Service has no address of the pool.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("no available IPs in the pool {0}")]
    Exhausted(Ipv4Net),
    #[error("the requested IP {ip} is not in the pool {pool}")]
    Outside { ip: Ipv4Addr, pool: Ipv4Net },
    #[error("the requested IP {0} is already allocated")]
    Taken(Ipv4Addr),
    #[error("the store: {0}")]
    Store(String),
}

impl From<StoreError> for PoolError {
    fn from(e: StoreError) -> PoolError {
        PoolError::Store(e.to_string())
    }
}

/// An address of `pool` a Service may be given: not the network or broadcast address.
pub fn usable(pool: Ipv4Net, ip: Ipv4Addr) -> bool {
    pool.contains(&ip) && (pool.prefix_len() >= 31 || (ip != pool.network() && ip != pool.broadcast()))
}

/// The pool's usable addresses, in order.
fn addresses(pool: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    pool.hosts().filter(move |ip| usable(pool, *ip))
}

/// The addresses Service `ns/name` holds.
pub fn held(store: &dyn Backend, ns: &str, name: &str) -> Result<Vec<Ipv4Addr>, StoreError> {
    let list = store.list(PREFIX, None, 0, None)?;
    Ok(list
        .items
        .iter()
        .filter(|kv| records::held_by(&kv.value, ns, name))
        .filter_map(|kv| kv.key.strip_prefix(PREFIX)?.parse().ok())
        .collect())
}

/// Gives Service `ns/name` the address it asks for (`want`), or the one it holds, or the
/// lowest free one; any other it holds is given back.
pub fn assign(
    store: &dyn Backend,
    pool: Ipv4Net,
    want: Option<Ipv4Addr>,
    ns: &str,
    name: &str,
) -> Result<Ipv4Addr, PoolError> {
    let mine = held(store, ns, name)?;
    let ip = match want {
        Some(ip) if mine.contains(&ip) => ip,
        Some(ip) if !usable(pool, ip) => return Err(PoolError::Outside { ip, pool }),
        Some(ip) => {
            if !records::take(store, &key(ip), &record(ip, ns, name))? {
                return Err(PoolError::Taken(ip));
            }
            ip
        }
        None => match mine.iter().find(|ip| usable(pool, **ip)) {
            Some(ip) => *ip,
            None => take_any(store, pool, ns, name)?,
        },
    };
    for other in mine.into_iter().filter(|o| *o != ip) {
        records::release(store, &key(other), ns, name)?;
    }
    Ok(ip)
}

fn take_any(store: &dyn Backend, pool: Ipv4Net, ns: &str, name: &str) -> Result<Ipv4Addr, PoolError> {
    let used: std::collections::HashSet<String> =
        store.list(PREFIX, None, 0, None)?.items.into_iter().map(|kv| kv.key).collect();
    for ip in addresses(pool) {
        let k = key(ip);
        if !used.contains(&k) && records::take(store, &k, &record(ip, ns, name))? {
            return Ok(ip);
        }
    }
    Err(PoolError::Exhausted(pool))
}

/// Gives back every address Service `ns/name` holds.
pub fn release(store: &dyn Backend, ns: &str, name: &str) -> Result<(), StoreError> {
    for ip in held(store, ns, name)? {
        records::release(store, &key(ip), ns, name)?;
    }
    Ok(())
}

/// The Services (namespace, name) that hold an address.
pub fn holders(store: &dyn Backend) -> Result<Vec<(String, String)>, StoreError> {
    let list = store.list(PREFIX, None, 0, None)?;
    Ok(list.items.iter().filter_map(|kv| records::holder(&kv.value)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_and_broadcast_addresses_are_never_given() {
        let pool: Ipv4Net = "10.250.0.0/30".parse().unwrap();
        assert_eq!(
            addresses(pool).collect::<Vec<_>>(),
            vec![Ipv4Addr::new(10, 250, 0, 1), Ipv4Addr::new(10, 250, 0, 2)]
        );
        let one: Ipv4Net = "10.250.0.7/32".parse().unwrap();
        assert_eq!(addresses(one).collect::<Vec<_>>(), vec![Ipv4Addr::new(10, 250, 0, 7)]);
        assert!(!usable(pool, Ipv4Addr::new(10, 250, 0, 3)));
        assert!(!usable(pool, Ipv4Addr::new(10, 251, 0, 1)));
    }
}
