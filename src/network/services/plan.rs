//! The nftables content a `Snapshot` calls for, as data, and the difference between two
//! of them: what one batch must add and remove. Pure; `apply.rs` turns it into netlink.
//!
//! The layout follows kube-proxy's nftables mode (pkg/proxy/nftables): verdict maps
//! `service-ips` (`ip daddr . meta l4proto . th dport`) and `service-nodeports`
//! (`meta l4proto . th dport`, for the node's own addresses) send new connections to a
//! chain per Service port, which spreads them with `numgen random mod N vmap` over a
//! chain per endpoint doing the DNAT; `no-endpoint-services` / `no-endpoint-nodeports`
//! send connections to ports without endpoints to a reject. Only those per-port chains
//! and the map elements change as Services do; the fixed chains are made once.
//!
//! Session affinity (ClientIP) is kube-proxy's too: a set of client addresses per
//! endpoint whose elements time out, refreshed by the endpoint's chain
//! (`update @set { ip saddr }`) and looked up before the spread (`ip saddr @set goto`
//! the endpoint's chain). The timeout is part of the set's name, so a changed timeout is
//! a new set and sets are only ever added or deleted.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::model::{Snapshot, usable};
use crate::network::Protocol;

/// The maps the per-port content is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Map {
    ServiceIps,
    ServiceNodeports,
    NoEndpointServices,
    NoEndpointNodeports,
}

impl Map {
    pub(crate) const ALL: [Map; 4] =
        [Map::ServiceIps, Map::ServiceNodeports, Map::NoEndpointServices, Map::NoEndpointNodeports];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Map::ServiceIps => "service-ips",
            Map::ServiceNodeports => "service-nodeports",
            Map::NoEndpointServices => "no-endpoint-services",
            Map::NoEndpointNodeports => "no-endpoint-nodeports",
        }
    }

    /// Whether the key is `proto . port` (else `addr . proto . port`).
    pub(crate) fn by_port(self) -> bool {
        matches!(self, Map::ServiceNodeports | Map::NoEndpointNodeports)
    }
}

pub(crate) const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
pub(crate) const REJECT_CHAIN: &str = "reject-chain";

/// Where a map element sends a connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Target {
    Goto(String),
    Drop,
}

/// One rule of a per-port chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stmt {
    /// `ip saddr != CIDR jump mark-for-masquerade`: from outside the pod network.
    MasqueradeIfFromOutside(Ipv4Net),
    /// `jump mark-for-masquerade`
    Masquerade,
    /// `ip saddr CIDR goto CHAIN`: pods reaching an externalTrafficPolicy Local port
    /// take the cluster path, as in kube-proxy.
    PodsGoto(Ipv4Net, String),
    /// `numgen random mod N vmap { 0 : goto C0, … }`
    Spread(Vec<String>),
    Drop,
    /// `ip saddr EP jump mark-for-masquerade`: hairpin, a pod reaching itself.
    MasqueradeIfFrom(Ipv4Addr),
    /// `meta l4proto P dnat to IP:PORT`
    Dnat(Protocol, Ipv4Addr, u16),
    /// `ip saddr @SET goto CHAIN`: a client the endpoint served within the affinity
    /// timeout goes back to it.
    AffinityGoto(String, String),
    /// `update @SET { ip saddr }`
    AffinityUpdate(String),
}

/// A per-port chain: its rules and a comment naming the Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chain {
    pub comment: String,
    pub rules: Vec<Stmt>,
}

/// The variable part of the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Desired {
    pub chains: BTreeMap<String, Chain>,
    pub elems: BTreeMap<(Map, Vec<u8>), Target>,
    /// Affinity sets: name → timeout in seconds.
    pub sets: BTreeMap<String, u32>,
}

pub(crate) fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// `proto . port`, each field padded to 4 bytes as in the kernel's registers.
pub(crate) fn proto_port_key(p: Protocol, port: u16) -> Vec<u8> {
    let mut k = vec![proto_number(p), 0, 0, 0];
    k.extend_from_slice(&port.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

/// `addr . proto . port`
pub(crate) fn addr_proto_port_key(ip: Ipv4Addr, p: Protocol, port: u16) -> Vec<u8> {
    let mut k = ip.octets().to_vec();
    k.extend(proto_port_key(p, port));
    k
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// Computes the per-port chains and map elements of `snap`. Ports with a duplicate
/// name after the first are skipped (the caller keys them uniquely).
pub(crate) fn desired(snap: &Snapshot) -> Desired {
    let mut d = Desired::default();
    let cidr = snap.cluster.cluster_cidr;
    for sp in &snap.ports {
        // Headless: DNS answers with the endpoints, no rules.
        let Some(cip) = sp.cluster_ip else { continue };
        let base = format!("{}/{}", sp.name, proto_name(sp.protocol));
        let svc = format!("svc:{base}");
        if d.chains.contains_key(&svc) {
            continue;
        }
        let ext = format!("ext:{base}");
        let ep_chain = |ip: Ipv4Addr, port: u16| format!("ep:{base}:{ip}:{port}");
        let comment = format!("{} {}", sp.name, proto_name(sp.protocol));

        // The endpoints' chains (and affinity sets); the rules that spread over them.
        let add_endpoint_chains = |d: &mut Desired, eps: &[&super::model::Endpoint]| -> Vec<Stmt> {
            let mut names = Vec::new();
            let mut rules = Vec::new();
            for e in eps {
                let name = ep_chain(e.ip, e.port);
                let set = sp.affinity_timeout.map(|t| (format!("aff:{base}:{}:{}:{t}", e.ip, e.port), t));
                let mut ep_rules = vec![Stmt::MasqueradeIfFrom(e.ip)];
                if let Some((set, timeout)) = &set {
                    d.sets.insert(set.clone(), *timeout);
                    ep_rules.push(Stmt::AffinityUpdate(set.clone()));
                    rules.push(Stmt::AffinityGoto(set.clone(), name.clone()));
                }
                ep_rules.push(Stmt::Dnat(sp.protocol, e.ip, e.port));
                d.chains.entry(name.clone()).or_insert_with(|| Chain { comment: comment.clone(), rules: ep_rules });
                names.push(name);
            }
            rules.push(Stmt::Spread(names));
            rules
        };

        let cluster_eps = usable(&sp.endpoints, sp.internal_local);
        let key = addr_proto_port_key(cip, sp.protocol, sp.port);
        if cluster_eps.is_empty() {
            d.elems.insert((Map::NoEndpointServices, key), Target::Goto(REJECT_CHAIN.into()));
        } else {
            let spread = add_endpoint_chains(&mut d, &cluster_eps);
            let mut rules = Vec::new();
            if let Some(c) = cidr {
                rules.push(Stmt::MasqueradeIfFromOutside(c));
            }
            rules.extend(spread);
            d.chains.insert(svc.clone(), Chain { comment: comment.clone(), rules });
            d.elems.insert((Map::ServiceIps, key), Target::Goto(svc.clone()));
        }

        if sp.node_port.is_none() && sp.load_balancer_ips.is_empty() {
            continue;
        }
        let all_eps = usable(&sp.endpoints, false);
        let ext_eps = usable(&sp.endpoints, sp.external_local);
        // No endpoint anywhere: reject. Endpoints, but none here under
        // externalTrafficPolicy Local: drop, as kube-proxy (the load balancer's health
        // check steers clients to nodes that have one).
        let none = if all_eps.is_empty() { Some(Target::Goto(REJECT_CHAIN.into())) } else { None };
        let target = match none {
            Some(t) => (t, false),
            None if ext_eps.is_empty() && cidr.is_none() => (Target::Drop, false),
            None => {
                let mut rules = Vec::new();
                if sp.external_local {
                    if let Some(c) = cidr {
                        // Pods keep reaching the port through the cluster path even
                        // without an endpoint on this node.
                        if !cluster_eps.is_empty() {
                            rules.push(Stmt::PodsGoto(c, svc.clone()));
                        }
                    }
                    if ext_eps.is_empty() {
                        rules.push(Stmt::Drop);
                    } else {
                        rules.extend(add_endpoint_chains(&mut d, &ext_eps));
                    }
                } else {
                    rules.push(Stmt::Masquerade);
                    rules.extend(add_endpoint_chains(&mut d, &ext_eps));
                }
                d.chains.insert(ext.clone(), Chain { comment: comment.clone(), rules });
                (Target::Goto(ext.clone()), true)
            }
        };
        let (t, reachable) = target;
        let (ips_map, ports_map) = if reachable {
            (Map::ServiceIps, Map::ServiceNodeports)
        } else {
            (Map::NoEndpointServices, Map::NoEndpointNodeports)
        };
        if let Some(np) = sp.node_port {
            d.elems.insert((ports_map, proto_port_key(sp.protocol, np)), t.clone());
        }
        for ip in &sp.load_balancer_ips {
            d.elems.insert((ips_map, addr_proto_port_key(*ip, sp.protocol, sp.port)), t.clone());
        }
    }
    d
}

/// One batch's worth of change from `old` to `new`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Change {
    /// Chains to create (empty), then fill.
    pub add_chains: Vec<String>,
    /// Existing chains whose rules are replaced (flushed, then filled).
    pub rewrite_chains: Vec<String>,
    /// Chains to flush and delete, after the elements and rules that refer to them.
    pub del_chains: Vec<String>,
    /// Elements to delete (also those whose target changes), then to add.
    pub del_elems: Vec<(Map, Vec<u8>)>,
    pub add_elems: Vec<(Map, Vec<u8>, Target)>,
    /// Affinity sets to create before any rule refers to them, and to delete after
    /// nothing does.
    pub add_sets: Vec<(String, u32)>,
    pub del_sets: Vec<String>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        *self == Change::default()
    }
}

pub(crate) fn diff(old: &Desired, new: &Desired) -> Change {
    let mut c = Change::default();
    for (name, chain) in &new.chains {
        match old.chains.get(name) {
            None => c.add_chains.push(name.clone()),
            Some(o) if o != chain => c.rewrite_chains.push(name.clone()),
            Some(_) => {}
        }
    }
    c.del_chains = old.chains.keys().filter(|n| !new.chains.contains_key(*n)).cloned().collect();
    for (k, t) in &old.elems {
        if new.elems.get(k) != Some(t) {
            c.del_elems.push(k.clone());
        }
    }
    for (k, t) in &new.elems {
        if old.elems.get(k) != Some(t) {
            c.add_elems.push((k.0, k.1.clone(), t.clone()));
        }
    }
    c.add_sets = new.sets.iter().filter(|(n, _)| !old.sets.contains_key(*n)).map(|(n, t)| (n.clone(), *t)).collect();
    c.del_sets = old.sets.keys().filter(|n| !new.sets.contains_key(*n)).cloned().collect();
    c
}

#[cfg(test)]
mod tests {
    use super::super::model::{ClusterInfo, Endpoint, ServicePort};
    use super::*;

    fn ep(last: u8, ready: bool, terminating: bool, local: bool) -> Endpoint {
        Endpoint { ip: Ipv4Addr::new(10, 244, 0, last), port: 8080, ready, serving: true, terminating, local }
    }

    fn port(name: &str, ip: u8, eps: Vec<Endpoint>) -> ServicePort {
        ServicePort::cluster_ip(name, Ipv4Addr::new(10, 96, 0, ip), Protocol::Tcp, 80, eps)
    }

    fn snap(ports: Vec<ServicePort>) -> Snapshot {
        Snapshot { cluster: ClusterInfo { cluster_cidr: Some("10.244.0.0/16".parse().unwrap()) }, ports }
    }

    #[test]
    fn a_service_gets_a_chain_an_element_and_a_chain_per_ready_endpoint() {
        let d = desired(&snap(vec![port("ns/a:http", 1, vec![ep(1, true, false, true), ep(2, false, false, true)])]));
        let svc = &d.chains["svc:ns/a:http/tcp"];
        assert_eq!(svc.rules.len(), 2);
        assert_eq!(svc.rules[1], Stmt::Spread(vec!["ep:ns/a:http/tcp:10.244.0.1:8080".into()]));
        assert!(d.chains.contains_key("ep:ns/a:http/tcp:10.244.0.1:8080"));
        assert!(!d.chains.keys().any(|k| k.contains("10.244.0.2")), "not ready: no chain");
        let key = addr_proto_port_key(Ipv4Addr::new(10, 96, 0, 1), Protocol::Tcp, 80);
        assert_eq!(d.elems[&(Map::ServiceIps, key)], Target::Goto("svc:ns/a:http/tcp".into()));
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let d = desired(&snap(vec![port("ns/a:p", 1, vec![ep(1, false, true, true), ep(2, true, false, true)])]));
        assert_eq!(d.chains["svc:ns/a:p/tcp"].rules[1], Stmt::Spread(vec!["ep:ns/a:p/tcp:10.244.0.2:8080".into()]));
        let d = desired(&snap(vec![port("ns/a:p", 1, vec![ep(1, false, true, true)])]));
        assert_eq!(d.chains["svc:ns/a:p/tcp"].rules[1], Stmt::Spread(vec!["ep:ns/a:p/tcp:10.244.0.1:8080".into()]));
    }

    #[test]
    fn no_endpoints_rejects_and_headless_gets_nothing() {
        let mut headless = port("ns/h:p", 2, vec![ep(1, true, false, true)]);
        headless.cluster_ip = None;
        let d = desired(&snap(vec![port("ns/a:p", 1, vec![]), headless]));
        assert!(d.chains.is_empty());
        let key = addr_proto_port_key(Ipv4Addr::new(10, 96, 0, 1), Protocol::Tcp, 80);
        assert_eq!(d.elems.len(), 1);
        assert_eq!(d.elems[&(Map::NoEndpointServices, key)], Target::Goto(REJECT_CHAIN.into()));
    }

    #[test]
    fn external_traffic_policy_local_without_local_endpoints_drops_external_only() {
        let mut p = port("ns/a:p", 1, vec![ep(1, true, false, false)]);
        p.node_port = Some(30080);
        p.external_local = true;
        let d = desired(&snap(vec![p]));
        assert_eq!(
            d.chains["ext:ns/a:p/tcp"].rules,
            vec![Stmt::PodsGoto("10.244.0.0/16".parse().unwrap(), "svc:ns/a:p/tcp".into()), Stmt::Drop]
        );
        assert_eq!(
            d.elems[&(Map::ServiceNodeports, proto_port_key(Protocol::Tcp, 30080))],
            Target::Goto("ext:ns/a:p/tcp".into())
        );
    }

    #[test]
    fn client_ip_affinity_gets_a_set_per_endpoint_looked_up_before_the_spread() {
        let mut p = port("ns/a:p", 1, vec![ep(1, true, false, true), ep(2, true, false, true)]);
        p.affinity_timeout = Some(60);
        let d = desired(&snap(vec![p.clone()]));
        let (s1, s2) = ("aff:ns/a:p/tcp:10.244.0.1:8080:60", "aff:ns/a:p/tcp:10.244.0.2:8080:60");
        assert_eq!(d.sets, BTreeMap::from([(s1.to_string(), 60), (s2.to_string(), 60)]));
        let (e1, e2) = ("ep:ns/a:p/tcp:10.244.0.1:8080", "ep:ns/a:p/tcp:10.244.0.2:8080");
        assert_eq!(
            d.chains["svc:ns/a:p/tcp"].rules[1..],
            [
                Stmt::AffinityGoto(s1.into(), e1.into()),
                Stmt::AffinityGoto(s2.into(), e2.into()),
                Stmt::Spread(vec![e1.into(), e2.into()])
            ]
        );
        assert_eq!(d.chains[e1].rules[1], Stmt::AffinityUpdate(s1.into()));

        // A new timeout is new sets; no affinity, none.
        p.affinity_timeout = Some(30);
        let c = diff(&d, &desired(&snap(vec![p.clone()])));
        assert_eq!(c.add_sets.len(), 2);
        assert_eq!(c.del_sets, vec![s1.to_string(), s2.to_string()]);
        p.affinity_timeout = None;
        let c = diff(&d, &desired(&snap(vec![p])));
        assert!(c.add_sets.is_empty());
        assert_eq!(c.del_sets.len(), 2);
    }

    #[test]
    fn diff_touches_only_what_changed() {
        let a = port("ns/a:p", 1, vec![ep(1, true, false, true)]);
        let b = port("ns/b:p", 2, vec![ep(2, true, false, true)]);
        let old = desired(&snap(vec![a.clone(), b.clone()]));
        assert!(diff(&old, &old).is_empty());

        // b gains an endpoint: its service chain is rewritten, one endpoint chain added.
        let mut b2 = b.clone();
        b2.endpoints.push(ep(3, true, false, true));
        let c = diff(&old, &desired(&snap(vec![a.clone(), b2])));
        assert_eq!(c.add_chains, vec!["ep:ns/b:p/tcp:10.244.0.3:8080".to_string()]);
        assert_eq!(c.rewrite_chains, vec!["svc:ns/b:p/tcp".to_string()]);
        assert!(c.del_chains.is_empty() && c.del_elems.is_empty() && c.add_elems.is_empty());

        // b is deleted: its chains and element go, a is untouched.
        let c = diff(&old, &desired(&snap(vec![a.clone()])));
        assert!(c.add_chains.is_empty() && c.rewrite_chains.is_empty() && c.add_elems.is_empty());
        assert_eq!(c.del_chains.len(), 2);
        assert!(c.del_chains.iter().all(|n| n.contains("ns/b:p")));
        assert_eq!(
            c.del_elems,
            vec![(Map::ServiceIps, addr_proto_port_key(Ipv4Addr::new(10, 96, 0, 2), Protocol::Tcp, 80))]
        );

        // a loses its endpoints: its element moves to the reject map.
        let mut a0 = a.clone();
        a0.endpoints.clear();
        let c = diff(&old, &desired(&snap(vec![a0, b])));
        assert_eq!(c.del_elems.len(), 1);
        assert_eq!(c.add_elems.len(), 1);
        assert_eq!(c.add_elems[0].0, Map::NoEndpointServices);
        assert_eq!(c.del_chains.len(), 2);
    }
}
