//! A joined node's pods reaching outside the cluster: their traffic leaves with the
//! node's address (masquerade), but traffic to the cluster's pod range keeps the pod's
//! source address, so a pod on another node sees who called it. One table per bridge,
//! replaced whole in one batch when the cluster range changes:
//!
//! ```text
//! table ip nodectl_masq_BR {
//!   chain postrouting { type nat hook postrouting priority srcnat;
//!     ip saddr PODCIDR ip daddr != CLUSTERCIDR masquerade } }
//! ```
//!
//! Pod-to-Service traffic was DNATed before this hook, so it is matched by the endpoint's
//! address (a pod's: kept) and the Service table's own masquerade rules apply to it.

use super::nft::{Batch, NF_INET_POST_ROUTING, Rule};
use super::{Error, Ipv4Net, Result, portmap};

const CHAIN: &str = "postrouting";
/// NF_IP_PRI_NAT_SRC.
const SRCNAT: i32 = 100;

pub fn table_name(bridge: &str) -> String {
    format!("nodectl_masq_{bridge}")
}

fn nft_err(what: String, source: std::io::Error) -> Error {
    Error::Nft { what, source }
}

/// Makes the bridge's table masquerade what leaves `pods` for anything outside `cluster`.
pub fn apply(bridge: &str, pods: Ipv4Net, cluster: Ipv4Net) -> Result<()> {
    let table = table_name(bridge);
    let mut sock = portmap::open().map_err(|e| nft_err("opening a netlink socket".into(), e))?;
    let mut b = Batch::new(&mut sock);
    // Created if missing, so that the delete cannot fail, then made anew: one batch.
    b.new_table(&mut sock, &table, false);
    b.del_table(&mut sock, &table);
    b.new_table(&mut sock, &table, true);
    b.new_nat_chain(&mut sock, &table, CHAIN, NF_INET_POST_ROUTING, SRCNAT);
    let mut r = Rule::default();
    r.saddr_in(pods.network(), pods.prefix_len()).daddr_not_in(cluster.network(), cluster.prefix_len()).masquerade();
    b.add_rule(&mut sock, &table, CHAIN, &r, "pods to outside the cluster");
    b.commit(&mut sock).map_err(|e| nft_err(format!("writing table ip {table}"), e))
}

/// Deletes the bridge's table; Ok(false) if there was none.
pub fn delete_table(bridge: &str) -> Result<bool> {
    let table = table_name(bridge);
    let mut sock = portmap::open().map_err(|e| nft_err("opening a netlink socket".into(), e))?;
    let mut b = Batch::new(&mut sock);
    b.del_table(&mut sock, &table);
    match b.commit(&mut sock) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(nft_err(format!("deleting table ip {table}"), e)),
    }
}
