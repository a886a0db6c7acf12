//! The cluster's names, as CoreDNS's kubernetes plugin (with `pods insecure`) answers them:
//! Services and EndpointSlices in, DNS answers out. Pure: no sockets, no clock, no API.
//!
//! Every name a Service contributes is computed when the Service or one of its slices
//! changes and kept in one map, so a query is a hash lookup; the names between a record
//! and the cluster domain are kept too (with a count of the records below them), since
//! they exist in the DNS (an empty answer, not NXDOMAIN).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{CNAME, NS, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// CoreDNS's default TTL for the kubernetes plugin's answers, negative ones included.
pub const TTL: u32 = 5;
/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A namespace and a name.
type Key = (String, String);

/// What is known of one Service.
#[derive(Clone, Debug, PartialEq)]
struct Svc {
    cluster_ips: Vec<IpAddr>,
    headless: bool,
    external_name: Option<String>,
    /// Named ports: (name, protocol in lower case, port).
    ports: Vec<(String, String, u16)>,
    publish_not_ready: bool,
}

/// One endpoint of a slice.
#[derive(Clone, Debug, PartialEq)]
struct Endpoint {
    ips: Vec<IpAddr>,
    hostname: Option<String>,
    ready: bool,
}

/// What is known of one EndpointSlice.
#[derive(Clone, Debug, PartialEq)]
struct Slice {
    service: String,
    endpoints: Vec<Endpoint>,
    ports: Vec<(String, String, u16)>,
}

/// The records at one name, each with the Service it came from (several Services may
/// give the same reverse name), and how many records are at or below it.
#[derive(Debug, Default)]
struct Node {
    records: Vec<(Key, RData)>,
    refs: usize,
}

/// The answer to one question in the cluster's zone.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    /// The zone's SOA, for an empty answer or NXDOMAIN (as CoreDNS, so caches know how
    /// long to keep the negative answer).
    pub authority: Vec<Record>,
    /// The addresses of SRV targets.
    pub additionals: Vec<Record>,
}

/// The cluster's names.
#[derive(Debug)]
pub struct Zone {
    /// The cluster domain, lower case, with its final dot ("cluster.local.").
    domain: String,
    domain_name: Name,
    services: HashMap<Key, Svc>,
    slices: HashMap<Key, Slice>,
    names: HashMap<String, Node>,
    /// What each Service put into `names`, to take it out again.
    contributed: HashMap<Key, Vec<(String, RData)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("cluster domain {0:?} is not a DNS name")]
    Domain(String),
}

impl Zone {
    pub fn new(domain: &str) -> Result<Zone, ZoneError> {
        let trimmed = domain.trim_end_matches('.');
        let bad = || ZoneError::Domain(domain.to_string());
        if trimmed.is_empty() {
            return Err(bad());
        }
        let name = Name::from_ascii(format!("{trimmed}.")).map_err(|_| bad())?.to_lowercase();
        Ok(Zone {
            domain: name_key(&name),
            domain_name: name,
            services: HashMap::new(),
            slices: HashMap::new(),
            names: HashMap::new(),
            contributed: HashMap::new(),
        })
    }

    /// The cluster domain without its final dot.
    pub fn domain(&self) -> &str {
        self.domain.trim_end_matches('.')
    }

    /// Adds or replaces a Service.
    pub fn apply_service(&mut self, svc: &Service) {
        let Some(key) = key_of(svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref()) else { return };
        let new = svc_of(svc);
        if self.services.get(&key) == Some(&new) {
            return;
        }
        self.services.insert(key.clone(), new);
        self.rebuild(&key);
    }

    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if self.services.remove(&key).is_some() {
            self.rebuild(&key);
        }
    }

    /// Adds or replaces an EndpointSlice.
    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let Some(key) = key_of(slice.metadata.namespace.as_deref(), slice.metadata.name.as_deref()) else { return };
        let new = slice_of(slice);
        let old = self.slices.insert(key.clone(), new.clone());
        if old.as_ref() == Some(&new) {
            return;
        }
        if let Some(old) = old
            && old.service != new.service
        {
            self.rebuild(&(key.0.clone(), old.service));
        }
        self.rebuild(&(key.0, new.service));
    }

    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        if let Some(old) = self.slices.remove(&(namespace.to_string(), name.to_string())) {
            self.rebuild(&(namespace.to_string(), old.service));
        }
    }

    /// Forgets everything (before a watch's fresh list).
    pub fn clear(&mut self) {
        self.services.clear();
        self.slices.clear();
        self.names.clear();
        self.contributed.clear();
    }

    /// Recomputes the names of Service `key` from what is known of it and its slices.
    fn rebuild(&mut self, key: &Key) {
        for (name, rdata) in self.contributed.remove(key).unwrap_or_default() {
            self.unlink(key, &name, &rdata);
        }
        let Some(svc) = self.services.get(key) else { return };
        let slices: Vec<&Slice> =
            self.slices.iter().filter(|((ns, _), s)| *ns == key.0 && s.service == key.1).map(|(_, s)| s).collect();
        let records = records_of(&self.domain, key, svc, &slices);
        for (name, rdata) in &records {
            self.link(key, name, rdata);
        }
        self.contributed.insert(key.clone(), records);
    }

    /// The name and the names between it and the cluster domain (for a name outside it,
    /// a reverse name, only the name).
    fn chain<'a>(&self, name: &'a str) -> Vec<&'a str> {
        let mut out = vec![name];
        if name.len() > self.domain.len() && name.ends_with(&self.domain) {
            let mut rest = name;
            while let Some((_, parent)) = rest.split_once('.') {
                if parent.len() <= self.domain.len() {
                    break;
                }
                out.push(parent);
                rest = parent;
            }
        }
        out
    }

    fn link(&mut self, key: &Key, name: &str, rdata: &RData) {
        for n in self.chain(name) {
            self.names.entry(n.to_string()).or_default().refs += 1;
        }
        if let Some(node) = self.names.get_mut(name) {
            node.records.push((key.clone(), rdata.clone()));
        }
    }

    fn unlink(&mut self, key: &Key, name: &str, rdata: &RData) {
        if let Some(node) = self.names.get_mut(name)
            && let Some(i) = node.records.iter().position(|(k, r)| k == key && r == rdata)
        {
            node.records.swap_remove(i);
        }
        for n in self.chain(name) {
            if let Some(node) = self.names.get_mut(n) {
                node.refs = node.refs.saturating_sub(1);
                if node.refs == 0 {
                    self.names.remove(n);
                }
            }
        }
    }

    /// Whether `name` is in the cluster domain (answered here, never forwarded).
    pub fn is_cluster_name(&self, name: &Name) -> bool {
        self.domain_name.zone_of(&name.to_lowercase())
    }

    /// The answer to `qtype` at `qname`, or None for a name that is not ours (to be
    /// forwarded): one outside the cluster domain and not the reverse name of an address
    /// we know.
    pub fn answer(&self, qname: &Name, qtype: RecordType) -> Option<Answer> {
        let mut lower = qname.to_lowercase();
        lower.set_fqdn(true);
        let key = name_key(&lower);
        let in_zone = self.domain_name.zone_of(&lower);
        if let Some(node) = self.names.get(&key) {
            if !in_zone && qtype != RecordType::PTR {
                return None;
            }
            return Some(self.at_node(&lower, node, qtype));
        }
        if !in_zone {
            return None;
        }
        let rel: Vec<&str> = key[..key.len() - self.domain.len()].trim_end_matches('.').split('.').collect();
        let rel: Vec<&str> = rel.into_iter().filter(|l| !l.is_empty()).rev().collect();
        match rel.as_slice() {
            [] => Some(self.apex(&lower, qtype)),
            ["svc"] | ["pod"] | ["pod", _] => Some(self.empty(ResponseCode::NoError)),
            ["pod", _, ip] => Some(match pod_ip(ip) {
                Some(ip) => self.addresses(&lower, &[RData::from(ip)], qtype),
                None => self.empty(ResponseCode::NXDomain),
            }),
            _ => Some(self.empty(ResponseCode::NXDomain)),
        }
    }

    fn at_node(&self, name: &Name, node: &Node, qtype: RecordType) -> Answer {
        let rdatas: Vec<RData> = node.records.iter().map(|(_, r)| r.clone()).collect();
        if let Some(cname) = rdatas.iter().find(|r| r.record_type() == RecordType::CNAME) {
            let mut a = self.empty(ResponseCode::NoError);
            a.authority.clear();
            a.answers.push(Record::from_rdata(name.clone(), TTL, cname.clone()));
            return a;
        }
        let mut a = self.addresses(name, &rdatas, qtype);
        if a.answers.iter().any(|r| r.record_type() == RecordType::SRV) {
            let mut seen: Vec<Name> = Vec::new();
            for r in &a.answers {
                if let RData::SRV(srv) = r.data()
                    && !seen.contains(srv.target())
                {
                    seen.push(srv.target().clone());
                }
            }
            for target in seen {
                if let Some(t) = self.names.get(&name_key(&target)) {
                    for (_, r) in &t.records {
                        if matches!(r.record_type(), RecordType::A | RecordType::AAAA) {
                            a.additionals.push(Record::from_rdata(target.clone(), TTL, r.clone()));
                        }
                    }
                }
            }
        }
        a
    }

    /// The records of `qtype` among `rdatas`, or an empty answer.
    fn addresses(&self, name: &Name, rdatas: &[RData], qtype: RecordType) -> Answer {
        let answers: Vec<Record> = rdatas
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .map(|r| Record::from_rdata(name.clone(), TTL, r.clone()))
            .collect();
        if answers.is_empty() {
            return self.empty(ResponseCode::NoError);
        }
        Answer { code: ResponseCode::NoError, answers, authority: Vec::new(), additionals: Vec::new() }
    }

    /// The zone's apex: its SOA and NS, as CoreDNS answers them.
    fn apex(&self, name: &Name, qtype: RecordType) -> Answer {
        let ns = self.ns_name();
        let rdata = match qtype {
            RecordType::SOA => RData::SOA(self.soa_data()),
            RecordType::NS => RData::NS(NS(ns)),
            _ => return self.empty(ResponseCode::NoError),
        };
        Answer {
            code: ResponseCode::NoError,
            answers: vec![Record::from_rdata(name.clone(), TTL, rdata)],
            authority: Vec::new(),
            additionals: Vec::new(),
        }
    }

    fn ns_name(&self) -> Name {
        Name::from_ascii(format!("ns.dns.{}", self.domain)).unwrap_or_else(|_| self.domain_name.clone())
    }

    fn soa_data(&self) -> SOA {
        let rname =
            Name::from_ascii(format!("hostmaster.{}", self.domain)).unwrap_or_else(|_| self.domain_name.clone());
        // CoreDNS's values; the minimum (the negative answers' TTL) is the records' TTL.
        SOA::new(self.ns_name(), rname, 1, 7200, 1800, 86400, TTL)
    }

    fn empty(&self, code: ResponseCode) -> Answer {
        Answer {
            code,
            answers: Vec::new(),
            authority: vec![Record::from_rdata(self.domain_name.clone(), TTL, RData::SOA(self.soa_data()))],
            additionals: Vec::new(),
        }
    }
}

/// A name as the map's key: lower case, with its final dot.
fn name_key(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

fn key_of(namespace: Option<&str>, name: Option<&str>) -> Option<Key> {
    Some((namespace.unwrap_or("default").to_ascii_lowercase(), name?.to_ascii_lowercase()))
}

fn svc_of(svc: &Service) -> Svc {
    let spec = svc.spec.clone().unwrap_or_default();
    let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if ips.is_empty()
        && let Some(ip) = &spec.cluster_ip
    {
        ips.push(ip.clone());
    }
    let headless = ips.iter().any(|ip| ip == "None");
    let external_name = if spec.type_.as_deref() == Some("ExternalName") {
        spec.external_name.clone().filter(|n| !n.is_empty())
    } else {
        None
    };
    let ports = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let name = p.name.filter(|n| !n.is_empty())?;
            let port = u16::try_from(p.port).ok()?;
            Some((name.to_ascii_lowercase(), p.protocol.unwrap_or_else(|| "TCP".into()).to_ascii_lowercase(), port))
        })
        .collect();
    Svc {
        cluster_ips: ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
        headless,
        external_name,
        ports,
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
    }
}

fn slice_of(slice: &EndpointSlice) -> Slice {
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .cloned()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let endpoints = slice
        .endpoints
        .iter()
        .map(|e| Endpoint {
            ips: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
            hostname: e.hostname.clone().filter(|h| !h.is_empty()).map(|h| h.to_ascii_lowercase()),
            // A missing condition is "ready", as the API documents it.
            ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
        })
        .collect();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let name = p.name.clone().filter(|n| !n.is_empty())?;
            let port = u16::try_from(p.port?).ok()?;
            Some((
                name.to_ascii_lowercase(),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()).to_ascii_lowercase(),
                port,
            ))
        })
        .collect();
    Slice { service, endpoints, ports }
}

/// The records Service `key` puts in the zone `domain` ("cluster.local.").
fn records_of(domain: &str, key: &Key, svc: &Svc, slices: &[&Slice]) -> Vec<(String, RData)> {
    let (ns, name) = key;
    let base = format!("{name}.{ns}.svc.{domain}");
    let Ok(base_name) = Name::from_ascii(&base) else { return Vec::new() };
    let mut out: Vec<(String, RData)> = Vec::new();
    if let Some(ext) = &svc.external_name {
        if let Ok(target) = Name::from_ascii(format!("{}.", ext.trim_end_matches('.'))) {
            out.push((base, RData::CNAME(CNAME(target))));
        }
        return out;
    }
    if !svc.headless {
        for ip in &svc.cluster_ips {
            out.push((base.clone(), RData::from(*ip)));
            out.push((name_key(&Name::from(*ip)), RData::PTR(PTR(base_name.clone()))));
        }
        for (port, proto, number) in &svc.ports {
            let srv = RData::SRV(SRV::new(0, 100, *number, base_name.clone()));
            out.push((format!("_{port}._{proto}.{base}"), srv.clone()));
            out.push((base.clone(), srv));
        }
        return out;
    }
    // Headless: the ready endpoints, each under its hostname or its address with dashes.
    let endpoints: Vec<&Endpoint> =
        slices.iter().flat_map(|s| &s.endpoints).filter(|e| e.ready || svc.publish_not_ready).collect();
    let mut ports: Vec<&(String, String, u16)> = slices.iter().flat_map(|s| &s.ports).collect();
    ports.sort();
    ports.dedup();
    let targets: Vec<(Name, IpAddr)> = endpoints
        .iter()
        .flat_map(|e| e.ips.iter().map(move |ip| (e, *ip)))
        .filter_map(|(e, ip)| {
            let label = e.hostname.clone().unwrap_or_else(|| dashed(ip));
            Some((Name::from_ascii(format!("{label}.{base}")).ok()?, ip))
        })
        .collect();
    let weight = u16::try_from(100 / targets.len().max(1)).unwrap_or(1).max(1);
    for (target, ip) in &targets {
        let t = target.to_ascii();
        out.push((base.clone(), RData::from(*ip)));
        out.push((t.clone(), RData::from(*ip)));
        out.push((name_key(&Name::from(*ip)), RData::PTR(PTR(target.clone()))));
        for (port, proto, number) in &ports {
            let srv = RData::SRV(SRV::new(0, weight, *number, target.clone()));
            out.push((format!("_{port}._{proto}.{base}"), srv.clone()));
            out.push((base.clone(), srv));
        }
    }
    out
}

/// An address as a DNS label: 10.0.0.1 → 10-0-0-1, fd00::1 → fd00--1 (CoreDNS's form).
fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The address in a pod name's first label (`10-244-1-5`), as `pods insecure` reads it:
/// any well-formed address, without looking for a pod that has it.
fn pod_ip(label: &str) -> Option<IpAddr> {
    if label.contains('.') || label.contains(':') {
        return None;
    }
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint as K8sEndpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, i32)]) -> Service {
        Service {
            metadata: ObjectMeta { namespace: Some(ns.into()), name: Some(name.into()), ..Default::default() },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                cluster_ips: Some(vec![cluster_ip.into()]),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| ServicePort { name: Some(n.to_string()), port: *p, ..Default::default() })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(
        ns: &str,
        name: &str,
        svc: &str,
        eps: &[(&str, Option<&str>, bool)],
        ports: &[(&str, i32)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps
                .iter()
                .map(|(ip, host, ready)| K8sEndpoint {
                    addresses: vec![ip.to_string()],
                    hostname: host.map(str::to_string),
                    conditions: Some(EndpointConditions { ready: Some(*ready), ..Default::default() }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some(n.to_string()),
                        port: Some(*p),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn ask(zone: &Zone, q: &str, t: RecordType) -> Answer {
        zone.answer(&name(q), t).unwrap_or_else(|| panic!("{q} forwarded"))
    }

    fn datas(a: &Answer) -> Vec<String> {
        let mut v: Vec<String> = a.answers.iter().map(|r| format!("{} {}", r.name(), r.data())).collect();
        v.sort();
        v
    }

    #[test]
    fn cluster_ip_service() {
        let mut z = Zone::new("cluster.local").unwrap();
        z.apply_service(&service("default", "web", "10.96.0.10", &[("http", 80)]));
        let a = ask(&z, "web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(a.code, ResponseCode::NoError);
        assert_eq!(datas(&a), ["web.default.svc.cluster.local. 10.96.0.10"]);
        assert_eq!(a.answers[0].ttl(), TTL);
        // Case does not matter.
        assert_eq!(ask(&z, "WEB.Default.svc.cluster.local.", RecordType::A).answers.len(), 1);
        // IPv4 only: AAAA is an empty answer with the SOA, not NXDOMAIN.
        let a = ask(&z, "web.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!((a.code, a.answers.len(), a.authority.len()), (ResponseCode::NoError, 0, 1));
        // SRV for the named port, the address in the additional section.
        let a = ask(&z, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(datas(&a), ["_http._tcp.web.default.svc.cluster.local. 0 100 80 web.default.svc.cluster.local."]);
        assert_eq!(a.additionals.len(), 1);
        assert_eq!(a.additionals[0].data().to_string(), "10.96.0.10");
        // PTR for the ClusterIP.
        let a = ask(&z, "10.0.96.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(datas(&a), ["10.0.96.10.in-addr.arpa. web.default.svc.cluster.local."]);
        // The names between exist (empty), the others do not.
        assert_eq!(ask(&z, "default.svc.cluster.local.", RecordType::A).code, ResponseCode::NoError);
        assert_eq!(ask(&z, "nope.default.svc.cluster.local.", RecordType::A).code, ResponseCode::NXDomain);
        assert_eq!(ask(&z, "web.other.svc.cluster.local.", RecordType::A).code, ResponseCode::NXDomain);
        assert_eq!(ask(&z, "_https._tcp.web.default.svc.cluster.local.", RecordType::SRV).code, ResponseCode::NXDomain);
        // Other names are forwarded, unknown reverse names too.
        assert!(z.answer(&name("example.com."), RecordType::A).is_none());
        assert!(z.answer(&name("1.0.0.10.in-addr.arpa."), RecordType::PTR).is_none());
        // Gone with the Service.
        z.delete_service("default", "web");
        assert_eq!(ask(&z, "web.default.svc.cluster.local.", RecordType::A).code, ResponseCode::NXDomain);
        assert!(z.answer(&name("10.0.96.10.in-addr.arpa."), RecordType::PTR).is_none());
        assert!(z.names.is_empty(), "{:?}", z.names);
    }

    #[test]
    fn headless_service_endpoints() {
        let mut z = Zone::new("cluster.local.").unwrap();
        z.apply_service(&service("db", "pg", "None", &[("sql", 5432)]));
        z.apply_slice(&slice(
            "db",
            "pg-1",
            "pg",
            &[("10.244.1.5", Some("pg-0"), true), ("10.244.1.6", None, true), ("10.244.1.7", Some("pg-2"), false)],
            &[("sql", 5432)],
        ));
        let a = ask(&z, "pg.db.svc.cluster.local.", RecordType::A);
        assert_eq!(datas(&a), ["pg.db.svc.cluster.local. 10.244.1.5", "pg.db.svc.cluster.local. 10.244.1.6"]);
        assert_eq!(
            datas(&ask(&z, "pg-0.pg.db.svc.cluster.local.", RecordType::A)),
            ["pg-0.pg.db.svc.cluster.local. 10.244.1.5"]
        );
        assert_eq!(ask(&z, "10-244-1-6.pg.db.svc.cluster.local.", RecordType::A).answers.len(), 1);
        // Not ready: not published.
        assert_eq!(ask(&z, "pg-2.pg.db.svc.cluster.local.", RecordType::A).code, ResponseCode::NXDomain);
        let a = ask(&z, "_sql._tcp.pg.db.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            datas(&a),
            [
                "_sql._tcp.pg.db.svc.cluster.local. 0 50 5432 10-244-1-6.pg.db.svc.cluster.local.",
                "_sql._tcp.pg.db.svc.cluster.local. 0 50 5432 pg-0.pg.db.svc.cluster.local."
            ]
        );
        assert_eq!(a.additionals.len(), 2);
        assert_eq!(
            datas(&ask(&z, "5.1.244.10.in-addr.arpa.", RecordType::PTR)),
            ["5.1.244.10.in-addr.arpa. pg-0.pg.db.svc.cluster.local."]
        );
        // The endpoint becomes ready; then its slice goes.
        z.apply_slice(&slice("db", "pg-1", "pg", &[("10.244.1.7", Some("pg-2"), true)], &[("sql", 5432)]));
        assert_eq!(datas(&ask(&z, "pg.db.svc.cluster.local.", RecordType::A)), ["pg.db.svc.cluster.local. 10.244.1.7"]);
        // Without a ready endpoint the name is gone, as CoreDNS has it (NXDOMAIN).
        z.delete_slice("db", "pg-1");
        assert_eq!(ask(&z, "pg.db.svc.cluster.local.", RecordType::A).code, ResponseCode::NXDomain);
        z.delete_service("db", "pg");
        assert!(z.names.is_empty(), "{:?}", z.names);
    }

    #[test]
    fn slice_before_service() {
        let mut z = Zone::new("cluster.local").unwrap();
        z.apply_slice(&slice("db", "pg-1", "pg", &[("10.244.1.5", None, true)], &[]));
        assert_eq!(ask(&z, "pg.db.svc.cluster.local.", RecordType::A).code, ResponseCode::NXDomain);
        z.apply_service(&service("db", "pg", "None", &[]));
        assert_eq!(ask(&z, "pg.db.svc.cluster.local.", RecordType::A).answers.len(), 1);
    }

    #[test]
    fn external_name() {
        let mut z = Zone::new("cluster.local").unwrap();
        let mut svc = service("default", "ext", "", &[]);
        let spec = svc.spec.as_mut().unwrap();
        spec.type_ = Some("ExternalName".into());
        spec.external_name = Some("db.example.com".into());
        spec.cluster_ip = None;
        spec.cluster_ips = None;
        z.apply_service(&svc);
        for t in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            let a = ask(&z, "ext.default.svc.cluster.local.", t);
            assert_eq!(datas(&a), ["ext.default.svc.cluster.local. db.example.com."]);
        }
    }

    #[test]
    fn pods_and_apex() {
        let z = Zone::new("cluster.local").unwrap();
        assert_eq!(
            datas(&ask(&z, "10-244-0-7.default.pod.cluster.local.", RecordType::A)),
            ["10-244-0-7.default.pod.cluster.local. 10.244.0.7"]
        );
        assert_eq!(ask(&z, "10-244-0-7.default.pod.cluster.local.", RecordType::AAAA).answers.len(), 0);
        assert_eq!(
            datas(&ask(&z, "fd00--7.default.pod.cluster.local.", RecordType::AAAA)),
            ["fd00--7.default.pod.cluster.local. fd00::7"]
        );
        assert_eq!(ask(&z, "10-244-0-300.default.pod.cluster.local.", RecordType::A).code, ResponseCode::NXDomain);
        assert_eq!(ask(&z, "x.y.pod.cluster.local.", RecordType::A).code, ResponseCode::NXDomain);
        assert_eq!(ask(&z, "cluster.local.", RecordType::SOA).answers.len(), 1);
        assert_eq!(ask(&z, "svc.cluster.local.", RecordType::A).code, ResponseCode::NoError);
        assert_eq!(ask(&z, "nothing.cluster.local.", RecordType::A).code, ResponseCode::NXDomain);
        assert_eq!(ask(&z, "nothing.cluster.local.", RecordType::A).authority[0].ttl(), TTL);
        assert!(Zone::new("").is_err());
        assert!(Zone::new("a..b").is_err());
    }
}
