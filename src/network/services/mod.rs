//! Services on the node: what kube-proxy's nftables mode does, in-process, in a table of
//! its own per bridge, `ip nodectl_svc_<bridge>`. The caller hands a whole `Snapshot`
//! each time; `Proxy` computes the table's content (`plan`), diffs it against what it
//! applied last and sends the difference as one atomic batch (`apply`), so other
//! Services' rules are never touched and the table is never flushed.
//!
//! The first apply of a `Proxy` (a daemon start) replaces the whole table in one batch
//! (add table, delete table, add everything): rules of Services deleted while the
//! daemon was down go, there is no moment without rules, and established connections
//! keep flowing (their NAT lives in conntrack, not in the table).
//!
//! Every call blocks on netlink: from async code, call it on a blocking thread.

mod apply;
pub mod model;
mod plan;

use std::collections::BTreeSet;

pub use model::{ClusterInfo, Endpoint, ServicePort, Snapshot};

use super::netlink::Socket;
use super::nft::Batch;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("service port {name:?}: {field}: {reason}")]
    Invalid { name: String, field: &'static str, reason: &'static str },
    #[error("nftables: {what}: {source}")]
    Nft { what: String, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The Service table of a bridge.
pub fn table_name(bridge: &str) -> String {
    format!("nodectl_svc_{bridge}")
}

/// What one apply did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Whether the whole table was written (the first apply).
    pub full: bool,
    /// Chains added, rewritten and deleted, map elements added and deleted.
    pub chains: usize,
    pub elements: usize,
}

pub struct Proxy {
    sock: Socket,
    table: String,
    /// What the kernel holds; None until the first apply succeeds, and again after a
    /// failed one (the next apply then rewrites the whole table).
    applied: Option<plan::Desired>,
}

fn check(snap: &Snapshot) -> Result<()> {
    let mut names = BTreeSet::new();
    for p in &snap.ports {
        let bad = |field, reason| Err(Error::Invalid { name: p.name.clone(), field, reason });
        if p.name.is_empty() {
            return bad("name", "must not be empty");
        }
        if !names.insert(&p.name) {
            return bad("name", "is used by another service port");
        }
        if p.port == 0 {
            return bad("port", "must be 1-65535");
        }
        if p.node_port == Some(0) {
            return bad("nodePort", "must be 1-65535");
        }
        if p.endpoints.iter().any(|e| e.port == 0) {
            return bad("endpoints[].port", "must be 1-65535");
        }
    }
    Ok(())
}

impl Proxy {
    /// A proxy for the Services of `bridge`'s pod network, in the calling thread's
    /// network namespace. Nothing is written until the first `apply`.
    pub fn new(bridge: &str) -> Result<Proxy> {
        let sock =
            super::portmap::open().map_err(|e| Error::Nft { what: "opening a netlink socket".into(), source: e })?;
        Ok(Proxy { sock, table: table_name(bridge), applied: None })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Makes the kernel's table match `snap`.
    pub fn apply(&mut self, snap: &Snapshot) -> Result<Applied> {
        check(snap)?;
        let new = plan::desired(snap);
        let (old, full) = match self.applied.take() {
            Some(old) => (old, false),
            None => (plan::Desired::default(), true),
        };
        let change = plan::diff(&old, &new);
        let stats = Applied {
            full,
            chains: change.add_chains.len() + change.rewrite_chains.len() + change.del_chains.len(),
            elements: change.add_elems.len() + change.del_elems.len(),
        };
        if !full && change.is_empty() {
            self.applied = Some(new);
            return Ok(stats);
        }
        let mut b = Batch::new(&mut self.sock);
        if full {
            // Creating first makes the delete succeed whether or not the table exists.
            b.new_table(&mut self.sock, &self.table, false);
            b.del_table(&mut self.sock, &self.table);
            apply::add_fixed(&mut self.sock, &mut b, &self.table);
        }
        apply::add_change(&mut self.sock, &mut b, &self.table, &new, &change);
        // On failure `applied` stays None: the next apply starts over from scratch.
        b.commit(&mut self.sock).map_err(|e| Error::Nft {
            what: format!("applying Service rules to table ip {}", self.table),
            source: e,
        })?;
        self.applied = Some(new);
        Ok(stats)
    }
}

/// Removes the Service table of `bridge` (`nodectl gc` once no Service is left, and
/// `network::remove_bridge`); no error if there is none. Whether there was one.
pub fn delete_table(bridge: &str) -> Result<bool> {
    let table = table_name(bridge);
    let mut sock =
        super::portmap::open().map_err(|e| Error::Nft { what: "opening a netlink socket".into(), source: e })?;
    let mut b = Batch::new(&mut sock);
    b.del_table(&mut sock, &table);
    match b.commit(&mut sock) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(Error::Nft { what: format!("deleting table ip {table}"), source: e }),
    }
}
