//! A pod's veth pair: the host end, named after the pod, is a port of the bridge; the
//! other end is the pod's `eth0`, created directly inside the pod's namespace.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::netlink::Socket;
use super::{Error, Result, netns, rtnl};

pub(crate) const POD_IFNAME: &str = "eth0";
const LOOPBACK_IFINDEX: u32 = 1;

/// "nd" and 12 hex digits of a hash of bridge and pod key: within IFNAMSIZ (15), the
/// same for the same pod every time (so teardown and gc can find it from the key
/// alone), and different on different bridges (parallel tests reuse pod keys).
pub(crate) fn host_name(bridge: &str, pod_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(bridge.as_bytes());
    h.update([0]);
    h.update(pod_key.as_bytes());
    format!("nd{}", &hex::encode(h.finalize())[..12])
}

fn nl_err(op: &'static str, what: &str, source: std::io::Error) -> Error {
    Error::Netlink { op, what: what.to_string(), source }
}

/// Creates the pair, the host end up on the bridge with hairpin on. Returns true if it
/// replaced a leftover host end of the same pod.
/// `mtu`: both ends' (None: the kernel's default).
pub(crate) fn create(
    sock: &mut Socket,
    host: &str,
    bridge: u32,
    (ns, ns_path): (&File, &Path),
    mtu: Option<u32>,
) -> Result<bool> {
    let mut replaced = false;
    let mut made = rtnl::create_veth(sock, host, bridge, POD_IFNAME, ns.as_raw_fd(), mtu);
    if made.as_ref().is_err_and(|e| e.raw_os_error() == Some(libc::EEXIST))
        // The name is the pod's own, so a link by that name is a leftover of this pod
        // (a crash before its record was written). EEXIST can also mean the
        // namespace has an eth0 already; then nothing is deleted and the error stands.
        && rtnl::delete_link(sock, host).unwrap_or(false)
    {
        replaced = true;
        made = rtnl::create_veth(sock, host, bridge, POD_IFNAME, ns.as_raw_fd(), mtu);
    }
    made.map_err(|e| nl_err("creating veth pair", &format!("{host} / {POD_IFNAME} in {}", ns_path.display()), e))?;
    rtnl::set_hairpin(sock, host).map_err(|e| nl_err("setting hairpin mode on", host, e))?;
    Ok(replaced)
}

/// Inside the pod's namespace: the address on eth0, eth0 and lo up, the default route.
pub(crate) fn configure_pod_side(ns: &File, ns_path: &Path, ip: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Result<()> {
    let what = |s: &str| format!("{s} in {}", ns_path.display());
    let mut sock = netns::run_in(ns, ns_path, rtnl::open)?
        .map_err(|e| nl_err("opening a netlink socket", &what("the namespace"), e))?;
    let eth0 = rtnl::link(&mut sock, POD_IFNAME)
        .map_err(|e| nl_err("looking up", &what(POD_IFNAME), e))?
        .ok_or_else(|| nl_err("looking up", &what(POD_IFNAME), std::io::Error::from_raw_os_error(libc::ENODEV)))?
        .header
        .index;
    rtnl::add_address(&mut sock, eth0, ip, prefix)
        .map_err(|e| nl_err("adding address", &what(&format!("{ip}/{prefix} on {POD_IFNAME}")), e))?;
    rtnl::set_up(&mut sock, eth0).map_err(|e| nl_err("bringing up", &what(POD_IFNAME), e))?;
    rtnl::set_up(&mut sock, LOOPBACK_IFINDEX).map_err(|e| nl_err("bringing up", &what("lo"), e))?;
    rtnl::add_default_route(&mut sock, eth0, gateway)
        .map_err(|e| nl_err("adding the default route", &what(&format!("via {gateway}")), e))
}

pub(crate) fn delete(sock: &mut Socket, host: &str) -> Result<bool> {
    rtnl::delete_link(sock, host).map_err(|e| nl_err("deleting veth", host, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz_and_depend_on_bridge_and_key() {
        let a = host_name("nodectl0", "default/web");
        assert_eq!(a.len(), 14);
        assert_eq!(a, host_name("nodectl0", "default/web"));
        assert_ne!(a, host_name("nodectl1", "default/web"));
        assert_ne!(a, host_name("nodectl0", "default/web2"));
    }
}
