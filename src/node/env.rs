//! A container's environment as the kubelet builds it: the image's variables, then
//! `envFrom` sources in order, then `env` entries, later ones winning; `$(NAME)` in values,
//! command and args expanded from the variables defined before it, `$$` for a literal `$`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};

use super::PlanError;

/// What a container's environment may refer to.
pub struct EnvSources<'a> {
    pub pod: &'a Pod,
    pub config_maps: &'a BTreeMap<String, ConfigMap>,
    pub secrets: &'a BTreeMap<String, Secret>,
    /// None with hostNetwork before the host's address is known, or without a network.
    pub pod_ip: Option<Ipv4Addr>,
    /// The Services' variables (see [`service_env`]): over the image's, under the
    /// container's own, and there for `$(NAME)` to expand.
    pub service_env: &'a [(String, String)],
}

/// The environment the kubelet gives the container, in the order variables were defined,
/// and the map `$(NAME)` references in command and args expand from.
#[derive(Debug, Default)]
pub struct Env {
    pub vars: Vec<(String, String)>,
    defined: BTreeMap<String, String>,
}

impl Env {
    /// `KEY=value` lines for the runtime.
    pub fn lines(&self) -> Vec<String> {
        self.vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// Expands `$(NAME)` from the variables the container's `env` and `envFrom` define.
    pub fn expand(&self, text: &str) -> String {
        expand(text, &self.defined)
    }
}

fn config_map_value(src: &EnvSources<'_>, name: &str, key: &str) -> Option<String> {
    let cm = src.config_maps.get(name)?;
    cm.data.as_ref().and_then(|d| d.get(key)).cloned().or_else(|| {
        cm.binary_data.as_ref().and_then(|d| d.get(key)).map(|b| String::from_utf8_lossy(&b.0).into_owned())
    })
}

fn secret_value(src: &EnvSources<'_>, name: &str, key: &str) -> Option<String> {
    let s = src.secrets.get(name)?;
    // stringData is write-only in the API and merged into data; in a file both may appear.
    s.string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
        .or_else(|| s.data.as_ref().and_then(|d| d.get(key)).map(|b| String::from_utf8_lossy(&b.0).into_owned()))
}

fn secret_keys(s: &Secret) -> Vec<(String, String)> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in s.data.iter().flatten() {
        out.insert(k.clone(), String::from_utf8_lossy(&v.0).into_owned());
    }
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out.into_iter().collect()
}

/// Builds container `c`'s environment (`field` names it in errors, e.g.
/// `spec.containers[0]`).
pub fn build(src: &EnvSources<'_>, c: &Container, field: &str, image_env: &[String]) -> Result<Env, PlanError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let set =
        |vars: &mut Vec<(String, String)>, k: String, v: String| match vars.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => vars.push((k, v)),
        };
    for line in image_env {
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        set(&mut vars, k.to_string(), v.to_string());
    }
    let mut defined = BTreeMap::new();
    for (k, v) in src.service_env {
        defined.insert(k.clone(), v.clone());
        set(&mut vars, k.clone(), v.clone());
    }
    for (i, from) in c.env_from.iter().flatten().enumerate() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let pairs: Vec<(String, String)> = if let Some(r) = &from.config_map_ref {
            match src.config_maps.get(&r.name) {
                Some(cm) => {
                    let mut kv: BTreeMap<String, String> = cm.data.clone().unwrap_or_default();
                    for (k, b) in cm.binary_data.iter().flatten() {
                        kv.entry(k.clone()).or_insert_with(|| String::from_utf8_lossy(&b.0).into_owned());
                    }
                    kv.into_iter().collect()
                }
                None if r.optional == Some(true) => Vec::new(),
                None => {
                    return Err(PlanError::missing(
                        format!("{field}.envFrom[{i}].configMapRef"),
                        format!("configmap \"{}\" not found in the manifest", r.name),
                    ));
                }
            }
        } else if let Some(r) = &from.secret_ref {
            match src.secrets.get(&r.name) {
                Some(s) => secret_keys(s),
                None if r.optional == Some(true) => Vec::new(),
                None => {
                    return Err(PlanError::missing(
                        format!("{field}.envFrom[{i}].secretRef"),
                        format!("secret \"{}\" not found in the manifest", r.name),
                    ));
                }
            }
        } else {
            Vec::new()
        };
        for (k, v) in pairs {
            let name = format!("{prefix}{k}");
            defined.insert(name.clone(), v.clone());
            set(&mut vars, name, v);
        }
    }
    for (i, e) in c.env.iter().flatten().enumerate() {
        let f = format!("{field}.env[{i}]");
        let value = if let Some(from) = &e.value_from {
            if let Some(r) = &from.config_map_key_ref {
                match config_map_value(src, &r.name, &r.key) {
                    Some(v) => v,
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(PlanError::missing(
                            format!("{f}.valueFrom.configMapKeyRef"),
                            format!("key \"{}\" of configmap \"{}\" not found in the manifest", r.key, r.name),
                        ));
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                match secret_value(src, &r.name, &r.key) {
                    Some(v) => v,
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(PlanError::missing(
                            format!("{f}.valueFrom.secretKeyRef"),
                            format!("key \"{}\" of secret \"{}\" not found in the manifest", r.key, r.name),
                        ));
                    }
                }
            } else if let Some(r) = &from.field_ref {
                match r.field_path.as_str() {
                    "metadata.name" => src.pod.metadata.name.clone().unwrap_or_default(),
                    "metadata.namespace" => src.pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                    "status.podIP" => src.pod_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    other => {
                        return Err(PlanError::missing(
                            format!("{f}.valueFrom.fieldRef.fieldPath"),
                            format!("unsupported field {other:?}"),
                        ));
                    }
                }
            } else {
                String::new()
            }
        } else {
            // Only plain values expand, and only from variables defined before them.
            expand(e.value.as_deref().unwrap_or_default(), &defined)
        };
        defined.insert(e.name.clone(), value.clone());
        set(&mut vars, e.name.clone(), value);
    }
    Ok(Env { vars, defined })
}

/// The variables the kubelet gives every container for `services` (the pod namespace's
/// when its enableServiceLinks is on, and `kubernetes` of `default` always; see
/// [`services_for`]), as its envvars.FromServices writes them: `NAME_SERVICE_HOST`,
/// `NAME_SERVICE_PORT` (the first port), `NAME_SERVICE_PORT_PORTNAME`, and Docker's link
/// variables (`NAME_PORT=tcp://IP:PORT`, `NAME_PORT_80_TCP_PROTO`, …). Services without a
/// cluster IP (headless, ExternalName) give none.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let var = |s: &str| s.replace('-', "_").to_uppercase();
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let ip = spec.cluster_ip.as_deref().unwrap_or_default();
        let ports = spec.ports.as_deref().unwrap_or_default();
        if ip.is_empty() || ip == "None" || ports.is_empty() {
            continue;
        }
        let prefix = var(svc.metadata.name.as_deref().unwrap_or_default());
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{prefix}_SERVICE_PORT"), ports[0].port.to_string()));
        for p in ports {
            if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((format!("{prefix}_SERVICE_PORT_{}", var(name)), p.port.to_string()));
            }
        }
        for (i, p) in ports.iter().enumerate() {
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            let host_port = if ip.contains(':') { format!("[{ip}]:{}", p.port) } else { format!("{ip}:{}", p.port) };
            let url = format!("{}://{host_port}", protocol.to_lowercase());
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let port_prefix = format!("{prefix}_PORT_{}_{}", p.port, protocol.to_uppercase());
            out.push((port_prefix.clone(), url));
            out.push((format!("{port_prefix}_PROTO"), protocol.to_lowercase()));
            out.push((format!("{port_prefix}_PORT"), p.port.to_string()));
            out.push((format!("{port_prefix}_ADDR"), ip.to_string()));
        }
    }
    out
}

/// The Services whose variables a pod in `namespace` gets, as the kubelet picks them from
/// `namespace`'s (`own`, used only with enableServiceLinks) and `kubernetes` of `default`
/// (`api`): a Service of the pod's namespace wins over the API's of the same name. Sorted
/// by name.
pub fn services_for(own: Vec<Service>, api: Option<Service>, links: bool) -> Vec<Service> {
    let mut by_name: BTreeMap<String, Service> = BTreeMap::new();
    for s in api.into_iter().chain(own.into_iter().filter(|_| links)) {
        by_name.insert(s.metadata.name.clone().unwrap_or_default(), s);
    }
    by_name.into_values().collect()
}

/// The kubelet's expansion: `$(NAME)` becomes NAME's value when it is defined and stays as
/// written when not; `$$` is a literal `$`; anything else is left alone.
pub fn expand(text: &str, defined: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if bytes[i + 1] == b'('
                && let Some(close) = text[i + 2..].find(')')
            {
                let name = &text[i + 2..i + 2 + close];
                match defined.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&text[i..i + 3 + close]),
                }
                i += 3 + close;
                continue;
            }
        }
        let Some(ch) = text[i..].chars().next() else { break };
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_give_the_kubelets_variables() {
        use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
        let svc = |name: &str, ip: &str, ports: Vec<ServicePort>| Service {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec { cluster_ip: Some(ip.into()), ports: Some(ports), ..Default::default() }),
            ..Default::default()
        };
        let port = |name: Option<&str>, port: i32, protocol: &str| ServicePort {
            name: name.map(str::to_string),
            port,
            protocol: Some(protocol.into()),
            ..Default::default()
        };
        let api = svc("kubernetes", "10.96.0.1", vec![port(Some("https"), 443, "TCP")]);
        let web = svc("my-web", "10.96.0.20", vec![port(None, 80, "TCP"), port(Some("dns-udp"), 53, "UDP")]);
        let headless = svc("db", "None", vec![port(None, 5432, "TCP")]);
        let env = service_env(&services_for(vec![web, headless], Some(api.clone()), true));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.96.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_ADDR"), Some("10.96.0.1"));
        assert_eq!(get("MY_WEB_SERVICE_PORT"), Some("80"));
        assert_eq!(get("MY_WEB_SERVICE_PORT_DNS_UDP"), Some("53"));
        assert_eq!(get("MY_WEB_PORT_53_UDP"), Some("udp://10.96.0.20:53"));
        assert_eq!(get("MY_WEB_PORT_53_UDP_PROTO"), Some("udp"));
        assert!(get("DB_SERVICE_HOST").is_none(), "a headless Service gives nothing");
        let without_links =
            service_env(&services_for(vec![svc("x", "10.96.0.9", vec![port(None, 1, "TCP")])], Some(api), false));
        assert!(without_links.iter().all(|(k, _)| k.starts_with("KUBERNETES_")), "{without_links:?}");
    }

    #[test]
    fn expansion_follows_the_kubelet() {
        let mut m = BTreeMap::new();
        m.insert("A".to_string(), "x".to_string());
        assert_eq!(expand("$(A)-$(B)-$$(A)-$-$(", &m), "x-$(B)-$(A)-$-$(");
        assert_eq!(expand("héllo $(A)", &m), "héllo x");
    }
}
