//! Pod manifests for `nodectl run`: one file, YAML or JSON, with one Pod and any ConfigMaps
//! and Secrets it uses, as users write them for kubectl.
//!
//! Each document is decoded strictly as its k8s-openapi type (an unknown field is an
//! error naming it, as `kubectl apply` with the server's strict validation would say). Then
//! every field the Pod sets is held against what `nodectl run` does: a field it would
//! silently ignore to the user's harm is an error, one whose absence is harmless on one
//! machine (scheduling, probes, service accounts) a warning. Last, values are checked with
//! the API server's rules and wording.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use serde_json::Value;

use super::names::name_problem;
use super::{quantity, schema};

/// What a manifest file holds, checked.
#[derive(Debug)]
pub struct Manifest {
    pub pod: Pod,
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
    /// Fields set but ignored by `nodectl run`, each a sentence to print.
    pub warnings: Vec<String>,
    /// The service account tokens of the pod's projected volumes, by `VOLUME/PATH`: the
    /// node daemon asks the API for them; a manifest file has none.
    pub tokens: BTreeMap<String, String>,
    /// The Services' variables the kubelet gives every container of a pod from the API
    /// (`KUBERNETES_SERVICE_HOST` and the like), in order; a manifest file has none.
    pub service_env: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{origin}: document {doc}: {message}")]
    Syntax { origin: String, doc: usize, message: String },
    #[error("{origin}: {kind} \"{name}\" is invalid: {field}: {message}")]
    Invalid { origin: String, kind: String, name: String, field: String, message: String },
    #[error("{origin}: {message}")]
    Content { origin: String, message: String },
}

/// Reads and checks a manifest file.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ManifestError::Read { path: path.display().to_string(), source })?;
    parse(&path.display().to_string(), &text)
}

/// Checks manifest text; `origin` names it in errors.
pub fn parse(origin: &str, text: &str) -> Result<Manifest, ManifestError> {
    let content = |message: String| ManifestError::Content { origin: origin.to_string(), message };
    let mut pods = Vec::new();
    let mut config_maps = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    // YAML is a superset of JSON: one parser reads both, document by document.
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let syntax = |message: String| ManifestError::Syntax { origin: origin.to_string(), doc: n, message };
        let value: Value = serde::Deserialize::deserialize(doc).map_err(|e| syntax(e.to_string()))?;
        if value.is_null() {
            continue; // an empty document, as after a trailing `---`
        }
        let kind =
            value.get("kind").and_then(Value::as_str).ok_or_else(|| syntax("kind: Required value".into()))?.to_string();
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| syntax("apiVersion: Required value".into()))?;
        if api_version != "v1" {
            return Err(syntax(format!(
                "apiVersion: Unsupported value: \"{api_version}\": supported values: \"v1\" (kind {kind})"
            )));
        }
        let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let invalid = |field: String, message: String| ManifestError::Invalid {
            origin: origin.to_string(),
            kind: kind.clone(),
            name: name.clone(),
            field,
            message,
        };
        if let Some(problem) = name_problem(&name, false) {
            return Err(invalid(
                "metadata.name".into(),
                if name.is_empty() { "Required value: name is required".into() } else { problem },
            ));
        }
        match kind.as_str() {
            "Pod" => {
                let value = as_kubectl_reads_it(value);
                pods.push((decode::<Pod>(&value, &invalid)?, value))
            }
            "ConfigMap" => {
                config_maps.insert(name.clone(), decode::<ConfigMap>(&value, &invalid)?);
            }
            "Secret" => {
                secrets.insert(name.clone(), decode::<Secret>(&value, &invalid)?);
            }
            other => {
                return Err(syntax(format!(
                    "kind {other} is not something `nodectl run` runs or uses (Pod, ConfigMap, Secret)"
                )));
            }
        }
    }
    let (pod, raw) = match (pods.pop(), pods.len()) {
        (Some(one), 0) => one,
        (None, _) => return Err(content("no Pod in the file".into())),
        (Some(_), n) => return Err(content(format!("{} Pods in one file; `nodectl run` runs one", n + 1))),
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let invalid = |field: String, message: String| ManifestError::Invalid {
        origin: origin.to_string(),
        kind: "Pod".into(),
        name: name.clone(),
        field,
        message,
    };
    let mut warnings = Vec::new();
    check_fields(&raw, "", &mut warnings)
        .map_err(|field| invalid(field, "Forbidden: not supported by nodectl run".into()))?;
    validate(&pod, &config_maps, &secrets).map_err(|(field, message)| invalid(field, message))?;
    Ok(Manifest { pod, config_maps, secrets, warnings, tokens: BTreeMap::new(), service_env: Vec::new() })
}

/// A quantity may be written as a bare number (`cpu: 1`), which the API server accepts;
/// k8s-openapi's Quantity is a string. File modes may be written in octal.
fn as_kubectl_reads_it(mut pod: Value) -> Value {
    fn fix(v: Option<&mut Value>) {
        if let Some(v) = v
            && v.is_number()
        {
            *v = Value::String(v.to_string());
        }
    }
    for list in ["containers", "initContainers"] {
        for c in pod.pointer_mut(&format!("/spec/{list}")).and_then(Value::as_array_mut).into_iter().flatten() {
            for which in ["limits", "requests"] {
                for q in c
                    .pointer_mut(&format!("/resources/{which}"))
                    .and_then(Value::as_object_mut)
                    .into_iter()
                    .flat_map(|m| m.values_mut())
                {
                    fix(Some(q));
                }
            }
        }
    }
    // kubectl's YAML is YAML 1.1, where `defaultMode: 0400` is octal; ours reads 1.2, where
    // it is the string "0400". Read file modes as kubectl does.
    fn octal(v: Option<&mut Value>) {
        if let Some(v) = v
            && let Some(text) = v.as_str()
            && let Some(digits) = text.strip_prefix("0o").or_else(|| text.strip_prefix('0')).filter(|d| !d.is_empty())
            && let Ok(mode) = i64::from_str_radix(digits, 8)
        {
            *v = Value::from(mode);
        }
    }
    for v in pod.pointer_mut("/spec/volumes").and_then(Value::as_array_mut).into_iter().flatten() {
        fix(v.pointer_mut("/emptyDir/sizeLimit"));
        for source in ["configMap", "secret", "downwardAPI", "projected"] {
            octal(v.pointer_mut(&format!("/{source}/defaultMode")));
            for item in v.pointer_mut(&format!("/{source}/items")).and_then(Value::as_array_mut).into_iter().flatten() {
                octal(item.get_mut("mode"));
            }
        }
        for projection in v.pointer_mut("/projected/sources").and_then(Value::as_array_mut).into_iter().flatten() {
            for source in ["configMap", "secret", "downwardAPI"] {
                let items = projection.pointer_mut(&format!("/{source}/items")).and_then(Value::as_array_mut);
                for item in items.into_iter().flatten() {
                    octal(item.get_mut("mode"));
                }
            }
        }
    }
    pod
}

fn decode<T: serde::de::DeserializeOwned + serde::Serialize>(
    value: &Value,
    invalid: &dyn Fn(String, String) -> ManifestError,
) -> Result<T, ManifestError> {
    let (typed, unknown) = schema::decode::<T>(value).map_err(|(field, message)| invalid(field, message))?;
    match unknown.first() {
        Some(field) => Err(invalid(field.clone(), format!("unknown field \"{field}\""))),
        None => Ok(typed),
    }
}

/// Fields `nodectl run` honours, as paths with `[]` for any list index. A path listed here
/// is taken whole (maps such as labels or resource limits included).
const SUPPORTED: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata.name",
    "metadata.namespace",
    "metadata.labels",
    "metadata.annotations",
    "spec.restartPolicy",
    "spec.terminationGracePeriodSeconds",
    "spec.hostname",
    "spec.hostNetwork",
    "spec.dnsPolicy",
    "spec.dnsConfig.nameservers",
    "spec.dnsConfig.searches",
    "spec.dnsConfig.options[].name",
    "spec.dnsConfig.options[].value",
    "spec.volumes[].name",
    "spec.volumes[].emptyDir.medium",
    "spec.volumes[].emptyDir.sizeLimit",
    "spec.volumes[].hostPath.path",
    "spec.volumes[].hostPath.type",
    "spec.volumes[].configMap.name",
    "spec.volumes[].configMap.items",
    "spec.volumes[].configMap.defaultMode",
    "spec.volumes[].configMap.optional",
    "spec.volumes[].secret.secretName",
    "spec.volumes[].secret.items",
    "spec.volumes[].secret.defaultMode",
    "spec.volumes[].secret.optional",
    "spec.volumes[].downwardAPI",
    "spec.volumes[].projected",
    "spec.securityContext.runAsUser",
    "spec.securityContext.runAsGroup",
    "spec.securityContext.runAsNonRoot",
    "spec.securityContext.seccompProfile.type",
    "spec.securityContext.seccompProfile.localhostProfile",
    "spec.securityContext.appArmorProfile.type",
    "spec.securityContext.appArmorProfile.localhostProfile",
    "spec.securityContext.sysctls",
];

/// Container fields (below `spec.containers[]` and `spec.initContainers[]`).
const CONTAINER: &[&str] = &[
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env[].name",
    "env[].value",
    "env[].valueFrom.configMapKeyRef",
    "env[].valueFrom.secretKeyRef",
    "env[].valueFrom.fieldRef",
    "envFrom[].configMapRef",
    "envFrom[].secretRef",
    "envFrom[].prefix",
    "workingDir",
    "stdin",
    "stdinOnce",
    "tty",
    "ports[].name",
    "ports[].containerPort",
    "ports[].hostPort",
    "ports[].protocol",
    "ports[].hostIP",
    "resources.requests",
    "resources.limits",
    "securityContext.runAsUser",
    "securityContext.runAsGroup",
    "securityContext.runAsNonRoot",
    "securityContext.readOnlyRootFilesystem",
    "securityContext.privileged",
    "securityContext.allowPrivilegeEscalation",
    "securityContext.capabilities.add",
    "securityContext.capabilities.drop",
    "securityContext.seccompProfile.type",
    "securityContext.seccompProfile.localhostProfile",
    "securityContext.appArmorProfile.type",
    "securityContext.appArmorProfile.localhostProfile",
    "volumeMounts[].name",
    "volumeMounts[].mountPath",
    "volumeMounts[].readOnly",
    "volumeMounts[].subPath",
    "lifecycle.preStop.exec",
    "lifecycle.preStop.httpGet",
    "lifecycle.preStop.tcpSocket",
    "lifecycle.preStop.sleep",
];

/// What `nodectl run` honours in a container's liveness, readiness and startup probes.
const PROBES: &[&str] = &["livenessProbe", "readinessProbe", "startupProbe"];
const PROBE_FIELDS: &[&str] = &[
    "exec",
    "httpGet",
    "tcpSocket",
    "initialDelaySeconds",
    "timeoutSeconds",
    "periodSeconds",
    "successThreshold",
    "failureThreshold",
    "terminationGracePeriodSeconds",
];

/// `livenessProbe.exec` and the like, below a container.
fn probe_field(rest: &str) -> bool {
    rest.split_once('.').is_some_and(|(probe, field)| PROBES.contains(&probe) && PROBE_FIELDS.contains(&field))
}

/// Set but harmless to leave out on one machine: a warning, not an error.
const IGNORED: &[&str] = &[
    "metadata.uid",
    "metadata.resourceVersion",
    "metadata.generation",
    "metadata.creationTimestamp",
    "metadata.generateName",
    "metadata.ownerReferences",
    "metadata.finalizers",
    "metadata.managedFields",
    "status",
    "spec.nodeName",
    "spec.nodeSelector",
    "spec.affinity",
    "spec.tolerations",
    "spec.schedulerName",
    "spec.priority",
    "spec.priorityClassName",
    "spec.serviceAccount",
    "spec.serviceAccountName",
    "spec.automountServiceAccountToken",
    "spec.enableServiceLinks",
    "spec.topologySpreadConstraints",
    "spec.imagePullSecrets",
    "spec.containers[].terminationMessagePath",
    "spec.containers[].terminationMessagePolicy",
];

fn normalise(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    // Container fields are listed once for both kinds of container.
    out.replace("spec.initContainers", "spec.containers")
}

fn supported(norm: &str) -> bool {
    SUPPORTED.contains(&norm)
        || norm.strip_prefix("spec.containers[].").is_some_and(|rest| CONTAINER.contains(&rest) || probe_field(rest))
}

/// Whether some supported field lies below `norm`.
fn leads_to_supported(norm: &str) -> bool {
    let below =
        |p: &str| p.len() > norm.len() && p.starts_with(norm) && matches!(p.as_bytes()[norm.len()], b'.' | b'[');
    SUPPORTED.iter().any(|p| below(p))
        || CONTAINER.iter().any(|c| below(&format!("spec.containers[].{c}")))
        || PROBES.iter().any(|p| norm == format!("spec.containers[].{p}"))
}

/// Walks what the manifest sets: Err(path) at the first field `nodectl run` cannot honour.
fn check_fields(value: &Value, path: &str, warnings: &mut Vec<String>) -> Result<(), String> {
    let norm = normalise(path);
    if !path.is_empty() && supported(&norm) {
        return Ok(());
    }
    if IGNORED.contains(&norm.as_str()) {
        warnings.push(format!("{path} is ignored by nodectl run"));
        return Ok(());
    }
    if !path.is_empty() && !leads_to_supported(&norm) {
        return Err(path.to_string());
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if v.is_null() {
                    continue;
                }
                let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                check_fields(v, &child, warnings)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_fields(v, &format!("{path}[{i}]"), warnings)?;
            }
            Ok(())
        }
        _ => Err(path.to_string()),
    }
}

type Problem = (String, String);

/// The API server's rules for the fields we honour, in its words.
fn validate(
    pod: &Pod,
    config_maps: &BTreeMap<String, ConfigMap>,
    secrets: &BTreeMap<String, Secret>,
) -> Result<(), Problem> {
    let p = |f: &str, m: String| Err((f.to_string(), m));
    if let Some(ns) = &pod.metadata.namespace
        && let Some(problem) = name_problem(ns, true)
    {
        return p("metadata.namespace", problem);
    }
    // ConfigMap and Secret keys become file names and variable names: the API server's
    // rule keeps '/' and '..' out of them.
    let config_keys = config_maps.iter().flat_map(|(n, c)| {
        let keys = c.data.iter().flatten().map(|(k, _)| k).chain(c.binary_data.iter().flatten().map(|(k, _)| k));
        keys.map(move |k| (format!("ConfigMap \"{n}\""), "data", k))
    });
    let secret_keys = secrets.iter().flat_map(|(n, s)| {
        let keys = s.data.iter().flatten().map(|(k, _)| k).chain(s.string_data.iter().flatten().map(|(k, _)| k));
        keys.map(move |k| (format!("Secret \"{n}\""), "data", k))
    });
    for (object, field, key) in config_keys.chain(secret_keys) {
        if let Some(problem) = super::names::config_key_problem(key) {
            return Err((format!("{object}: {field}[{key}]"), problem));
        }
    }
    let spec = pod.spec.as_ref().ok_or_else(|| ("spec".to_string(), "Required value".to_string()))?;
    // The rules the API server holds every pod spec to (containers, names, images, ports,
    // policies): the same code as the server's, so a pod `nodectl run` takes, it takes too.
    let as_sent = serde_json::to_value(spec).map_err(|e| ("spec".to_string(), e.to_string()))?;
    if let Some(first) = super::podspec::problems(&as_sent, "spec").into_iter().next() {
        return Err(first);
    }
    if let Some(h) = &spec.hostname
        && let Some(problem) = name_problem(h, true)
    {
        return p("spec.hostname", problem);
    }
    let mut volumes = BTreeSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let f = format!("spec.volumes[{i}]");
        if let Some(problem) = name_problem(&v.name, true) {
            return Err((format!("{f}.name"), problem));
        }
        if !volumes.insert(v.name.as_str()) {
            return Err((format!("{f}.name"), format!("Duplicate value: \"{}\"", v.name)));
        }
        let kinds = [
            v.empty_dir.is_some(),
            v.host_path.is_some(),
            v.config_map.is_some(),
            v.secret.is_some(),
            v.downward_api.is_some(),
            v.projected.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if kinds != 1 {
            return Err((
                f,
                "must specify exactly one of: emptyDir, hostPath, configMap, secret, downwardAPI, projected (the volume types nodectl runs)".into(),
            ));
        }
        if let Some(e) = &v.empty_dir {
            if let Some(m) = e.medium.as_deref().filter(|m| !m.is_empty() && *m != "Memory") {
                return Err((
                    format!("{f}.emptyDir.medium"),
                    format!("Unsupported value: \"{m}\": supported values: \"\", \"Memory\""),
                ));
            }
            if let Some(size) = &e.size_limit {
                quantity::memory_bytes(&size.0).map_err(|m| (format!("{f}.emptyDir.sizeLimit"), m))?;
            }
        }
        if let Some(h) = &v.host_path
            && !h.path.starts_with('/')
        {
            return Err((
                format!("{f}.hostPath.path"),
                format!("Invalid value: \"{}\": must be an absolute path", h.path),
            ));
        }
        if let Some(c) = &v.config_map
            && !config_maps.contains_key(&c.name)
            && c.optional != Some(true)
        {
            return Err((
                format!("{f}.configMap.name"),
                format!("Not found: ConfigMap \"{}\" is not in the file", c.name),
            ));
        }
        if let Some(s) = &v.secret {
            let name = s.secret_name.as_deref().unwrap_or_default();
            if !secrets.contains_key(name) && s.optional != Some(true) {
                return Err((
                    format!("{f}.secret.secretName"),
                    format!("Not found: Secret \"{name}\" is not in the file"),
                ));
            }
        }
    }
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ("spec.initContainers", c))
        .chain(spec.containers.iter().map(|c| ("spec.containers", c)));
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (list, c) in all {
        let n = index.entry(list).or_default();
        let f = format!("{list}[{n}]");
        *n += 1;
        if let Some(w) = &c.working_dir
            && !w.starts_with('/')
        {
            return Err((format!("{f}.workingDir"), format!("Invalid value: \"{w}\": must be an absolute path")));
        }
        for (j, e) in c.env.iter().flatten().enumerate() {
            if e.name.is_empty() {
                return Err((format!("{f}.env[{j}].name"), "Required value".into()));
            }
            if let Some(problem) = super::names::env_name_problem(&e.name) {
                return Err((format!("{f}.env[{j}].name"), problem));
            }
            if let Some(from) = &e.value_from {
                let set = [from.config_map_key_ref.is_some(), from.secret_key_ref.is_some(), from.field_ref.is_some()]
                    .iter()
                    .filter(|k| **k)
                    .count();
                if set != 1 || from.resource_field_ref.is_some() {
                    return Err((
                        format!("{f}.env[{j}].valueFrom"),
                        "must specify exactly one of: configMapKeyRef, secretKeyRef, fieldRef".into(),
                    ));
                }
                if let Some(r) = &from.field_ref
                    && !matches!(r.field_path.as_str(), "metadata.name" | "metadata.namespace" | "status.podIP")
                {
                    return Err((
                        format!("{f}.env[{j}].valueFrom.fieldRef.fieldPath"),
                        format!(
                            "Unsupported value: \"{}\": supported values: \"metadata.name\", \"metadata.namespace\", \"status.podIP\"",
                            r.field_path
                        ),
                    ));
                }
                if let Some(r) = &from.config_map_key_ref
                    && r.optional != Some(true)
                    && !config_maps
                        .get(&r.name)
                        .is_some_and(|cm| cm.data.as_ref().is_some_and(|d| d.contains_key(&r.key)))
                {
                    return Err((
                        format!("{f}.env[{j}].valueFrom.configMapKeyRef"),
                        format!("Not found: key \"{}\" of ConfigMap \"{}\" is not in the file", r.key, r.name),
                    ));
                }
                if let Some(r) = &from.secret_key_ref
                    && r.optional != Some(true)
                    && !secrets.get(&r.name).is_some_and(|s| {
                        s.data.as_ref().is_some_and(|d| d.contains_key(&r.key))
                            || s.string_data.as_ref().is_some_and(|d| d.contains_key(&r.key))
                    })
                {
                    return Err((
                        format!("{f}.env[{j}].valueFrom.secretKeyRef"),
                        format!("Not found: key \"{}\" of Secret \"{}\" is not in the file", r.key, r.name),
                    ));
                }
            }
        }
        for (j, port) in c.ports.iter().flatten().enumerate() {
            if !(1..=65535).contains(&port.container_port) {
                return Err((
                    format!("{f}.ports[{j}].containerPort"),
                    format!("Invalid value: {}: must be between 1 and 65535, inclusive", port.container_port),
                ));
            }
            if let Some(h) = port.host_port
                && !(0..=65535).contains(&h)
            {
                return Err((
                    format!("{f}.ports[{j}].hostPort"),
                    format!("Invalid value: {h}: must be between 1 and 65535, inclusive"),
                ));
            }
            if let Some(proto) = port.protocol.as_deref().filter(|p| !matches!(*p, "TCP" | "UDP")) {
                return Err((
                    format!("{f}.ports[{j}].protocol"),
                    format!("Unsupported value: \"{proto}\": supported values: \"TCP\", \"UDP\""),
                ));
            }
        }
        if let Some(r) = &c.resources {
            for (which, map) in [("limits", &r.limits), ("requests", &r.requests)] {
                for (k, q) in map.iter().flatten() {
                    let field = format!("{f}.resources.{which}[{k}]");
                    match k.as_str() {
                        "cpu" => quantity::cpu_millis(&q.0).map(|_| ()).map_err(|m| (field.clone(), m))?,
                        "memory" => quantity::memory_bytes(&q.0).map(|_| ()).map_err(|m| (field.clone(), m))?,
                        other => {
                            return Err((
                                field,
                                format!("Unsupported value: \"{other}\": nodectl run limits cpu and memory"),
                            ));
                        }
                    }
                }
            }
            if let (Some(limit), Some(request)) =
                (r.limits.as_ref().and_then(|l| l.get("memory")), r.requests.as_ref().and_then(|l| l.get("memory")))
                && quantity::memory_bytes(&request.0).unwrap_or(0)
                    > quantity::memory_bytes(&limit.0).unwrap_or(i64::MAX)
            {
                return Err((
                    format!("{f}.resources.requests[memory]"),
                    format!(
                        "Invalid value: \"{}\": must be less than or equal to memory limit of {}",
                        request.0, limit.0
                    ),
                ));
            }
        }
        for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
            if !volumes.contains(m.name.as_str()) {
                return Err((format!("{f}.volumeMounts[{j}].name"), format!("Not found: \"{}\"", m.name)));
            }
            if !m.mount_path.starts_with('/') {
                return Err((
                    format!("{f}.volumeMounts[{j}].mountPath"),
                    format!("Invalid value: \"{}\": must be an absolute path", m.mount_path),
                ));
            }
            if let Some(sub) = m.sub_path.as_deref()
                && (sub.starts_with('/') || sub.split('/').any(|part| part == ".."))
            {
                return Err((
                    format!("{f}.volumeMounts[{j}].subPath"),
                    format!("Invalid value: \"{sub}\": must be a relative path without '..'"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  restartPolicy: OnFailure
  nodeSelector: {disk: ssd}
  volumes:
  - name: scratch
    emptyDir: {medium: Memory, sizeLimit: 16Mi}
  - name: conf
    configMap: {name: cfg}
  initContainers:
  - name: init
    image: busybox
    command: [echo]
  containers:
  - name: app
    image: busybox
    command: [sh, -c, 'echo $GREETING']
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    ports: [{containerPort: 80, hostPort: 8080}]
    resources:
      limits: {cpu: 1, memory: 64Mi}
      requests: {cpu: 100m, memory: 32Mi}
    readinessProbe: {httpGet: {path: /, port: 80}}
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
    - {name: conf, mountPath: /etc/app, readOnly: true, subPath: sub}
    securityContext: {runAsUser: 1000, readOnlyRootFilesystem: true, capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}}
";

    #[test]
    fn a_full_manifest_parses_with_warnings_for_what_is_ignored() {
        let m = parse("good.yaml", GOOD).unwrap();
        assert_eq!(m.pod.metadata.name.as_deref(), Some("web"));
        assert_eq!(m.config_maps.len(), 1);
        assert_eq!(m.secrets.len(), 1);
        assert_eq!(m.warnings, ["spec.nodeSelector is ignored by nodectl run"]);
        let json = serde_json::to_string(&serde_yaml_ng::from_str::<Value>("kind: x").unwrap()).unwrap();
        assert_eq!(json, r#"{"kind":"x"}"#);
    }

    #[test]
    fn every_example_in_manifests_parses_without_warnings() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
        let mut files = vec![dir.join("hello.yaml")];
        files.extend(std::fs::read_dir(dir.join("pods")).unwrap().map(|e| e.unwrap().path()));
        assert!(files.len() >= 8, "{files:?}");
        for f in files {
            let m = load(&f).unwrap_or_else(|e| panic!("{e}"));
            assert!(m.warnings.is_empty(), "{}: {:?}", f.display(), m.warnings);
        }
    }

    #[test]
    fn json_is_read_too() {
        let m = parse("pod.json", r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}"#).unwrap();
        assert_eq!(m.pod.spec.unwrap().containers[0].image.as_deref(), Some("busybox"));
    }

    #[test]
    fn file_modes_are_octal_as_kubectl_reads_them() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  volumes: [{name: v, secret: {secretName: s, defaultMode: 0400, items: [{key: k, path: k, mode: 0o644}]}}]\n  containers: [{name: c, image: busybox}]\n";
        let m = parse("modes.yaml", text).unwrap();
        let secret = m.pod.spec.unwrap().volumes.unwrap()[0].secret.clone().unwrap();
        assert_eq!(secret.default_mode, Some(0o400));
        assert_eq!(secret.items.unwrap()[0].mode, Some(0o644));
    }

    /// (what is wrong, the manifest, the field or text the error must name)
    fn bad_cases() -> Vec<(&'static str, String, &'static str)> {
        let pod = |spec: &str| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{spec}");
        let c = "  containers:\n  - name: c\n    image: busybox\n";
        vec![
            ("not YAML", "kind: Pod\n  bad: [".into(), "document 1"),
            ("no kind", "apiVersion: v1\nmetadata: {name: p}\n".into(), "kind: Required value"),
            (
                "wrong apiVersion",
                "apiVersion: v2\nkind: Pod\nmetadata: {name: p}\n".into(),
                "apiVersion: Unsupported value",
            ),
            ("other kind", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n".into(), "kind Service"),
            ("no pod", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n".into(), "no Pod"),
            ("two pods", format!("{}---\n{}", pod(c), pod(c)), "2 Pods"),
            (
                "bad name",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: Web_1}\nspec:\n  containers: []\n".into(),
                "metadata.name",
            ),
            ("unknown field", pod(&format!("{c}    imagee: typo\n")), "spec.containers[0].imagee"),
            (
                "wrong type",
                pod("  containers:\n  - name: c\n    image: busybox\n    ports: [{containerPort: eighty}]\n"),
                "spec.containers[0].ports[0].containerPort",
            ),
            ("no containers", pod("  containers: []\n"), "spec.containers"),
            ("no image", pod("  containers:\n  - name: c\n"), "spec.containers[0].image"),
            (
                "duplicate container",
                pod("  containers:\n  - {name: c, image: busybox}\n  - {name: c, image: busybox}\n"),
                "spec.containers[1].name",
            ),
            ("bad restartPolicy", pod(&format!("  restartPolicy: Sometimes\n{c}")), "spec.restartPolicy"),
            (
                "unsupported volume",
                pod(&format!("  volumes:\n  - name: v\n    nfs: {{server: x, path: /}}\n{c}")),
                "spec.volumes[0].nfs",
            ),
            (
                "postStart hooks",
                pod(&format!("{c}    lifecycle: {{postStart: {{exec: {{command: [x]}}}}}}\n")),
                "spec.containers[0].lifecycle.postStart",
            ),
            ("hostPID", pod(&format!("  hostPID: true\n{c}")), "spec.hostPID"),
            (
                "unknown seccomp profile type",
                pod(&format!("{c}    securityContext: {{seccompProfile: {{type: Strict}}}}\n")),
                "spec.containers[0].securityContext.seccompProfile.type",
            ),
            (
                "Localhost seccomp profile without a name",
                pod(&format!("  securityContext: {{seccompProfile: {{type: Localhost}}}}\n{c}")),
                "spec.securityContext.seccompProfile.localhostProfile",
            ),
            (
                "a seccomp profile name with RuntimeDefault",
                pod(&format!(
                    "{c}    securityContext: {{seccompProfile: {{type: RuntimeDefault, localhostProfile: x.json}}}}\n"
                )),
                "spec.containers[0].securityContext.seccompProfile.localhostProfile",
            ),
            (
                "unknown AppArmor profile type",
                pod(&format!("{c}    securityContext: {{appArmorProfile: {{type: Strict}}}}\n")),
                "spec.containers[0].securityContext.appArmorProfile.type",
            ),
            (
                "Localhost AppArmor profile without a name",
                pod(&format!("  securityContext: {{appArmorProfile: {{type: Localhost}}}}\n{c}")),
                "spec.securityContext.appArmorProfile.localhostProfile",
            ),
            (
                "an AppArmor profile name with Unconfined",
                pod(&format!(
                    "{c}    securityContext: {{appArmorProfile: {{type: Unconfined, localhostProfile: x}}}}\n"
                )),
                "spec.containers[0].securityContext.appArmorProfile.localhostProfile",
            ),
            (
                "bad quantity",
                pod(&format!("{c}    resources: {{limits: {{memory: lots}}}}\n")),
                "spec.containers[0].resources.limits[memory]",
            ),
            (
                "gpu limit",
                pod(&format!("{c}    resources: {{limits: {{nvidia.com/gpu: 1}}}}\n")),
                "resources.limits[nvidia.com/gpu]",
            ),
            (
                "request above limit",
                pod(&format!("{c}    resources: {{limits: {{memory: 1Mi}}, requests: {{memory: 2Mi}}}}\n")),
                "resources.requests[memory]",
            ),
            (
                "missing volume",
                pod(&format!("{c}    volumeMounts: [{{name: nope, mountPath: /x}}]\n")),
                "spec.containers[0].volumeMounts[0].name",
            ),
            (
                "relative mountPath",
                pod(
                    "  volumes: [{name: v, emptyDir: {}}]\n  containers:\n  - name: c\n    image: busybox\n    volumeMounts: [{name: v, mountPath: x}]\n",
                ),
                "volumeMounts[0].mountPath",
            ),
            (
                "escaping subPath",
                pod(
                    "  volumes: [{name: v, emptyDir: {}}]\n  containers:\n  - name: c\n    image: busybox\n    volumeMounts: [{name: v, mountPath: /x, subPath: ../../etc}]\n",
                ),
                "volumeMounts[0].subPath",
            ),
            (
                "missing configMap",
                pod(&format!("{c}    env: [{{name: A, valueFrom: {{configMapKeyRef: {{name: nope, key: k}}}}}}]\n")),
                "env[0].valueFrom.configMapKeyRef",
            ),
            (
                "unsupported fieldRef",
                pod(&format!("{c}    env: [{{name: A, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}]\n")),
                "fieldRef.fieldPath",
            ),
            (
                "port out of range",
                pod(&format!("{c}    ports: [{{containerPort: 70000}}]\n")),
                "ports[0].containerPort",
            ),
            ("SCTP", pod(&format!("{c}    ports: [{{containerPort: 80, protocol: SCTP}}]\n")), "ports[0].protocol"),
            (
                "relative hostPath",
                pod(&format!("  volumes: [{{name: v, hostPath: {{path: data}}}}]\n{c}")),
                "spec.volumes[0].hostPath.path",
            ),
        ]
    }

    #[test]
    fn malformed_and_unsupported_manifests_name_what_is_wrong() {
        for (what, text, want) in bad_cases() {
            let err = parse("bad.yaml", &text).map(|_| ()).expect_err(what).to_string();
            assert!(err.contains(want), "{what}: {err}");
            assert!(err.starts_with("bad.yaml: "), "{what}: the file is named: {err}");
        }
    }
}
