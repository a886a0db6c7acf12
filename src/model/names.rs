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
