//! Object names as the Kubernetes API server checks them, with its wording, so that a
//! manifest refused here is refused with the message users know from kubectl.

/// RFC 1123 DNS subdomain (most names) or label (namespaces), as the API server checks.
pub fn name_problem(name: &str, label: bool) -> Option<String> {
    let max = if label { 63 } else { 253 };
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    let ok = name.len() <= max && if label { part_ok(name) } else { name.split('.').all(part_ok) };
    (!ok).then(|| {
        if label {
            format!("Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character")
        } else {
            format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")
        }
    })
}

/// Kubernetes' ValidatePathSegmentName, the rule for the names of RBAC objects and
/// PersistentVolumes (`system:controller:x` is one): what is wrong with `name`, in the API
/// server's words, or None.
pub fn path_segment_problem(name: &str) -> Option<String> {
    if name == "." || name == ".." {
        return Some(format!("Invalid value: \"{name}\": may not be '{name}'"));
    }
    ["/", "%"]
        .iter()
        .find(|bad| name.contains(*bad))
        .map(|bad| format!("Invalid value: \"{name}\": may not contain '{bad}'"))
}

/// Kubernetes' IsConfigMapKey (ConfigMap and Secret keys): what is wrong with `key`, in the
/// API server's words, or None.
pub fn config_key_problem(key: &str) -> Option<String> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && key != "."
        && key != ".."
        && !key.starts_with("..");
    (!ok).then(|| {
        format!(
            "Invalid value: \"{key}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
        )
    })
}

/// Kubernetes' IsEnvVarName: what is wrong with `name`, in the API server's words, or None.
pub fn env_name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    (!ok).then(|| {
        format!(
            "Invalid value: \"{name}\": a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"
        )
    })
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn config_keys_and_env_names_follow_the_api_servers_rules() {
        for good in ["a", "key.name", "KEY_NAME", "key-name", ".hidden"] {
            assert_eq!(config_key_problem(good), None, "{good}");
        }
        for bad in ["", "a/b", "..", "..data", "a b", "é"] {
            assert!(config_key_problem(bad).is_some(), "{bad}");
        }
        for good in ["A", "my.env-name", "_x", "MyEnvName1"] {
            assert_eq!(env_name_problem(good), None, "{good}");
        }
        for bad in ["", "1A", "A=B", "A B"] {
            assert!(env_name_problem(bad).unwrap().contains("valid environment variable name"), "{bad}");
        }
    }
}
