//! hostPorts: traffic to one of the host's own addresses (or to `host_ip` alone) on a
//! host port is DNATed to the pod, as CNI's portmap plugin does, in one nftables table
//! per bridge, `ip nodectl_<bridge>`:
//!
//! ```text
//! chain prerouting  { type nat hook prerouting priority dstnat; }   # from other hosts and pods
//! chain output      { type nat hook output priority -100; }         # from this host, 127.0.0.1 too
//! chain postrouting { type nat hook postrouting priority srcnat;
//!     oifname BR ip saddr 127.0.0.0/8 masquerade                    # a pod cannot answer 127.0.0.1
//!     oifname BR ct status dnat ip saddr CIDR masquerade }          # hairpin: pod -> hostPort -> pod
//! chain localnet    { type filter hook prerouting priority filter;  # CVE-2020-8558, see below
//!     ct status & (snat | dnat) != 0 accept
//!     iifname != "lo" ip daddr 127.0.0.0/8 drop }
//! # per mapping, in prerouting and output, tagged `comment "pod VETH KEY"`:
//!     fib daddr type local [ip daddr HOST_IP] meta l4proto tcp th dport HP dnat ip to POD:CP
//! ```
//!
//! A pod's rules are appended and deleted by handle, each change one atomic batch;
//! the table is never flushed or reloaded, so other pods' rules are never touched.
//! The masquerade rules match only traffic that was DNATed or comes from loopback, so
//! pod-to-pod traffic that br_netfilter passes through these hooks keeps its source.
//!
//! `localnet` is kubelet's KUBE-FIREWALL rule in nftables (CVE-2020-8558): route_localnet
//! on the bridge, which hostPorts from 127.0.0.1 need, also lets the kernel accept packets
//! *to* 127.0.0.0/8 arriving on the bridge, so a pod with CAP_NET_RAW could reach the
//! host's loopback-only services. Only replies of connections we NATed (a hostPort reached
//! from 127.0.0.1: DNATed, and masqueraded out of the bridge) may arrive for 127.0.0.0/8
//! from outside loopback; everything else is dropped before routing, after our DNAT (at
//! the filter priority). Unlike kubelet's rule, a forged loopback source does not exempt a
//! packet (route_localnet lets one through too), and a packet conntrack does not track
//! (invalid, untracked) is dropped as well.

use std::io;
use std::net::Ipv4Addr;

use super::netlink::Socket;
use super::nft::{self, Batch, NF_INET_LOCAL_OUT, NF_INET_POST_ROUTING, NF_INET_PRE_ROUTING, Rule};
use super::{Error, NetConfig, PortMapping, Result};

const PREROUTING: &str = "prerouting";
const OUTPUT: &str = "output";
const POSTROUTING: &str = "postrouting";
const LOCALNET: &str = "localnet";
/// NF_IP_PRI_FILTER: after the DNAT of prerouting (-100), so a DNATed packet is no longer
/// addressed to 127.0.0.0/8 and its conntrack entry says DNAT.
const FILTER_PRIORITY: i32 = 0;

pub(crate) fn table_name(bridge: &str) -> String {
    format!("nodectl_{bridge}")
}

fn pod_comment(veth: &str, key: &str) -> String {
    format!("pod {veth} {key}")
}

/// The veth a rule belongs to, from its comment; None for the table's fixed rules.
fn pod_of(comment: Option<&str>) -> Option<&str> {
    let mut words = comment?.split(' ');
    (words.next()? == "pod").then(|| words.next()).flatten()
}

fn nft_err(what: String, source: io::Error) -> Error {
    Error::Nft { what, source }
}

pub(crate) fn open() -> io::Result<Socket> {
    Socket::open(netlink_sys::protocols::NETLINK_NETFILTER)
}

/// Creates the bridge's table with its chains and fixed rules, once: the table is
/// created exclusively in the same batch, so concurrent callers cannot add the fixed
/// rules twice.
fn create_table(sock: &mut Socket, cfg: &NetConfig) -> Result<()> {
    let table = table_name(&cfg.bridge);
    let mut b = Batch::new(sock);
    b.new_table(sock, &table, true);
    b.new_nat_chain(sock, &table, PREROUTING, NF_INET_PRE_ROUTING, -100);
    b.new_nat_chain(sock, &table, OUTPUT, NF_INET_LOCAL_OUT, -100);
    b.new_nat_chain(sock, &table, POSTROUTING, NF_INET_POST_ROUTING, 100);
    let mut r = Rule::default();
    r.oifname_is(&cfg.bridge).saddr_in(Ipv4Addr::new(127, 0, 0, 0), 8).masquerade();
    b.add_rule(sock, &table, POSTROUTING, &r, "bridge: loopback to pods");
    let mut r = Rule::default();
    r.oifname_is(&cfg.bridge).ct_dnat().saddr_in(cfg.cidr.network(), cfg.cidr.prefix_len()).masquerade();
    b.add_rule(sock, &table, POSTROUTING, &r, "bridge: hairpin");
    // In the same batch as the table: route_localnet is never on without this drop.
    b.new_filter_chain(sock, &table, LOCALNET, NF_INET_PRE_ROUTING, FILTER_PRIORITY);
    let mut r = Rule::default();
    r.ct_natted().accept();
    b.add_rule(sock, &table, LOCALNET, &r, "bridge: replies of what we NATed");
    let mut r = Rule::default();
    r.iifname_is_not("lo").daddr_in(Ipv4Addr::new(127, 0, 0, 0), 8).drop_packet();
    b.add_rule(sock, &table, LOCALNET, &r, "bridge: no 127.0.0.0/8 from outside loopback (CVE-2020-8558)");
    match b.commit(sock) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(nft_err(format!("creating table ip {table}"), e)),
    }
}

fn proto_number(p: super::Protocol) -> u8 {
    match p {
        super::Protocol::Tcp => 6,
        super::Protocol::Udp => 17,
        super::Protocol::Sctp => 132,
    }
}

fn pod_batch(sock: &mut Socket, table: &str, comment: &str, ip: Ipv4Addr, ports: &[PortMapping]) -> Batch {
    let mut b = Batch::new(sock);
    for p in ports {
        let mut r = Rule::default();
        r.daddr_is_local();
        if let Some(h) = p.host_ip {
            r.daddr_is(h);
        }
        r.l4_dport(proto_number(p.protocol), p.host_port).dnat(ip, p.container_port);
        b.add_rule(sock, table, PREROUTING, &r, comment);
        b.add_rule(sock, table, OUTPUT, &r, comment);
    }
    b
}

/// Adds the DNAT rules of one pod.
pub(crate) fn add(
    sock: &mut Socket,
    cfg: &NetConfig,
    veth: &str,
    key: &str,
    ip: Ipv4Addr,
    ports: &[PortMapping],
) -> Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    let table = table_name(&cfg.bridge);
    let comment = pod_comment(veth, key);
    // Most calls find the table there; only the first pod with hostPorts makes it.
    match pod_batch(sock, &table, &comment, ip, ports).commit(sock) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            create_table(sock, cfg)?;
            pod_batch(sock, &table, &comment, ip, ports)
                .commit(sock)
                .map_err(|e| nft_err(format!("adding hostPort rules to table ip {table}"), e))?;
        }
        r => r.map_err(|e| nft_err(format!("adding hostPort rules to table ip {table}"), e))?,
    }
    // Only now that the table, with its localnet drop, exists (CVE-2020-8558).
    enable_sysctls(&cfg.bridge)
}

/// Deletes the rules of pods for which `doomed(veth)` is true; returns how many.
pub(crate) fn remove_where(sock: &mut Socket, bridge: &str, doomed: impl Fn(&str) -> bool) -> Result<usize> {
    let table = table_name(bridge);
    let rules =
        nft::list_rules(sock, &table).map_err(|e| nft_err(format!("listing the rules of table ip {table}"), e))?;
    let mut b = Batch::new(sock);
    let mut n = 0;
    for r in &rules {
        if pod_of(r.comment.as_deref()).is_some_and(&doomed) {
            b.del_rule(sock, &table, &r.chain, r.handle);
            n += 1;
        }
    }
    match b.commit(sock) {
        Ok(()) => Ok(n),
        // Someone else (a concurrent teardown or gc) removed them first.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(0),
        Err(e) => Err(nft_err(format!("deleting hostPort rules from table ip {table}"), e)),
    }
}

pub(crate) fn remove(sock: &mut Socket, bridge: &str, veth: &str) -> Result<usize> {
    remove_where(sock, bridge, |v| v == veth)
}

pub(crate) fn delete_table(sock: &mut Socket, bridge: &str) -> Result<()> {
    let table = table_name(bridge);
    let mut b = Batch::new(sock);
    b.del_table(sock, &table);
    match b.commit(sock) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(nft_err(format!("deleting table ip {table}"), e)),
    }
}

/// route_localnet lets 127.0.0.1 be DNATed out of the bridge (the kernel drops
/// loopback-sourced packets on other devices without it, CNI portmap sets it too);
/// ip_forward lets traffic from other hosts, and hairpin traffic when br_netfilter is
/// absent, be forwarded to pods. ip_forward is host-wide and stays on, as with CNI.
fn enable_sysctls(bridge: &str) -> Result<()> {
    for path in [format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"), "/proc/sys/net/ipv4/ip_forward".into()] {
        if std::fs::read(&path).is_ok_and(|v| v.first() == Some(&b'1')) {
            continue;
        }
        std::fs::write(&path, b"1").map_err(|e| Error::Io { op: "enabling", path: path.into(), source: e })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_comments_name_their_pod() {
        assert_eq!(pod_of(Some(&pod_comment("nd0123", "ns/name"))), Some("nd0123"));
        assert_eq!(pod_of(Some("bridge: hairpin")), None);
        assert_eq!(pod_of(None), None);
    }
}
