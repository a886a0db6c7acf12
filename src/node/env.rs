//! A container's environment as the kubelet builds it: the image's variables, then
//! `envFrom` sources in order, then `env` entries, later ones winning; `$(NAME)` in values,
//! command and args expanded from the variables defined before it, `$$` for a literal `$`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};

use super::PlanError;

/// What a container's environment may refer to.
pub struct EnvSources<'a> {
    pub pod: &'a Pod,
    pub config_maps: &'a BTreeMap<String, ConfigMap>,
    pub secrets: &'a BTreeMap<String, Secret>,
    /// None with hostNetwork before the host's address is known, or without a network.
    pub pod_ip: Option<Ipv4Addr>,
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
    fn expansion_follows_the_kubelet() {
        let mut m = BTreeMap::new();
        m.insert("A".to_string(), "x".to_string());
        assert_eq!(expand("$(A)-$(B)-$$(A)-$-$(", &m), "x-$(B)-$(A)-$-$(");
        assert_eq!(expand("héllo $(A)", &m), "héllo x");
    }
}
