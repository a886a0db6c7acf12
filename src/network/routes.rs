//! Routes to the other nodes' pod ranges, as flannel's host-gw and vxlan backends write
//! them, by netlink:
//!
//! ```text
//! host-gw: PODCIDR via INTERNALIP proto 157                       # a node on our subnet
//! vxlan:   PODCIDR via PODCIDR.0 dev VX onlink proto 157          # any other node
//!          PODCIDR.0 lladdr VTEP_MAC dev VX nud permanent         # ARP entry
//!          VTEP_MAC dev VX dst INTERNALIP self permanent          # FDB entry
//! ```
//!
//! Every route we write carries our own routing protocol number ([`PROTOCOL`]), so a
//! sync finds exactly ours in the kernel and removes those no node wants any more (nodes
//! gone, even while the daemon was down), without a file of what was written.
//!
//! [`plan`] is pure: which route each other node gets. [`Router`] makes the kernel so.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use netlink_packet_route::AddressFamily;

use super::netlink::Socket;
use super::vxlan::{self, Device};
use super::{Error, Ipv4Net, Result, rtnl};

/// Our routes' protocol number (`ip route … proto 157`): unassigned in
/// /etc/iproute2/rt_protos, and not one of the kernel's or routing daemons'.
pub const PROTOCOL: u8 = 157;

/// How a node's pods reach another node's pods (`nodectl daemon --pod-network-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// host-gw for nodes on a subnet of ours, VXLAN for the others.
    #[default]
    Auto,
    /// Direct routes only: a node not on a subnet of ours is not reached.
    HostGw,
    /// VXLAN to every node.
    Vxlan,
}

impl Backend {
    /// Whether pods' traffic may cross a VXLAN device (and so their MTU must fit in it).
    pub fn uses_vxlan(self) -> bool {
        self != Backend::HostGw
    }
}

/// Whether `local` needs its VXLAN device for any of `peers`: with vxlan always, with
/// auto once a node is off our subnets (a host-gw-only cluster has no device).
pub fn needs_device(local: &Local, peers: &[Peer]) -> bool {
    match local.backend {
        Backend::HostGw => false,
        Backend::Vxlan => true,
        Backend::Auto => peers
            .iter()
            .any(|p| p.internal_ip != local.internal_ip && !local.connected.iter().any(|n| n.contains(&p.internal_ip))),
    }
}

/// Another node, as its Node says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub pod_cidr: Ipv4Net,
    pub internal_ip: Ipv4Addr,
    /// Its VXLAN device's MAC, from its Node's annotation; None until it published it.
    pub vtep_mac: Option<[u8; 6]>,
}

/// This node: its range, its address, its backend, and the subnets it is directly on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub pod_cidr: Ipv4Net,
    pub internal_ip: Ipv4Addr,
    pub backend: Backend,
    pub connected: Vec<Ipv4Net>,
}

/// Where a route to another node's pod range goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// host-gw: through the node's own address.
    Gateway(Ipv4Addr),
    /// VXLAN: to the node's VTEP (`PODCIDR.0`), whose MAC is `mac` at `remote`.
    Vxlan { vtep: Ipv4Addr, mac: [u8; 6], remote: Ipv4Addr },
}

/// The routes this node should have, and the nodes it cannot reach, with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub routes: BTreeMap<Ipv4Net, Hop>,
    pub unreachable: Vec<(String, String)>,
}

/// The routes `local` needs to `peers` (ourselves, if among them, is left out).
pub fn plan(local: &Local, peers: &[Peer]) -> Plan {
    let mut out = Plan::default();
    for p in peers {
        if p.internal_ip == local.internal_ip || p.pod_cidr == local.pod_cidr {
            continue;
        }
        let mut why = |reason: String| out.unreachable.push((p.name.clone(), reason));
        if p.pod_cidr.contains(&local.pod_cidr) || local.pod_cidr.contains(&p.pod_cidr) {
            why(format!("its pod range {} overlaps ours, {}", p.pod_cidr, local.pod_cidr));
            continue;
        }
        let on_link = local.connected.iter().any(|n| n.contains(&p.internal_ip));
        let hop = match local.backend {
            Backend::HostGw | Backend::Auto if on_link => Hop::Gateway(p.internal_ip),
            Backend::HostGw => {
                why(format!("host-gw: its address {} is on no subnet of ours", p.internal_ip));
                continue;
            }
            Backend::Auto | Backend::Vxlan => match p.vtep_mac {
                Some(mac) => Hop::Vxlan { vtep: p.pod_cidr.network(), mac, remote: p.internal_ip },
                None => {
                    why("vxlan: it has not published its VTEP MAC yet".into());
                    continue;
                }
            },
        };
        out.routes.insert(p.pod_cidr, hop);
    }
    out
}

fn nl_err(op: &'static str, what: String, source: std::io::Error) -> Error {
    Error::Netlink { op, what, source }
}

/// The node's routes in the kernel (and its VXLAN device when the backend uses one).
pub struct Router {
    sock: Socket,
    bridge: String,
    /// The VXLAN device's source address and the pod range whose `.0` it holds.
    local: Ipv4Addr,
    pod_cidr: Ipv4Net,
    vx: Option<(String, Device)>,
}

/// What one [`Router::apply`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub removed: usize,
}

impl Router {
    /// Opens the node's router; its VXLAN device has source `local` (see
    /// [`Router::ensure_device`]).
    pub fn new(bridge: &str, local: Ipv4Addr, pod_cidr: Ipv4Net) -> Result<Router> {
        let sock = rtnl::open().map_err(|e| nl_err("opening a netlink socket for", "routes".into(), e))?;
        Ok(Router { sock, bridge: bridge.to_string(), local, pod_cidr, vx: None })
    }

    /// Makes sure of the VXLAN device; its MAC.
    pub fn ensure_device(&mut self) -> Result<[u8; 6]> {
        let name = vxlan::device_name(&self.bridge);
        let dev = vxlan::ensure(&mut self.sock, &name, self.local, self.pod_cidr)?;
        self.vx = Some((name, dev));
        Ok(dev.mac)
    }

    /// The VXLAN device's MAC, which the other nodes' entries point at.
    pub fn vtep_mac(&self) -> Option<[u8; 6]> {
        self.vx.as_ref().map(|(_, d)| d.mac)
    }

    /// The subnets this node is directly on: its addresses' networks, but for loopback,
    /// host routes (/32), the pod bridge and the VXLAN device.
    pub fn connected(&mut self) -> Result<Vec<Ipv4Net>> {
        let ours = |sock: &mut Socket, name: &str| rtnl::link(sock, name).ok().flatten().map(|l| l.header.index);
        let skip: Vec<u32> = [Some(self.bridge.clone()), self.vx.as_ref().map(|(n, _)| n.clone())]
            .into_iter()
            .flatten()
            .filter_map(|n| ours(&mut self.sock, &n))
            .collect();
        let addrs =
            rtnl::addresses(&mut self.sock).map_err(|e| nl_err("listing addresses", "of the node".into(), e))?;
        Ok(addrs
            .iter()
            .filter(|a| !skip.contains(&a.header.index) && a.header.prefix_len < 32)
            .filter_map(|a| Some(Ipv4Net::new(rtnl::address_of(a)?, a.header.prefix_len).ok()?.trunc()))
            .filter(|n| !n.addr().is_loopback())
            .collect())
    }

    /// Makes the kernel hold the plan's routes and, on the VXLAN device, its ARP and FDB
    /// entries; removes ours that the plan does not have.
    pub fn apply(&mut self, plan: &Plan) -> Result<Applied> {
        let mut done = Applied::default();
        let vx_index = self.vx.as_ref().map(|(_, d)| d.index);
        let existing =
            rtnl::routes_of(&mut self.sock, PROTOCOL).map_err(|e| nl_err("listing routes", "of ours".into(), e))?;
        let mut have = BTreeSet::new();
        for r in &existing {
            let (dst, gw, oif) = rtnl::route_parts(r);
            let key = dst.and_then(|d| Ipv4Net::new(d, r.header.destination_prefix_length).ok());
            let wanted = key.and_then(|k| plan.routes.get(&k)).is_some_and(|hop| match *hop {
                Hop::Gateway(g) => gw == Some(g),
                Hop::Vxlan { vtep, .. } => gw == Some(vtep) && oif.is_some() && oif == vx_index,
            });
            if wanted {
                have.insert(key);
            } else if rtnl::delete_route(&mut self.sock, r)
                .map_err(|e| nl_err("deleting route", format!("{dst:?} via {gw:?}"), e))?
            {
                done.removed += 1;
            }
        }
        if let Some((name, dev)) = self.vx.clone() {
            self.sync_vxlan_entries(&name, dev, plan)?;
        }
        for (net, hop) in &plan.routes {
            let (gateway, onlink) = match *hop {
                Hop::Gateway(g) => (g, None),
                Hop::Vxlan { vtep, mac, remote } => {
                    let Some((name, dev)) = &self.vx else { continue };
                    rtnl::replace_arp(&mut self.sock, dev.index, vtep, mac)
                        .map_err(|e| nl_err("adding ARP entry", format!("{vtep} on {name}"), e))?;
                    rtnl::replace_fdb(&mut self.sock, dev.index, mac, remote).map_err(|e| {
                        nl_err("adding FDB entry", format!("{} dst {remote} on {name}", vxlan::format_mac(mac)), e)
                    })?;
                    (vtep, Some(dev.index))
                }
            };
            if have.contains(&Some(*net)) {
                continue;
            }
            rtnl::replace_route(&mut self.sock, net.network(), net.prefix_len(), gateway, onlink, PROTOCOL)
                .map_err(|e| nl_err("adding route", format!("{net} via {gateway}"), e))?;
            done.added += 1;
        }
        Ok(done)
    }

    /// Removes the device's ARP and FDB entries that no planned route uses.
    fn sync_vxlan_entries(&mut self, name: &str, dev: Device, plan: &Plan) -> Result<()> {
        let wanted: Vec<(Ipv4Addr, [u8; 6], Ipv4Addr)> = plan
            .routes
            .values()
            .filter_map(|h| match *h {
                Hop::Vxlan { vtep, mac, remote } => Some((vtep, mac, remote)),
                Hop::Gateway(_) => None,
            })
            .collect();
        let arp = rtnl::neighbours(&mut self.sock, AddressFamily::Inet, dev.index)
            .map_err(|e| nl_err("listing ARP entries", name.to_string(), e))?;
        for n in &arp {
            let (ip, mac) = rtnl::neighbour_parts(n);
            if !wanted.iter().any(|(v, m, _)| Some(*v) == ip && Some(*m) == mac) {
                rtnl::delete_neighbour(&mut self.sock, n)
                    .map_err(|e| nl_err("deleting ARP entry", format!("{ip:?} on {name}"), e))?;
            }
        }
        let fdb = rtnl::neighbours(&mut self.sock, AddressFamily::Bridge, dev.index)
            .map_err(|e| nl_err("listing FDB entries", name.to_string(), e))?;
        for n in &fdb {
            let (dst, mac) = rtnl::neighbour_parts(n);
            // Only entries with a remote are ours (the device's own have none).
            if dst.is_some() && !wanted.iter().any(|(_, m, r)| Some(*r) == dst && Some(*m) == mac) {
                rtnl::delete_neighbour(&mut self.sock, n)
                    .map_err(|e| nl_err("deleting FDB entry", format!("{dst:?} on {name}"), e))?;
            }
        }
        Ok(())
    }
}

/// Removes every route of ours and the bridge's VXLAN device (for `nodectl gc`); how
/// many routes went, and whether the device did.
pub fn remove_all(bridge: &str) -> Result<(usize, bool)> {
    let mut sock = rtnl::open().map_err(|e| nl_err("opening a netlink socket for", "routes".into(), e))?;
    let mut removed = 0;
    for r in rtnl::routes_of(&mut sock, PROTOCOL).map_err(|e| nl_err("listing routes", "of ours".into(), e))? {
        if rtnl::delete_route(&mut sock, &r).map_err(|e| nl_err("deleting route", "of ours".into(), e))? {
            removed += 1;
        }
    }
    Ok((removed, vxlan::remove(bridge)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn local(backend: Backend) -> Local {
        Local {
            pod_cidr: net("10.244.1.0/24"),
            internal_ip: "192.168.1.11".parse().unwrap(),
            backend,
            connected: vec![net("192.168.1.0/24")],
        }
    }

    fn peer(name: &str, cidr: &str, ip: &str, mac: Option<u8>) -> Peer {
        Peer {
            name: name.into(),
            pod_cidr: net(cidr),
            internal_ip: ip.parse().unwrap(),
            vtep_mac: mac.map(|m| [2, 0, 0, 0, 0, m]),
        }
    }

    fn peers() -> Vec<Peer> {
        vec![
            peer("me", "10.244.1.0/24", "192.168.1.11", Some(1)),
            peer("near", "10.244.2.0/24", "192.168.1.12", Some(2)),
            peer("far", "10.244.3.0/24", "172.16.0.5", Some(3)),
            peer("far-no-mac", "10.244.4.0/24", "172.16.0.6", None),
        ]
    }

    #[test]
    fn auto_uses_host_gw_on_our_subnet_and_vxlan_elsewhere() {
        let p = plan(&local(Backend::Auto), &peers());
        assert_eq!(p.routes.len(), 2, "{p:?}");
        assert_eq!(p.routes[&net("10.244.2.0/24")], Hop::Gateway("192.168.1.12".parse().unwrap()));
        assert_eq!(
            p.routes[&net("10.244.3.0/24")],
            Hop::Vxlan {
                vtep: "10.244.3.0".parse().unwrap(),
                mac: [2, 0, 0, 0, 0, 3],
                remote: "172.16.0.5".parse().unwrap()
            }
        );
        assert_eq!(p.unreachable.len(), 1);
        assert_eq!(p.unreachable[0].0, "far-no-mac");
    }

    #[test]
    fn host_gw_never_tunnels_and_vxlan_always_does() {
        let p = plan(&local(Backend::HostGw), &peers());
        assert_eq!(p.routes.keys().copied().collect::<Vec<_>>(), vec![net("10.244.2.0/24")]);
        assert_eq!(p.unreachable.len(), 2, "{p:?}");
        let p = plan(&local(Backend::Vxlan), &peers());
        assert!(p.routes.values().all(|h| matches!(h, Hop::Vxlan { .. })), "{p:?}");
        assert_eq!(p.routes.len(), 2);
    }

    #[test]
    fn the_device_is_made_only_when_a_node_needs_it() {
        let near = &peers()[..2];
        assert!(!needs_device(&local(Backend::Auto), near));
        assert!(needs_device(&local(Backend::Auto), &peers()));
        assert!(needs_device(&local(Backend::Vxlan), near));
        assert!(needs_device(&local(Backend::Vxlan), &[]));
        assert!(!needs_device(&local(Backend::HostGw), &peers()));
    }

    #[test]
    fn overlapping_ranges_and_ourselves_get_no_route() {
        let mut ps = peers();
        ps.push(peer("overlap", "10.244.0.0/16", "192.168.1.13", Some(4)));
        let p = plan(&local(Backend::Auto), &ps);
        assert!(!p.routes.contains_key(&net("10.244.0.0/16")));
        assert!(!p.routes.contains_key(&net("10.244.1.0/24")), "no route to ourselves");
        assert!(p.unreachable.iter().any(|(n, why)| n == "overlap" && why.contains("overlaps")));
    }
}
