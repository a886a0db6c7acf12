//! Writes a `plan::Change` to the kernel as one nf_tables batch.
//!
//! Fixed content of `ip nodectl_svc_<bridge>` (made by the first apply):
//!
//! ```text
//! map service-ips / no-endpoint-services { ipv4_addr . inet_proto . inet_service : verdict }
//! map service-nodeports / no-endpoint-nodeports { inet_proto . inet_service : verdict }
//! chain nat-prerouting  { type nat hook prerouting priority dstnat; jump services }
//! chain nat-output      { type nat hook output priority -100; jump services }
//! chain nat-postrouting { type nat hook postrouting priority srcnat; jump masquerading }
//! chain filter-input    { type filter hook input priority -110;
//!     ct state new jump nodeport-endpoints-check; ct state new jump service-endpoints-check }
//! chain filter-forward / filter-output { … ct state new jump service-endpoints-check }
//! chain services { ip daddr . meta l4proto . th dport vmap @service-ips
//!     fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports }
//! chain service-endpoints-check  { ip daddr . meta l4proto . th dport vmap @no-endpoint-services }
//! chain nodeport-endpoints-check { fib daddr type local ip daddr != 127.0.0.0/8
//!                                  meta l4proto . th dport vmap @no-endpoint-nodeports }
//! chain mark-for-masquerade { meta mark set mark | 0x4000 }
//! chain masquerading { meta mark & 0x4000 == 0 return; meta mark set mark ^ 0x4000; masquerade }
//! chain reject-chain { reject }
//! ```
//!
//! and per endpoint of a Service with ClientIP affinity, `set aff:… { type ipv4_addr;
//! flags dynamic,timeout; timeout T }`.
//!
//! The reject happens in filter hooks (the kernel allows `reject` only there), for new
//! connections, so a client gets "connection refused" at once rather than a timeout.

use std::net::Ipv4Addr;

use super::plan::{self, Change, Desired, MARK_FOR_MASQUERADE, Map, REJECT_CHAIN, Stmt, Target};
use crate::network::netlink::Socket;
use crate::network::nft::{self, Batch, NF_INET_LOCAL_OUT, NF_INET_POST_ROUTING, NF_INET_PRE_ROUTING, Rule, Verdict};

const NF_INET_LOCAL_IN: u32 = 1;
const NF_INET_FORWARD: u32 = 2;
/// kube-proxy's masquerade bit.
const MASQ_BIT: u32 = 0x4000;
const SERVICES: &str = "services";
const MASQUERADING: &str = "masquerading";
const SERVICE_CHECK: &str = "service-endpoints-check";
const NODEPORT_CHECK: &str = "nodeport-endpoints-check";

fn verdict(t: &Target) -> Verdict {
    match t {
        Target::Goto(c) => Verdict::Goto(c.clone()),
        Target::Drop => Verdict::Drop,
    }
}

fn rule(s: &Stmt) -> Rule {
    let mut r = Rule::default();
    match s {
        Stmt::MasqueradeIfFromOutside(c) => {
            r.saddr_not_in(c.network(), c.prefix_len()).then(&Verdict::Jump(MARK_FOR_MASQUERADE.into()));
        }
        Stmt::Masquerade => {
            r.then(&Verdict::Jump(MARK_FOR_MASQUERADE.into()));
        }
        Stmt::PodsGoto(c, chain) => {
            r.saddr_in(c.network(), c.prefix_len()).then(&Verdict::Goto(chain.clone()));
        }
        Stmt::Spread(chains) => {
            r.numgen_vmap(chains.iter().map(|c| Verdict::Goto(c.clone())).collect());
        }
        Stmt::Drop => {
            r.drop_packet();
        }
        Stmt::MasqueradeIfFrom(ip) => {
            r.saddr_is(*ip).then(&Verdict::Jump(MARK_FOR_MASQUERADE.into()));
        }
        Stmt::Dnat(p, ip, port) => {
            r.l4proto(plan::proto_number(*p)).dnat(*ip, *port);
        }
        Stmt::AffinityGoto(set, chain) => {
            r.saddr_in_set(set).then(&Verdict::Goto(chain.clone()));
        }
        Stmt::AffinityUpdate(set) => {
            r.update_set_with_saddr(set);
        }
    }
    r
}

/// The table, its maps and fixed chains and rules, into `b`.
pub(super) fn add_fixed(sock: &mut Socket, b: &mut Batch, table: &str) {
    b.new_table(sock, table, false);
    let ipp = nft::concat_type(&[nft::TYPE_IPADDR, nft::TYPE_INET_PROTO, nft::TYPE_INET_SERVICE]);
    let pp = nft::concat_type(&[nft::TYPE_INET_PROTO, nft::TYPE_INET_SERVICE]);
    for m in Map::ALL {
        let (ty, len) = if m.by_port() { (pp, 8) } else { (ipp, 12) };
        b.new_verdict_map(sock, table, m.name(), ty, len);
    }
    for c in [SERVICES, SERVICE_CHECK, NODEPORT_CHECK, MARK_FOR_MASQUERADE, MASQUERADING, REJECT_CHAIN] {
        b.new_chain(sock, table, c);
    }
    let fixed = "fixed";
    let mut r = Rule::default();
    r.vmap_daddr_proto_port(Map::ServiceIps.name());
    b.add_rule(sock, table, SERVICES, &r, fixed);
    let mut r = Rule::default();
    r.daddr_is_local().daddr_not_in(Ipv4Addr::new(127, 0, 0, 0), 8).vmap_proto_port(Map::ServiceNodeports.name());
    b.add_rule(sock, table, SERVICES, &r, fixed);
    let mut r = Rule::default();
    r.vmap_daddr_proto_port(Map::NoEndpointServices.name());
    b.add_rule(sock, table, SERVICE_CHECK, &r, fixed);
    let mut r = Rule::default();
    r.daddr_is_local().daddr_not_in(Ipv4Addr::new(127, 0, 0, 0), 8).vmap_proto_port(Map::NoEndpointNodeports.name());
    b.add_rule(sock, table, NODEPORT_CHECK, &r, fixed);
    let mut r = Rule::default();
    r.mark_set(MASQ_BIT, false);
    b.add_rule(sock, table, MARK_FOR_MASQUERADE, &r, fixed);
    let mut r = Rule::default();
    r.mark_has(MASQ_BIT, false).then(&Verdict::Return);
    b.add_rule(sock, table, MASQUERADING, &r, fixed);
    let mut r = Rule::default();
    r.mark_set(MASQ_BIT, true).masquerade();
    b.add_rule(sock, table, MASQUERADING, &r, fixed);
    let mut r = Rule::default();
    r.reject();
    b.add_rule(sock, table, REJECT_CHAIN, &r, fixed);

    b.new_nat_chain(sock, table, "nat-prerouting", NF_INET_PRE_ROUTING, -100);
    b.new_nat_chain(sock, table, "nat-output", NF_INET_LOCAL_OUT, -100);
    b.new_nat_chain(sock, table, "nat-postrouting", NF_INET_POST_ROUTING, 100);
    for c in ["nat-prerouting", "nat-output"] {
        let mut r = Rule::default();
        r.then(&Verdict::Jump(SERVICES.into()));
        b.add_rule(sock, table, c, &r, fixed);
    }
    let mut r = Rule::default();
    r.then(&Verdict::Jump(MASQUERADING.into()));
    b.add_rule(sock, table, "nat-postrouting", &r, fixed);

    b.new_filter_chain(sock, table, "filter-input", NF_INET_LOCAL_IN, -110);
    b.new_filter_chain(sock, table, "filter-forward", NF_INET_FORWARD, -110);
    b.new_filter_chain(sock, table, "filter-output", NF_INET_LOCAL_OUT, -110);
    let mut r = Rule::default();
    r.ct_new().then(&Verdict::Jump(NODEPORT_CHECK.into()));
    b.add_rule(sock, table, "filter-input", &r, fixed);
    for c in ["filter-input", "filter-forward", "filter-output"] {
        let mut r = Rule::default();
        r.ct_new().then(&Verdict::Jump(SERVICE_CHECK.into()));
        b.add_rule(sock, table, c, &r, fixed);
    }
}

fn key_verdicts<'a>(items: impl Iterator<Item = (&'a Vec<u8>, &'a Target)>) -> Vec<(Vec<u8>, Verdict)> {
    items.map(|(k, t)| (k.clone(), verdict(t))).collect()
}

/// The change's messages into `b`, in an order the kernel accepts within one batch:
/// chains exist before anything refers to them and are deleted only after nothing does.
pub(super) fn add_change(sock: &mut Socket, b: &mut Batch, table: &str, new: &Desired, c: &Change) {
    for (name, timeout) in &c.add_sets {
        b.new_timeout_addr_set(sock, table, name, *timeout);
    }
    for name in &c.add_chains {
        b.new_chain(sock, table, name);
    }
    for name in &c.rewrite_chains {
        b.flush_chain(sock, table, name);
    }
    for name in c.add_chains.iter().chain(&c.rewrite_chains) {
        let chain = &new.chains[name];
        for s in &chain.rules {
            b.add_rule(sock, table, name, &rule(s), &chain.comment);
        }
    }
    for m in Map::ALL {
        let dels: Vec<(Vec<u8>, Verdict)> =
            c.del_elems.iter().filter(|(mm, _)| *mm == m).map(|(_, k)| (k.clone(), Verdict::Drop)).collect();
        b.map_elems(sock, table, m.name(), &dels, true);
    }
    for m in Map::ALL {
        let adds = key_verdicts(c.add_elems.iter().filter(|(mm, _, _)| *mm == m).map(|(_, k, t)| (k, t)));
        b.map_elems(sock, table, m.name(), &adds, false);
    }
    for name in &c.del_chains {
        b.flush_chain(sock, table, name);
    }
    for name in &c.del_chains {
        b.del_chain(sock, table, name);
    }
    for name in &c.del_sets {
        b.del_set(sock, table, name);
    }
}
