//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and field selectors
//! (`=`, `==`, `!=` on the fields each kind allows), as list and watch filter by them.

use serde_json::Value;

#[derive(Debug, PartialEq, Eq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

#[derive(Debug, PartialEq, Eq)]
pub struct LabelSelector(Vec<(String, Op)>);

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 317 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn set_values(rest: &str, whole: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: {whole:?}: expected a parenthesised set"))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
    if values.is_empty() || !values.iter().all(|v| valid_value(v)) {
        return Err(format!("unable to parse requirement: {whole:?}: invalid set of values"));
    }
    Ok(values)
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        for part in split_top(s).into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some(key) = part.strip_prefix('!') {
                (key.trim().to_string(), Op::NotExists)
            } else if let Some((k, v)) = part.split_once("!=") {
                (k.trim().to_string(), Op::NotEq(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                (k.trim().to_string(), Op::NotIn(set_values(rest, part)?))
            } else if let Some((k, rest)) = part.split_once(" in ") {
                (k.trim().to_string(), Op::In(set_values(rest, part)?))
            } else {
                (part.to_string(), Op::Exists)
            };
            if !valid_key(&req.0) {
                return Err(format!("unable to parse requirement: {part:?}: invalid label key"));
            }
            if let Op::Eq(v) | Op::NotEq(v) = &req.1
                && !valid_value(v)
            {
                return Err(format!("unable to parse requirement: {part:?}: invalid label value"));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        self.0.iter().all(|(k, op)| {
            let v = labels.and_then(|l| l.get(k)).and_then(Value::as_str);
            match op {
                Op::Eq(want) => v == Some(want),
                Op::NotEq(want) => v != Some(want),
                Op::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                Op::NotIn(set) => !v.is_some_and(|v| set.iter().any(|s| s == v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
            }
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The fields the API server lets each kind be selected by, besides metadata.name and
/// metadata.namespace; one ending in '.' allows every field below it.
fn kind_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Event" => &["involvedObject.", "reason", "reportingComponent", "source", "type"],
        "Node" => &["spec.unschedulable"],
        "Secret" => &["type"],
        "Namespace" => &["status.phase"],
        "ReplicaSet" => &["status.replicas"],
        _ => &[],
    }
}

fn field_allowed(kind: &str, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || kind_fields(kind).iter().any(|f| if f.ends_with('.') { field.starts_with(f) } else { field == *f })
}

/// Every field (dotted path) that selectors may read of an object of `kind`: what a
/// projection of it for selecting must keep (see `raw::selectable`).
pub fn selectable_paths(kind: &str) -> Vec<&'static str> {
    let mut paths = vec!["metadata.name", "metadata.namespace", "metadata.labels"];
    paths.extend(kind_fields(kind).iter().map(|f| f.trim_end_matches('.')));
    paths
}

impl FieldSelector {
    pub fn parse(s: &str, kind: &str) -> Result<FieldSelector, String> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: {part:?}; can't understand it"));
            };
            let field = field.trim();
            if !field_allowed(kind, field) {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, equal, want)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let got = match obj.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (got == *want) == *equal
        })
    }
}

/// Both selectors of a request; empty ones match everything.
#[derive(Debug)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn parse(labels: Option<&str>, fields: Option<&str>, kind: &str) -> Result<Selectors, String> {
        Ok(Selectors {
            labels: LabelSelector::parse(labels.unwrap_or(""))?,
            fields: FieldSelector::parse(fields.unwrap_or(""), kind)?,
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.0.is_empty() && self.fields.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_match_as_kubernetes_does() {
        let o = json!({"metadata": {"labels": {"app": "web", "tier": "front", "example.com/role": "x"}}});
        for (sel, want) in [
            ("app=web", true),
            ("app==web,tier=front", true),
            ("app!=web", false),
            ("app in (web, api)", true),
            ("tier notin (front)", false),
            ("example.com/role", true),
            ("!missing", true),
            ("!app", false),
            ("missing notin (a)", true),
            ("", true),
        ] {
            assert_eq!(LabelSelector::parse(sel).unwrap().matches(&o), want, "{sel}");
        }
        for bad in ["app in web", "app=we b", "=x", "a in ()"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors_allow_known_fields_only() {
        let pod = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let s = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", "Pod").unwrap();
        assert!(s.matches(&pod));
        assert!(!FieldSelector::parse("metadata.name=q", "Pod").unwrap().matches(&pod));
        assert!(FieldSelector::parse("spec.nodeName=", "Pod").unwrap().matches(&json!({})));
        assert_eq!(FieldSelector::parse("spec.foo=1", "Pod").unwrap_err(), "field label not supported: spec.foo");
        let ev = json!({"involvedObject": {"kind": "Pod", "name": "p"}});
        assert!(FieldSelector::parse("involvedObject.kind=Pod,involvedObject.name=p", "Event").unwrap().matches(&ev));
    }
}
