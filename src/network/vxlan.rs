//! The node's VXLAN device, as flannel's vxlan backend makes it: VNI 1, UDP 8472 (the
//! Linux default, not IANA's 4789, as flannel), no learning (every entry is ours), MTU
//! 1450 (1500 less VXLAN's 50 bytes of headers), and the `.0` of the node's pod range as
//! a /32, the address the other nodes' routes and ARP entries point at.

use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

use super::netlink::Socket;
use super::{Error, Ipv4Net, Result, rtnl};

pub const VNI: u32 = 1;
pub const PORT: u16 = 8472;
/// 1500 less the outer IPv4 (20), UDP (8), VXLAN (8) and inner Ethernet (14) headers.
pub const MTU: u32 = 1450;

fn nl_err(op: &'static str, what: &str, source: std::io::Error) -> Error {
    Error::Netlink { op, what: what.to_string(), source }
}

/// The device's name: `BRIDGE.vx`, or when that is too long for IFNAMSIZ, "vx" and a
/// hash of the bridge's name (the same every time, so gc finds it).
pub fn device_name(bridge: &str) -> String {
    let name = format!("{bridge}.vx");
    if name.len() <= 15 {
        return name;
    }
    let h = Sha256::digest(bridge.as_bytes());
    format!("vx{}", &hex::encode(h)[..12])
}

/// The device as it is: its index and MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    pub index: u32,
    pub mac: [u8; 6],
}

/// Makes sure the device exists with this node's settings, up, with its address; one of
/// other settings (an old InternalIP) is made again.
pub(crate) fn ensure(sock: &mut Socket, name: &str, local: Ipv4Addr, pod_cidr: Ipv4Net) -> Result<Device> {
    let look = |sock: &mut Socket| rtnl::link(sock, name).map_err(|e| nl_err("looking up VXLAN device", name, e));
    let mut link = look(sock)?;
    if let Some(l) = &link
        && (rtnl::kind(l) != Some(&netlink_packet_route::link::InfoKind::Vxlan)
            || rtnl::vxlan_info(l) != (Some(VNI), Some(local), Some(PORT)))
    {
        rtnl::delete_link(sock, name).map_err(|e| nl_err("deleting the outdated VXLAN device", name, e))?;
        link = None;
    }
    if link.is_none() {
        match rtnl::create_vxlan(sock, name, VNI, local, PORT, MTU) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(nl_err("creating VXLAN device", name, e)),
            _ => {}
        }
        link = look(sock)?;
    }
    let link =
        link.ok_or_else(|| nl_err("looking up VXLAN device", name, std::io::Error::from_raw_os_error(libc::ENODEV)))?;
    let index = link.header.index;
    if !link.header.flags.contains(netlink_packet_route::link::LinkFlags::Up) {
        rtnl::set_up(sock, index).map_err(|e| nl_err("bringing up", name, e))?;
    }
    let vtep = pod_cidr.network();
    match rtnl::add_address(sock, index, vtep, 32) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
            return Err(nl_err("adding the VTEP address to", &format!("{name} ({vtep}/32)"), e));
        }
        _ => {}
    }
    let mac = rtnl::mac_of(&link)
        .ok_or_else(|| nl_err("reading the MAC of", name, std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    Ok(Device { index, mac })
}

/// Deletes the device (its routes, ARP and FDB entries go with it); Ok(false) if none.
pub fn remove(bridge: &str) -> Result<bool> {
    let name = device_name(bridge);
    let mut sock = rtnl::open().map_err(|e| nl_err("opening a netlink socket for", &name, e))?;
    rtnl::delete_link(&mut sock, &name).map_err(|e| nl_err("deleting VXLAN device", &name, e))
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = text
        .trim()
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok().filter(|_| p.len() == 2))
        .collect::<Option<_>>()?;
    parts.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz() {
        assert_eq!(device_name("nodectl0"), "nodectl0.vx");
        let long = device_name("ncn12345x1000");
        assert!(long.len() <= 15 && long.starts_with("vx"), "{long}");
        assert_eq!(long, device_name("ncn12345x1000"));
        assert_ne!(long, device_name("ncn12345x1001"));
    }

    #[test]
    fn macs_round_trip_and_bad_ones_are_refused() {
        let mac = [0x0a, 0x1b, 0, 0xff, 0x10, 0x02];
        assert_eq!(format_mac(mac), "0a:1b:00:ff:10:02");
        assert_eq!(parse_mac("0a:1b:00:ff:10:02"), Some(mac));
        for bad in ["", "0a:1b:00:ff:10", "0a:1b:00:ff:10:02:03", "0a:1b:00:ff:10:zz", "a:1b:00:ff:10:002"] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
