//! The node's cluster DNS served on loopback: a cluster name answered from its zone, any
//! other name forwarded to an upstream (a second instance with its own zone), over UDP and
//! TCP, queried with hickory's resolver as a pod's resolver would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::xfer::Protocol;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveErrorKind, TokioResolver};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nodectl::node::dns::forward::Forwarder;
use nodectl::node::dns::records::Zone;
use nodectl::node::dns::server::{Handler, serve};

/// Loopback addresses of this test process's own (port 53 on each).
fn addr(second: u8) -> SocketAddr {
    let pid = std::process::id();
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, second, (pid >> 8) as u8, pid as u8)), 53)
}

fn service(ns: &str, name: &str, ip: &str) -> Service {
    Service {
        metadata: ObjectMeta { namespace: Some(ns.into()), name: Some(name.into()), ..Default::default() },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            cluster_ips: Some(vec![ip.into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn client(server: SocketAddr, protocol: Protocol) -> TokioResolver {
    let mut config = ResolverConfig::new();
    config.add_name_server(NameServerConfig::new(server, protocol));
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.ndots = 0;
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    TokioResolver::builder_with_config(config, TokioConnectionProvider::default()).with_options(opts).build()
}

async fn a(client: &TokioResolver, name: &str) -> Result<Vec<String>, ResponseCode> {
    match client.lookup(Name::from_ascii(name).unwrap(), RecordType::A).await {
        Ok(l) => Ok(l.records().iter().map(|r| r.data().to_string()).collect()),
        Err(e) => match e.kind() {
            ResolveErrorKind::Proto(p) => match p.kind() {
                hickory_proto::ProtoErrorKind::NoRecordsFound { response_code, .. } => Err(*response_code),
                other => panic!("{name}: {other:?}"),
            },
            other => panic!("{name}: {other:?}"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_names_and_forwarding() {
    let (up_addr, node_addr) = (addr(53), addr(54));
    let mut upstream_zone = Zone::new("upstream.test").unwrap();
    upstream_zone.apply_service(&service("default", "outside", "192.0.2.7"));
    let upstream = Handler { zone: Arc::new(RwLock::new(upstream_zone)), forward: Forwarder::new(&[]) };
    let mut up = serve(up_addr, upstream).await.expect("serve the upstream");

    let zone = Arc::new(RwLock::new(Zone::new("cluster.local").unwrap()));
    zone.write().unwrap().apply_service(&service("default", "web", "10.96.0.10"));
    let node = Handler { zone: zone.clone(), forward: Forwarder::new(&[up_addr]) };
    let mut server = serve(node_addr, node).await.expect("serve the node's DNS");

    for protocol in [Protocol::Udp, Protocol::Tcp] {
        let c = client(node_addr, protocol);
        assert_eq!(a(&c, "web.default.svc.cluster.local.").await, Ok(vec!["10.96.0.10".to_string()]));
        assert_eq!(a(&c, "nope.default.svc.cluster.local.").await, Err(ResponseCode::NXDomain));
        // Not the cluster's: forwarded, and the upstream's NXDOMAIN comes back as it is.
        assert_eq!(a(&c, "outside.default.svc.upstream.test.").await, Ok(vec!["192.0.2.7".to_string()]));
        assert_eq!(a(&c, "nope.default.svc.upstream.test.").await, Err(ResponseCode::NXDomain));
    }
    // A Service added later is answered at once (the zone is shared with its watcher).
    zone.write().unwrap().apply_service(&service("default", "late", "10.96.0.11"));
    let c = client(node_addr, Protocol::Udp);
    assert_eq!(a(&c, "late.default.svc.cluster.local.").await, Ok(vec!["10.96.0.11".to_string()]));

    server.shutdown_gracefully().await.unwrap();
    up.shutdown_gracefully().await.unwrap();
}
