//! The node's bridge: every pod's veth is a port of it, and it holds the gateway
//! address (the CIDR's first host address), so pods on it reach each other at layer 2
//! and the host at layer 3. Kept when the last pod goes, as CNI's bridge plugin does:
//! another pod is likely to come, and a bridge costs nothing idle.

use super::netlink::Socket;
use super::{Error, NetConfig, Result, ipam, rtnl};
use netlink_packet_route::link::InfoKind;

fn nl_err(op: &'static str, what: &str, source: std::io::Error) -> Error {
    Error::Netlink { op, what: what.to_string(), source }
}

/// Makes sure the bridge exists, is up and has the gateway address; returns its index.
pub(crate) fn ensure(sock: &mut Socket, cfg: &NetConfig) -> Result<u32> {
    let name = cfg.bridge.as_str();
    let mut link = rtnl::link(sock, name).map_err(|e| nl_err("looking up bridge", name, e))?;
    if link.is_none() {
        match rtnl::create_bridge(sock, name) {
            // EEXIST: another nodectl made it at the same moment.
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                return Err(nl_err("creating bridge", name, e));
            }
            _ => {}
        }
        link = rtnl::link(sock, name).map_err(|e| nl_err("looking up bridge", name, e))?;
    }
    let link =
        link.ok_or_else(|| nl_err("looking up bridge", name, std::io::Error::from_raw_os_error(libc::ENODEV)))?;
    if rtnl::kind(&link) != Some(&InfoKind::Bridge) {
        return Err(Error::NotABridge { name: name.to_string() });
    }
    let index = link.header.index;
    if !link.header.flags.contains(netlink_packet_route::link::LinkFlags::Up) {
        rtnl::set_up(sock, index).map_err(|e| nl_err("bringing up bridge", name, e))?;
    }
    let gw = ipam::gateway(cfg.cidr);
    match rtnl::add_address(sock, index, gw, cfg.cidr.prefix_len()) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
            Err(nl_err("adding the gateway address to bridge", &format!("{name} ({gw}/{})", cfg.cidr.prefix_len()), e))
        }
        _ => Ok(index),
    }
}
