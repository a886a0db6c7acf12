//! The machines' LAN of a cluster test: a bridge with the server's address, and one
//! network namespace per node joined to it by a veth (the node's eth0, with a default
//! route through the bridge), as separate machines on one LAN would be.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

pub struct Lan {
    pub bridge: String,
    /// 10.A.B: the LAN's /24.
    prefix: String,
    namespaces: Vec<String>,
}

impl Lan {
    /// `nodes` nodes on 10.A.`third_octet`.0/24, where A (100–149) comes from the pid;
    /// devices and namespaces are named after `tag` and the pid. Each test file takes a
    /// third octet of its own (the other files' ranges are 10.100–199 with third octets
    /// up to about 60, pods.rs, and 10.150 and up for the daemons' pod ranges, network.rs).
    pub fn new(tag: &str, third_octet: u8, nodes: u8) -> Lan {
        let pid = std::process::id();
        let prefix = format!("10.{}.{third_octet}", 100 + pid % 50);
        let mut lan = Lan { bridge: format!("{tag}{}", pid % 100_000), prefix, namespaces: Vec::new() };
        ip(&["link", "add", &lan.bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{}/24", lan.server_ip()), "dev", &lan.bridge]);
        ip(&["link", "set", &lan.bridge, "up"]);
        for i in 1..=nodes {
            let ns = format!("{tag}{pid}n{i}");
            ip(&["netns", "add", &ns]);
            lan.namespaces.push(ns.clone());
            let host_end = format!("{}v{i}", lan.bridge);
            ip(&["link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            ip(&["link", "set", &host_end, "master", &lan.bridge, "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", lan.node_ip(i)), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "route", "add", "default", "via", &lan.server_ip().to_string()]);
        }
        lan
    }

    pub fn server_ip(&self) -> Ipv4Addr {
        format!("{}.1", self.prefix).parse().unwrap()
    }

    /// Node `i`'s address (nodes count from 1).
    pub fn node_ip(&self, i: u8) -> Ipv4Addr {
        format!("{}.{}", self.prefix, 10 + i).parse().unwrap()
    }

    /// Node `i`'s network namespace, by name.
    pub fn namespace(&self, i: u8) -> &str {
        &self.namespaces[usize::from(i - 1)]
    }

    pub fn netns(&self, i: u8) -> PathBuf {
        Path::new("/run/netns").join(self.namespace(i))
    }

    /// `program` run inside node `i`'s network namespace.
    pub fn in_node(&self, i: u8, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.namespace(i), program]);
        c
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // A namespace's devices and nftables tables go with it, the host ends of the
        // veths with them.
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
    }
}
