//! The proxy's input, below the Kubernetes types: one entry per Service port with its
//! endpoints, as the agent resolves them from Services and EndpointSlices.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::network::Protocol;

/// One port of one Service. `name` identifies it ("namespace/service:port") and must
/// be unique in a `Snapshot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    /// None: headless, which gets no rules.
    pub cluster_ip: Option<Ipv4Addr>,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// sessionAffinity ClientIP's timeout in seconds; None: no affinity.
    pub affinity_timeout: Option<u32>,
    /// internalTrafficPolicy Local: cluster traffic only to this node's endpoints.
    pub internal_local: bool,
    /// externalTrafficPolicy Local: NodePort and load-balancer traffic only to this
    /// node's endpoints, keeping the client's address.
    pub external_local: bool,
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// A plain ClusterIP port: no node port, load-balancer IPs, affinity or Local policy.
    pub fn cluster_ip(
        name: &str,
        ip: Ipv4Addr,
        protocol: Protocol,
        port: u16,
        endpoints: Vec<Endpoint>,
    ) -> ServicePort {
        ServicePort {
            name: name.into(),
            cluster_ip: Some(ip),
            protocol,
            port,
            node_port: None,
            load_balancer_ips: vec![],
            affinity_timeout: None,
            internal_local: false,
            external_local: false,
            endpoints,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node.
    pub local: bool,
}

/// What the node knows about the cluster: its cluster CIDR (traffic from outside it to a
/// ClusterIP is masqueraded; None: unknown yet, nothing is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    pub cluster_cidr: Option<Ipv4Net>,
}

/// Everything the proxy is to implement at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub cluster: ClusterInfo,
    pub ports: Vec<ServicePort>,
}

/// The endpoints traffic may go to, as kube-proxy picks them: the ready ones; only if
/// none is ready, the serving terminating ones (so connections drain to pods being
/// replaced rather than fail). With `local_only`, this node's alone.
pub fn usable(eps: &[Endpoint], local_only: bool) -> Vec<&Endpoint> {
    let mine = |e: &&Endpoint| !local_only || e.local;
    let ready: Vec<&Endpoint> = eps.iter().filter(mine).filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.iter().filter(mine).filter(|e| e.serving && e.terminating).collect()
}
