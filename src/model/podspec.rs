//! The rules kube-apiserver holds a pod spec to (its ValidatePodSpec, for the fields that
//! tutorials set), in its words: one code for the API server (pods and the templates of
//! workloads) and for `nodectl run`.

use std::collections::BTreeSet;

use serde_json::Value;

use super::names::name_problem;

/// A problem: the field path and what is wrong with it.
pub type Problem = (String, String);

/// Kube's message for a number out of 1..=65535.
fn port_problem(port: i64) -> Option<String> {
    (!(1..=65535).contains(&port)).then(|| format!("Invalid value: {port}: must be between 1 and 65535, inclusive"))
}

/// `value`, one of `allowed` (or absent), else kube's "Unsupported value".
fn one_of(value: &Value, allowed: &[&str]) -> Option<String> {
    let v = value.as_str()?;
    (!allowed.contains(&v)).then(|| {
        let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        format!("Unsupported value: \"{v}\": supported values: {}", list.join(", "))
    })
}

/// Every problem of the pod spec `spec`, found at `path` (`spec`, or
/// `spec.template.spec` in a workload), in the order kube reports them.
pub fn problems(spec: &Value, path: &str) -> Vec<Problem> {
    let mut out: Vec<Problem> = Vec::new();
    let mut names = BTreeSet::new();
    let containers = spec.get("containers").and_then(Value::as_array).filter(|c| !c.is_empty());
    if containers.is_none() {
        out.push((format!("{path}.containers"), "Required value".into()));
    }
    for list in ["initContainers", "containers"] {
        for (i, c) in spec.get(list).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let f = format!("{path}.{list}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() {
                out.push((format!("{f}.name"), "Required value".into()));
            } else if let Some(problem) = name_problem(name, true) {
                out.push((format!("{f}.name"), problem));
            } else if !names.insert(name.to_string()) {
                out.push((format!("{f}.name"), format!("Duplicate value: \"{name}\"")));
            }
            if c.get("image").and_then(Value::as_str).is_none_or(|i| i.trim().is_empty()) {
                out.push((format!("{f}.image"), "Required value".into()));
            }
            if let Some(problem) =
                c.get("imagePullPolicy").and_then(|p| one_of(p, &["Always", "IfNotPresent", "Never"]))
            {
                out.push((format!("{f}.imagePullPolicy"), problem));
            }
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                let Some(p) = c.get(probe) else { continue };
                if list == "initContainers" {
                    out.push((format!("{f}.{probe}"), "Forbidden: may not be set for init containers".into()));
                    continue;
                }
                probe_problems(p, &format!("{f}.{probe}"), probe != "readinessProbe", &mut out);
            }
            for (key, kind) in [("seccompProfile", "seccomp"), ("appArmorProfile", "AppArmor")] {
                if let Some(profile) = c.pointer(&format!("/securityContext/{key}")) {
                    profile_problems(profile, &format!("{f}.securityContext.{key}"), kind, &mut out);
                }
            }
            if let Some(pre_stop) = c.pointer("/lifecycle/preStop") {
                handler_problems(pre_stop, &format!("{f}.lifecycle.preStop"), &mut out);
            }
            for (j, p) in c.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
                let pf = format!("{f}.ports[{j}]");
                match p.get("containerPort").and_then(Value::as_i64) {
                    None | Some(0) => out.push((format!("{pf}.containerPort"), "Required value".into())),
                    Some(n) => out.extend(port_problem(n).map(|m| (format!("{pf}.containerPort"), m))),
                }
                if let Some(h) = p.get("hostPort").and_then(Value::as_i64).filter(|h| *h != 0) {
                    out.extend(port_problem(h).map(|m| (format!("{pf}.hostPort"), m)));
                }
                if let Some(problem) = p.get("protocol").and_then(|v| one_of(v, &["SCTP", "TCP", "UDP"])) {
                    out.push((format!("{pf}.protocol"), problem));
                }
            }
        }
    }
    for (key, kind) in [("seccompProfile", "seccomp"), ("appArmorProfile", "AppArmor")] {
        if let Some(profile) = spec.pointer(&format!("/securityContext/{key}")) {
            profile_problems(profile, &format!("{path}.securityContext.{key}"), kind, &mut out);
        }
    }
    let mut sysctls = BTreeSet::new();
    for (i, s) in spec.pointer("/securityContext/sysctls").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let f = format!("{path}.securityContext.sysctls[{i}].name");
        let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            out.push((f, "Required value".into()));
        } else if !sysctl_name_ok(name) {
            out.push((
                f,
                format!(
                    "Invalid value: \"{name}\": must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$"
                ),
            ));
        } else if !sysctls.insert(name.replace('/', ".")) {
            out.push((f, format!("Duplicate value: \"{name}\"")));
        }
    }
    if let Some(problem) = spec.get("restartPolicy").and_then(|p| one_of(p, &["Always", "OnFailure", "Never"])) {
        out.push((format!("{path}.restartPolicy"), problem));
    }
    if let Some(problem) =
        spec.get("dnsPolicy").and_then(|p| one_of(p, &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]))
    {
        out.push((format!("{path}.dnsPolicy"), problem));
    }
    if let Some(g) = spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64)
        && g < 0
    {
        out.push((
            format!("{path}.terminationGracePeriodSeconds"),
            format!("Invalid value: {g}: must be greater than or equal to 0"),
        ));
    }
    out
}

/// A seccompProfile or appArmorProfile (`kind` is "seccomp" or "AppArmor"), as kube's
/// validateSeccompProfileField and ValidateAppArmorProfileField check it: a known type, and
/// a profile name exactly when the type is Localhost.
fn profile_problems(profile: &Value, f: &str, kind: &str, out: &mut Vec<Problem>) {
    let type_ = profile.get("type").and_then(Value::as_str).unwrap_or_default();
    let name = profile.get("localhostProfile").and_then(Value::as_str);
    if type_.is_empty() {
        out.push((format!("{f}.type"), "Required value".into()));
        return;
    }
    if let Some(problem) = one_of(&profile["type"], &["Localhost", "RuntimeDefault", "Unconfined"]) {
        out.push((format!("{f}.type"), problem));
        return;
    }
    let name_field = format!("{f}.localhostProfile");
    match (type_, name) {
        ("Localhost", None | Some("")) => {
            out.push((name_field, format!("Required value: must be set when {kind} type is Localhost")))
        }
        ("Localhost", Some(n)) if kind == "AppArmor" && n.trim() != n => {
            out.push((name_field, format!("Invalid value: \"{n}\": must not be padded with whitespace")))
        }
        ("Localhost", Some(n)) if kind == "AppArmor" && n.len() > 4095 => {
            out.push((name_field, format!("Too long: may not be more than 4095 bytes (got {})", n.len())))
        }
        ("Localhost", _) | (_, None) => {}
        (_, Some(n)) => {
            out.push((name_field, format!("Invalid value: \"{n}\": can only be set when {kind} type is Localhost")))
        }
    }
}

/// Kube's sysctl name rule: dot- or slash-separated segments of lower-case letters,
/// digits, '-' and '_', each starting and ending with a letter or digit; 253 at most.
fn sysctl_name_ok(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    name.len() <= 253
        && name.split(['.', '/']).all(|seg| {
            let b = seg.as_bytes();
            !b.is_empty()
                && alnum(b[0])
                && alnum(b[b.len() - 1])
                && b.iter().all(|c| alnum(*c) || *c == b'-' || *c == b'_')
        })
}

/// Kube's validateProbe: one handler, and counts that are not negative (liveness and
/// startup probes succeed once: their successThreshold must be 1).
fn probe_problems(probe: &Value, path: &str, success_once: bool, out: &mut Vec<Problem>) {
    handler_problems(probe, path, out);
    for field in ["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"] {
        if let Some(n) = probe.get(field).and_then(Value::as_i64)
            && n < 0
        {
            out.push((format!("{path}.{field}"), format!("Invalid value: {n}: must be greater than or equal to 0")));
        }
    }
    if success_once
        && let Some(n) = probe.get("successThreshold").and_then(Value::as_i64)
        && n != 1
        && n >= 0
    {
        out.push((format!("{path}.successThreshold"), format!("Invalid value: {n}: must be 1")));
    }
}

/// A probe's or hook's action: exactly one of exec, httpGet, tcpSocket (and, for hooks,
/// sleep), each with what it needs.
fn handler_problems(handler: &Value, path: &str, out: &mut Vec<Problem>) {
    let kinds: Vec<&str> =
        ["exec", "httpGet", "tcpSocket", "grpc", "sleep"].into_iter().filter(|k| handler.get(*k).is_some()).collect();
    match kinds.as_slice() {
        [] => out.push((path.to_string(), "Required value: must specify a handler type".into())),
        [_] => {}
        [_, second, ..] => {
            out.push((format!("{path}.{second}"), "Forbidden: may not specify more than 1 handler type".into()))
        }
    }
    if let Some(exec) = handler.get("exec")
        && exec.get("command").and_then(Value::as_array).is_none_or(|c| c.is_empty())
    {
        out.push((format!("{path}.exec.command"), "Required value".into()));
    }
    for kind in ["httpGet", "tcpSocket"] {
        let Some(h) = handler.get(kind) else { continue };
        let field = format!("{path}.{kind}.port");
        match h.get("port") {
            Some(Value::Number(n)) => out.extend(port_problem(n.as_i64().unwrap_or(0)).map(|m| (field, m))),
            Some(Value::String(name)) if port_name_ok(name) => {}
            Some(Value::String(name)) => out.push((
                field,
                format!(
                    "Invalid value: \"{name}\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
                ),
            )),
            _ => out.push((field, "Required value".into())),
        }
    }
    if let Some(problem) = handler.pointer("/httpGet/scheme").and_then(|s| one_of(s, &["HTTP", "HTTPS"])) {
        out.push((format!("{path}.httpGet.scheme"), problem));
    }
    if let Some(n) = handler.pointer("/sleep/seconds").and_then(Value::as_i64)
        && n < 0
    {
        out.push((format!("{path}.sleep.seconds"), format!("Invalid value: {n}: must be greater than or equal to 0")));
    }
}

/// An IANA service name, as a named port must be: 1-15 lowercase letters, digits and
/// single inner hyphens, with at least one letter.
fn port_name_ok(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_spec_is_held_to_kube_apiservers_rules_with_its_wording() {
        let spec = json!({"containers": [
            {"name": "Web_1", "image": "nginx"},
            {"name": "ok", "image": " ", "ports": [{"containerPort": 70000}, {"containerPort": 80, "protocol": "HTTP"}]},
            {"name": "ok", "image": "busybox"}],
            "restartPolicy": "Sometimes"});
        let got = problems(&spec, "spec.template.spec");
        let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.template.spec.containers[0].name",
                "spec.template.spec.containers[1].image",
                "spec.template.spec.containers[1].ports[0].containerPort",
                "spec.template.spec.containers[1].ports[1].protocol",
                "spec.template.spec.containers[2].name",
                "spec.template.spec.restartPolicy",
            ]
        );
        assert!(got[0].1.starts_with("Invalid value: \"Web_1\": a lowercase RFC 1123 label"), "{got:?}");
        assert_eq!(got[2].1, "Invalid value: 70000: must be between 1 and 65535, inclusive");
        assert_eq!(got[4].1, "Duplicate value: \"ok\"");
        assert_eq!(problems(&json!({}), "spec"), [("spec.containers".to_string(), "Required value".to_string())]);
    }

    #[test]
    fn probes_and_hooks_are_held_to_kubes_rules() {
        let spec = json!({"initContainers": [{"name": "i", "image": "b", "readinessProbe": {"exec": {"command": ["x"]}}}],
            "containers": [{"name": "c", "image": "b",
            "livenessProbe": {"httpGet": {"port": 70000}, "tcpSocket": {"port": "web"}, "successThreshold": 2},
            "readinessProbe": {"periodSeconds": -1, "successThreshold": 3},
            "startupProbe": {"tcpSocket": {"port": "No_Such"}},
            "lifecycle": {"preStop": {"exec": {"command": []}}}}]});
        let got = problems(&spec, "spec");
        let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.initContainers[0].readinessProbe",
                "spec.containers[0].livenessProbe.tcpSocket",
                "spec.containers[0].livenessProbe.httpGet.port",
                "spec.containers[0].livenessProbe.successThreshold",
                "spec.containers[0].readinessProbe",
                "spec.containers[0].readinessProbe.periodSeconds",
                "spec.containers[0].startupProbe.tcpSocket.port",
                "spec.containers[0].lifecycle.preStop.exec.command",
            ]
        );
        assert_eq!(got[3].1, "Invalid value: 2: must be 1");
        assert_eq!(got[4].1, "Required value: must specify a handler type");
    }
}
