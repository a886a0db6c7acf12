//! A pod's /etc/resolv.conf, as the kubelet writes it (pkg/kubelet/network/dns): chosen by
//! the pod's dnsPolicy, its dnsConfig merged in, then cut to the resolver's limits with a
//! warning saying what was applied. Pure: the host's resolv.conf and the cluster's DNS
//! are arguments.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::PodSpec;

/// glibc reads at most 3 nameservers (the kubelet's validation.MaxDNSNameservers).
pub const MAX_NAMESERVERS: usize = 3;
/// The kubelet's limits on the search line (MaxDNSSearchPaths, MaxDNSSearchListChars).
pub const MAX_SEARCHES: usize = 32;
pub const MAX_SEARCH_CHARS: usize = 2048;
/// A search domain longer than a DNS name makes some resolvers abort (glibc 2.28); the
/// kubelet drops those.
const MAX_SEARCH_LEN: usize = 253;

/// The cluster's DNS as pods with dnsPolicy ClusterFirst see it: the node's DNS server
/// (the bridge's gateway address) and the cluster domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDns {
    pub server: Ipv4Addr,
    pub domain: String,
}

/// What a resolv.conf says, in the kubelet's terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// `name` or `name:value`, in order.
    pub options: Vec<String>,
}

impl DnsConfig {
    /// Reads a resolv.conf's text as the kubelet's parseResolvConf: the last `search`
    /// (or `domain`) line wins, options accumulate, comments are skipped.
    pub fn parse(text: &str) -> DnsConfig {
        let mut c = DnsConfig::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => c.nameservers.extend(words.next().map(str::to_string)),
                Some("search") | Some("domain") => {
                    c.searches = words.map(|w| w.trim_end_matches('.').to_string()).filter(|w| !w.is_empty()).collect()
                }
                Some("options") => c.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        c
    }

    /// The file's text: nameservers, then the search line, then options.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// Which resolv.conf a pod gets (the kubelet's podDNSType).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Cluster,
    Host,
    None,
}

/// The kind of DNS `spec` asks for, given whether the node has cluster DNS. Also the
/// warning the kubelet gives when ClusterFirst must fall back to Default.
pub fn kind(spec: &PodSpec, cluster: bool) -> (Kind, Option<String>) {
    let host_network = spec.host_network == Some(true);
    let wanted = match spec.dns_policy.as_deref() {
        Some("None") => return (Kind::None, None),
        Some("ClusterFirstWithHostNet") => Kind::Cluster,
        // A ClusterFirst pod in the host's network keeps the host's DNS.
        Some("ClusterFirst") | None if !host_network => Kind::Cluster,
        _ => Kind::Host,
    };
    if wanted == Kind::Cluster && !cluster {
        let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
        return (
            Kind::Host,
            Some(format!(
                "the node has no cluster DNS and cannot create the pod with the {policy:?} policy: falling back to the \"Default\" policy"
            )),
        );
    }
    (wanted, None)
}

/// The pod's resolv.conf and the warnings cutting it to the limits gave (the kubelet's
/// DNSConfigForming events; the fallback's warning is [`kind`]'s). `host` is the node's resolv.conf; `own_network` whether the pod has a
/// network namespace of its own, where the host's loopback nameservers would be the pod.
pub fn pod_resolv_conf(
    spec: &PodSpec,
    namespace: &str,
    host: &str,
    cluster: Option<&ClusterDns>,
    own_network: bool,
) -> (String, Vec<String>) {
    let mut warnings = Vec::new();
    let (kind, _) = kind(spec, cluster.is_some());
    let host_conf = DnsConfig::parse(host);
    let mut c = match (kind, cluster) {
        (Kind::Cluster, Some(cluster)) => {
            let d = cluster.domain.trim_end_matches('.');
            let mut searches = vec![format!("{namespace}.svc.{d}"), format!("svc.{d}"), d.to_string()];
            searches.extend(host_conf.searches.iter().cloned());
            DnsConfig { nameservers: vec![cluster.server.to_string()], searches, options: vec!["ndots:5".into()] }
        }
        (Kind::Host, _) | (Kind::Cluster, None) => {
            let mut c = host_conf;
            if own_network {
                c.nameservers.retain(|ns| !ns.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback()));
            }
            c
        }
        (Kind::None, _) => DnsConfig::default(),
    };
    if let Some(extra) = &spec.dns_config {
        c.nameservers =
            without_duplicates(c.nameservers.into_iter().chain(extra.nameservers.iter().flatten().cloned()));
        c.searches = without_duplicates(c.searches.into_iter().chain(extra.searches.iter().flatten().cloned()));
        let more = extra.options.iter().flatten().filter_map(|o| {
            let name = o.name.as_deref().filter(|n| !n.is_empty())?;
            Some(match o.value.as_deref() {
                Some(v) if !v.is_empty() => format!("{name}:{v}"),
                _ => name.to_string(),
            })
        });
        c.options = merge_options(c.options, more);
    }
    if c.nameservers.len() > MAX_NAMESERVERS {
        c.nameservers.truncate(MAX_NAMESERVERS);
        warnings.push(format!(
            "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
            c.nameservers.join(" ")
        ));
    }
    if let Some(w) = fit_searches(&mut c.searches) {
        warnings.push(w);
    }
    (c.render(), warnings)
}

fn without_duplicates(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Options by name, a later one replacing an earlier one of the same name in its place
/// (the kubelet's mergeDNSOptions).
fn merge_options(base: Vec<String>, more: impl Iterator<Item = String>) -> Vec<String> {
    let name = |o: &str| o.split(':').next().unwrap_or("").to_string();
    let mut out: Vec<String> = Vec::new();
    for o in base.into_iter().chain(more) {
        match out.iter_mut().find(|x| name(x) == name(&o)) {
            Some(x) => *x = o,
            None => out.push(o),
        }
    }
    out
}

/// Cuts the search list to the kubelet's limits: 32 domains, none longer than a DNS name,
/// 2048 characters in all (dropping from the end). The warning, if anything was cut.
fn fit_searches(searches: &mut Vec<String>) -> Option<String> {
    let mut cut = false;
    if searches.len() > MAX_SEARCHES {
        searches.truncate(MAX_SEARCHES);
        cut = true;
    }
    let before = searches.len();
    searches.retain(|s| s.len() <= MAX_SEARCH_LEN);
    cut |= searches.len() != before;
    while searches.join(" ").len() > MAX_SEARCH_CHARS {
        searches.pop();
        cut = true;
    }
    cut.then(|| {
        format!(
            "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
            searches.join(" ")
        )
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption};

    use super::*;

    const HOST: &str = "# host\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp.example. lab.example\noptions edns0 trust-ad\n";

    fn cluster() -> ClusterDns {
        ClusterDns { server: Ipv4Addr::new(10, 244, 1, 1), domain: "cluster.local".into() }
    }

    fn spec(policy: Option<&str>, host_network: bool) -> PodSpec {
        PodSpec { dns_policy: policy.map(str::to_string), host_network: Some(host_network), ..Default::default() }
    }

    #[test]
    fn cluster_first_names_the_cluster_dns_then_the_hosts_search_domains() {
        let (text, warnings) = pod_resolv_conf(&spec(Some("ClusterFirst"), false), "web", HOST, Some(&cluster()), true);
        assert_eq!(
            text,
            "nameserver 10.244.1.1\nsearch web.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\noptions ndots:5\n"
        );
        assert!(warnings.is_empty());
        // No policy is ClusterFirst.
        assert_eq!(pod_resolv_conf(&spec(None, false), "web", HOST, Some(&cluster()), true).0, text);
    }

    #[test]
    fn host_network_pods_keep_the_hosts_dns_unless_cluster_first_with_host_net() {
        let (text, _) = pod_resolv_conf(&spec(Some("ClusterFirst"), true), "web", HOST, Some(&cluster()), false);
        assert_eq!(
            text,
            "nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp.example lab.example\noptions edns0 trust-ad\n"
        );
        let (text, _) =
            pod_resolv_conf(&spec(Some("ClusterFirstWithHostNet"), true), "web", HOST, Some(&cluster()), false);
        assert!(text.starts_with("nameserver 10.244.1.1\nsearch web.svc.cluster.local "), "{text}");
    }

    #[test]
    fn default_is_the_hosts_without_loopback_nameservers_for_a_pod_with_its_own_network() {
        let (text, _) = pod_resolv_conf(&spec(Some("Default"), false), "web", HOST, Some(&cluster()), true);
        assert_eq!(text, "nameserver 10.0.0.2\nsearch corp.example lab.example\noptions edns0 trust-ad\n");
    }

    #[test]
    fn without_cluster_dns_cluster_first_falls_back_to_default_with_a_warning() {
        let s = spec(Some("ClusterFirst"), false);
        let (text, _) = pod_resolv_conf(&s, "web", HOST, None, true);
        assert_eq!(text, "nameserver 10.0.0.2\nsearch corp.example lab.example\noptions edns0 trust-ad\n");
        let (kind, warning) = kind(&s, false);
        assert_eq!(kind, Kind::Host);
        assert!(warning.unwrap().contains("\"Default\""));
        assert_eq!(super::kind(&s, true), (Kind::Cluster, None));
    }

    #[test]
    fn none_is_the_dns_config_alone_and_dns_config_merges_as_the_kubelets() {
        let mut s = spec(Some("None"), false);
        s.dns_config = Some(PodDNSConfig {
            nameservers: Some(vec!["192.0.2.1".into()]),
            searches: Some(vec!["a.example".into()]),
            options: Some(vec![
                PodDNSConfigOption { name: Some("ndots".into()), value: Some("2".into()) },
                PodDNSConfigOption { name: Some("edns0".into()), value: None },
            ]),
        });
        let (text, _) = pod_resolv_conf(&s, "web", HOST, Some(&cluster()), true);
        assert_eq!(text, "nameserver 192.0.2.1\nsearch a.example\noptions ndots:2 edns0\n");

        // Merged into ClusterFirst: duplicates dropped, ndots replaced in its place.
        s.dns_policy = Some("ClusterFirst".into());
        s.dns_config.as_mut().unwrap().nameservers = Some(vec!["10.244.1.1".into(), "192.0.2.1".into()]);
        s.dns_config.as_mut().unwrap().searches = Some(vec!["svc.cluster.local".into(), "a.example".into()]);
        let (text, _) = pod_resolv_conf(&s, "web", "", Some(&cluster()), true);
        assert_eq!(
            text,
            "nameserver 10.244.1.1\nnameserver 192.0.2.1\nsearch web.svc.cluster.local svc.cluster.local cluster.local a.example\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn the_limits_cut_nameservers_and_searches_with_a_warning() {
        let mut s = spec(Some("None"), false);
        let long = "x".repeat(254);
        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        s.dns_config = Some(PodDNSConfig {
            nameservers: Some((1..=5).map(|i| format!("192.0.2.{i}")).collect()),
            searches: Some(many.iter().cloned().chain([long]).collect()),
            options: None,
        });
        let (text, warnings) = pod_resolv_conf(&s, "web", "", None, true);
        assert!(
            text.starts_with("nameserver 192.0.2.1\nnameserver 192.0.2.2\nnameserver 192.0.2.3\nsearch "),
            "{text}"
        );
        let search = text.lines().find(|l| l.starts_with("search ")).unwrap();
        assert_eq!(search.split_whitespace().count() - 1, MAX_SEARCHES);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("Nameserver limits were exceeded"));
        assert!(warnings[1].starts_with("Search Line limits were exceeded"));

        // 2048 characters: domains dropped from the end.
        let mut searches: Vec<String> = (0..10).map(|i| format!("{i}{}", "y".repeat(249))).collect();
        assert!(fit_searches(&mut searches).is_some());
        assert_eq!(searches.len(), 8);
        assert!(searches.join(" ").len() <= MAX_SEARCH_CHARS);
    }
}
