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
pub(crate) fn create_veth(sock: &mut Socket, host: &str, master: u32, peer: &str, netns: RawFd) -> io::Result<()> {
    let mut p = by_name(peer);
    p.attributes.push(LinkAttribute::NetNsFd(netns));
    let mut m = by_name(host);
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
