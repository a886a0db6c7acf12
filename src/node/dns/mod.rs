//! The cluster's DNS, served by every node daemon on its bridge's gateway address (what
//! CoreDNS's kubernetes plugin does, in-process, node-local as NodeLocal DNSCache):
//! [`records`] turns Services and EndpointSlices into answers, [`server`] serves them with
//! hickory's server on UDP and TCP, [`forward`] sends every other name to the node's own
//! resolvers through a cache.

pub mod forward;
pub mod records;
pub mod server;
