//! rtnetlink requests built with netlink-packet-route and sent over our synchronous
//! socket: the few link, address and route operations pods need.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use netlink_packet_core::{NetlinkSerializable, ParseableParametrized};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netlink::{NLM_F_CREATE, NLM_F_EXCL, Socket};

pub(crate) fn open() -> io::Result<Socket> {
    Socket::open(netlink_sys::protocols::NETLINK_ROUTE)
}

fn encode(msg: &RouteNetlinkMessage) -> (u16, Vec<u8>) {
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    (msg.message_type(), buf)
}

fn send(sock: &mut Socket, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
    let (ty, payload) = encode(&msg);
    sock.request(ty, flags, &payload)
}

fn parse_links(replies: Vec<super::netlink::Reply>) -> Vec<LinkMessage> {
    replies
        .into_iter()
        .filter_map(|r| match RouteNetlinkMessage::parse_with_param(&r.payload[..], r.ty) {
            Ok(RouteNetlinkMessage::NewLink(m)) => Some(m),
            _ => None,
        })
        .collect()
}

fn by_name(name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m
}

/// The link called `name`, or None if there is none.
pub(crate) fn link(sock: &mut Socket, name: &str) -> io::Result<Option<LinkMessage>> {
    let (ty, payload) = encode(&RouteNetlinkMessage::GetLink(by_name(name)));
    match sock.call(ty, 0, &payload) {
        Ok(replies) => Ok(parse_links(replies).into_iter().next()),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn links(sock: &mut Socket) -> io::Result<Vec<LinkMessage>> {
    let (ty, payload) = encode(&RouteNetlinkMessage::GetLink(LinkMessage::default()));
    Ok(parse_links(sock.dump(ty, &payload)?))
}

pub(crate) fn name(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

pub(crate) fn master(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

pub(crate) fn kind(m: &LinkMessage) -> Option<&InfoKind> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

fn up(m: &mut LinkMessage) {
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
}

/// Creates a bridge, up. EEXIST if a link of that name exists.
pub(crate) fn create_bridge(sock: &mut Socket, name: &str) -> io::Result<()> {
    let mut m = by_name(name);
    up(&mut m);
    m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
    send(sock, RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
}

/// Creates a veth pair in one request: `host` up and enslaved to `master`, its peer
/// created directly inside the namespace `netns` as `peer`. One request means there is
/// never a half-made pair, nor a peer left in our namespace. The peer stays down: on
/// Linux 6.18 asking for it up in the same request fails with ENOTCONN (so does
/// `ip link add … type veth peer name eth0 up netns NS`).
pub(crate) fn create_veth(
    sock: &mut Socket,
    host: &str,
    master: u32,
    peer: &str,
    netns: RawFd,
    mtu: Option<u32>,
) -> io::Result<()> {
    let mut p = by_name(peer);
    p.attributes.push(LinkAttribute::NetNsFd(netns));
    let mut m = by_name(host);
    if let Some(mtu) = mtu {
        p.attributes.push(LinkAttribute::Mtu(mtu));
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    up(&mut m);
    m.attributes.push(LinkAttribute::Controller(master));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
    ]));
    send(sock, RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
}

/// Lets the bridge send a frame back out of the port it came in on: a pod reaching
/// itself through a hostPort is DNATed by br_netfilter at the bridge and goes back
/// out of its own port (CNI's hairpinMode).
pub(crate) fn set_hairpin(sock: &mut Socket, name: &str) -> io::Result<()> {
    let mut m = by_name(name);
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(true)])),
    ]));
    send(sock, RouteNetlinkMessage::NewLink(m), 0)
}

pub(crate) fn set_up(sock: &mut Socket, index: u32) -> io::Result<()> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    up(&mut m);
    send(sock, RouteNetlinkMessage::SetLink(m), 0)
}

/// Deletes the link `name`; Ok(false) if there was none.
pub(crate) fn delete_link(sock: &mut Socket, name: &str) -> io::Result<bool> {
    match send(sock, RouteNetlinkMessage::DelLink(by_name(name)), 0) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Adds `ip/prefix` to the link; EEXIST if it has it.
pub(crate) fn add_address(sock: &mut Socket, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = prefix;
    m.header.scope = AddressScope::Universe;
    m.header.index = index;
    let bcast = if prefix < 31 { u32::from(ip) | (u32::MAX >> prefix) } else { u32::from(ip) };
    m.attributes.push(AddressAttribute::Local(ip.into()));
    m.attributes.push(AddressAttribute::Address(ip.into()));
    m.attributes.push(AddressAttribute::Broadcast(Ipv4Addr::from(bcast)));
    send(sock, RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_EXCL)
}

pub(crate) fn add_default_route(sock: &mut Socket, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    m.attributes.push(RouteAttribute::Oif(index));
    send(sock, RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
}

/// NLM_F_REPLACE: a NEW request replaces an object with the same key.
const NLM_F_REPLACE: u16 = 0x100;

fn parse_all(replies: Vec<super::netlink::Reply>) -> Vec<RouteNetlinkMessage> {
    replies.into_iter().filter_map(|r| RouteNetlinkMessage::parse_with_param(&r.payload[..], r.ty).ok()).collect()
}

/// Every IPv4 address of the namespace.
pub(crate) fn addresses(sock: &mut Socket) -> io::Result<Vec<AddressMessage>> {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    let (ty, payload) = encode(&RouteNetlinkMessage::GetAddress(m));
    Ok(parse_all(sock.dump(ty, &payload)?)
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) if a.header.family == AddressFamily::Inet => Some(a),
            _ => None,
        })
        .collect())
}

/// The IPv4 address of an address message (its local address).
pub(crate) fn address_of(m: &AddressMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(std::net::IpAddr::V4(ip)) | AddressAttribute::Address(std::net::IpAddr::V4(ip)) => {
            Some(*ip)
        }
        _ => None,
    })
}

/// The IPv4 routes of the main table made with routing protocol `protocol`.
pub(crate) fn routes_of(sock: &mut Socket, protocol: u8) -> io::Result<Vec<RouteMessage>> {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    let (ty, payload) = encode(&RouteNetlinkMessage::GetRoute(m));
    Ok(parse_all(sock.dump(ty, &payload)?)
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r)
                if r.header.address_family == AddressFamily::Inet
                    && r.header.table == RouteHeader::RT_TABLE_MAIN
                    && u8::from(r.header.protocol) == protocol =>
            {
                Some(r)
            }
            _ => None,
        })
        .collect())
}

/// A route's destination, gateway and output link.
pub(crate) fn route_parts(r: &RouteMessage) -> (Option<Ipv4Addr>, Option<Ipv4Addr>, Option<u32>) {
    let (mut dst, mut gw, mut oif) = (None, None, None);
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    (dst, gw, oif)
}

/// `DST/PREFIX via GATEWAY [dev OIF onlink] proto PROTOCOL`, replacing one to the same
/// destination.
pub(crate) fn replace_route(
    sock: &mut Socket,
    dst: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
    onlink_oif: Option<u32>,
    protocol: u8,
) -> io::Result<()> {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = prefix;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::from(protocol);
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    if let Some(oif) = onlink_oif {
        m.header.flags = netlink_packet_route::route::RouteFlags::Onlink;
        m.attributes.push(RouteAttribute::Oif(oif));
    }
    send(sock, RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_REPLACE)
}

/// Deletes a route as a dump gave it; Ok(false) if it was gone.
pub(crate) fn delete_route(sock: &mut Socket, route: &RouteMessage) -> io::Result<bool> {
    match send(sock, RouteNetlinkMessage::DelRoute(route.clone()), 0) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A link's hardware address.
pub(crate) fn mac_of(m: &LinkMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
        _ => None,
    })
}

/// Creates a VXLAN device, up: VNI `vni`, UDP `port`, source address `local`, no
/// learning (entries come from us alone, as flannel's), of `mtu`. EEXIST if it exists.
pub(crate) fn create_vxlan(
    sock: &mut Socket,
    name: &str,
    vni: u32,
    local: Ipv4Addr,
    port: u16,
    mtu: u32,
) -> io::Result<()> {
    use netlink_packet_route::link::InfoVxlan;
    let mut m = by_name(name);
    up(&mut m);
    m.attributes.push(LinkAttribute::Mtu(mtu));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(vec![
            InfoVxlan::Id(vni),
            InfoVxlan::Local(local),
            InfoVxlan::Port(port),
            InfoVxlan::Learning(false),
        ])),
    ]));
    send(sock, RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
}

/// The VXLAN settings of a link: its VNI, local address and port.
pub(crate) fn vxlan_info(m: &LinkMessage) -> (Option<u32>, Option<Ipv4Addr>, Option<u16>) {
    use netlink_packet_route::link::InfoVxlan;
    let (mut vni, mut local, mut port) = (None, None, None);
    for a in &m.attributes {
        let LinkAttribute::LinkInfo(infos) = a else { continue };
        for i in infos {
            let LinkInfo::Data(InfoData::Vxlan(v)) = i else { continue };
            for x in v {
                match x {
                    InfoVxlan::Id(n) => vni = Some(*n),
                    InfoVxlan::Local(ip) => local = Some(*ip),
                    InfoVxlan::Port(p) => port = Some(*p),
                    _ => {}
                }
            }
        }
    }
    (vni, local, port)
}

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};

fn neighbour(family: AddressFamily, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    if family == AddressFamily::Bridge {
        // The VXLAN device's own forwarding database, not a bridge's.
        m.header.flags = NeighbourFlags::Own;
    }
    m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m
}

/// A permanent ARP entry `ip lladdr mac` on the link (flannel's per-node neighbour).
pub(crate) fn replace_arp(sock: &mut Socket, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> io::Result<()> {
    send(
        sock,
        RouteNetlinkMessage::NewNeighbour(neighbour(AddressFamily::Inet, index, ip, mac)),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}

/// A forwarding entry of a VXLAN device: frames to `mac` go to the VTEP at `dst`.
pub(crate) fn replace_fdb(sock: &mut Socket, index: u32, mac: [u8; 6], dst: Ipv4Addr) -> io::Result<()> {
    send(
        sock,
        RouteNetlinkMessage::NewNeighbour(neighbour(AddressFamily::Bridge, index, dst, mac)),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}

/// The entries of `family` (Inet: ARP, Bridge: FDB) on link `index`, as (IPv4, MAC).
pub(crate) fn neighbours(sock: &mut Socket, family: AddressFamily, index: u32) -> io::Result<Vec<NeighbourMessage>> {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = index;
    let (ty, payload) = encode(&RouteNetlinkMessage::GetNeighbour(m));
    Ok(parse_all(sock.dump(ty, &payload)?)
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == index && n.header.family == family => Some(n),
            _ => None,
        })
        .collect())
}

/// A neighbour entry's IPv4 address and MAC.
pub(crate) fn neighbour_parts(n: &NeighbourMessage) -> (Option<Ipv4Addr>, Option<[u8; 6]>) {
    let (mut ip, mut mac) = (None, None);
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(i)) => ip = Some(*i),
            NeighbourAttribute::LinkLayerAddress(b) => mac = <[u8; 6]>::try_from(b.as_slice()).ok(),
            _ => {}
        }
    }
    (ip, mac)
}

/// Deletes a neighbour entry as a dump gave it; Ok(false) if it was gone.
pub(crate) fn delete_neighbour(sock: &mut Socket, n: &NeighbourMessage) -> io::Result<bool> {
    match send(sock, RouteNetlinkMessage::DelNeighbour(n.clone()), 0) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}
