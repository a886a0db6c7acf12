//! Every name that is not the cluster's goes to the node's own resolvers (its
//! /etc/resolv.conf, as CoreDNS's `forward . /etc/resolv.conf`), through hickory's
//! resolver, whose cache keeps answers for their TTL (negative ones too).

use std::net::{IpAddr, SocketAddr};

use hickory_proto::ProtoErrorKind;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::xfer::Protocol;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveErrorKind, TokioResolver};

use super::records::Answer;

/// Answers kept by the cache (CoreDNS's `cache` plugin keeps 9984 per kind).
const CACHE_SIZE: usize = 10_000;

pub struct Forwarder {
    resolver: Option<TokioResolver>,
}

/// The nameservers of a resolv.conf's text, on port 53; loopback ones too (the node's
/// daemon runs in the host's network, where 127.0.0.53 is systemd-resolved).
pub fn upstreams_of(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then_some(())?;
            words.next()?.parse::<IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl Forwarder {
    /// A forwarder to `upstreams` (over UDP, and TCP for truncated answers); with none,
    /// every forwarded question gets SERVFAIL.
    pub fn new(upstreams: &[SocketAddr]) -> Forwarder {
        if upstreams.is_empty() {
            return Forwarder { resolver: None };
        }
        let mut config = ResolverConfig::new();
        for addr in upstreams {
            config.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(*addr, Protocol::Tcp));
        }
        let mut opts = ResolverOpts::default();
        // The question is asked as the pod asked it: its resolver already applied search
        // and ndots.
        opts.ndots = 0;
        opts.cache_size = CACHE_SIZE;
        opts.preserve_intermediates = true;
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default()).with_options(opts).build();
        Forwarder { resolver: Some(resolver) }
    }

    /// The upstreams' answer to `qtype` at `name`.
    pub async fn ask(&self, name: &Name, qtype: RecordType) -> Answer {
        let mut answer = Answer {
            code: ResponseCode::ServFail,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
        };
        let Some(resolver) = &self.resolver else { return answer };
        let mut fqdn = name.clone();
        fqdn.set_fqdn(true);
        match resolver.lookup(fqdn, qtype).await {
            Ok(lookup) => {
                answer.code = ResponseCode::NoError;
                answer.answers = lookup.records().to_vec();
            }
            Err(e) => {
                if let ResolveErrorKind::Proto(p) = e.kind()
                    && let ProtoErrorKind::NoRecordsFound { response_code, soa, .. } = p.kind()
                {
                    answer.code = *response_code;
                    if let Some(soa) = soa {
                        answer.authority.push(soa.as_ref().clone().into_record_of_rdata());
                    }
                } else {
                    tracing::debug!(%name, ?qtype, error = %e, "forwarded question failed");
                }
            }
        }
        answer
    }
}
