//! Validation rules several kinds share: label selectors, pod templates, immutable fields.

use serde_json::Value;

use super::Problem;
use crate::model::podspec::problems as pod_spec_problems;

pub use crate::model::labels::selects_value as selects;

/// Labels as Go's `%#v` prints a map[string]string, as kube's messages show them.
fn go_map(labels: &Value) -> String {
    let pairs: Vec<String> = labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or_default()))
        .collect();
    format!("map[string]string{{{}}}", pairs.join(", "))
}

/// The problem of a selector that does not pick its template's labels.
pub fn unmatched_template(labels: &Value, path: &str) -> Problem {
    (
        format!("{path}.template.metadata.labels"),
        format!("Invalid value: {}: `selector` does not match template `labels`", go_map(labels)),
    )
}

/// A workload's selector and pod template (`kind` in lower case, for the message).
pub fn workload(spec: &Value, kind: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    let selector = &spec["selector"];
    let empty = selector["matchLabels"].as_object().is_none_or(|m| m.is_empty())
        && selector["matchExpressions"].as_array().is_none_or(Vec::is_empty);
    let labels = &spec["template"]["metadata"]["labels"];
    if selector.is_null() {
        out.push(("spec.selector".into(), "Required value".into()));
    } else if empty {
        out.push(("spec.selector".into(), format!("Invalid value: {selector}: empty selector is invalid for {kind}")));
    } else if !selects(selector, labels) {
        out.push(unmatched_template(labels, "spec"));
    }
    out.extend(pod_spec_problems(&spec["template"]["spec"], "spec.template.spec"));
    out
}

/// kube's ValidateLabelSelector, for the operators and their values: In and NotIn need
/// values, Exists and DoesNotExist take none, nothing else is an operator; a key is
/// required.
pub fn label_selector(selector: &Value, path: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, e) in selector["matchExpressions"].as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}.matchExpressions[{i}]");
        let values = e["values"].as_array().map_or(0, Vec::len);
        match e["operator"].as_str().unwrap_or_default() {
            "In" | "NotIn" if values == 0 => out.push((
                format!("{at}.values"),
                "Required value: must be specified when `operator` is 'In' or 'NotIn'".into(),
            )),
            "Exists" | "DoesNotExist" if values > 0 => out.push((
                format!("{at}.values"),
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'".into(),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                out.push((format!("{at}.operator"), format!("Invalid value: {other:?}: not a valid selector operator")))
            }
        }
        if e["key"].as_str().is_none_or(str::is_empty) {
            out.push((format!("{at}.key"), "Invalid value: \"\": name part must be non-empty".into()));
        }
    }
    out
}

/// A count that may not be negative.
pub fn not_negative(spec: &Value, field: &str, path: &str) -> Option<Problem> {
    spec[field]
        .as_i64()
        .filter(|n| *n < 0)
        .map(|n| (format!("{path}.{field}"), format!("Invalid value: {n}: must be greater than or equal to 0")))
}

/// `field` of the specs, which may not change once created.
pub fn immutable(old: Option<&Value>, spec: &Value, field: &str) -> Option<Problem> {
    let old = old?;
    (old["spec"][field] != spec[field])
        .then(|| (format!("spec.{field}"), format!("Invalid value: {}: field is immutable", spec[field])))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels = json!({"app": "web", "tier": "front"});
        assert!(selects(&json!({"matchLabels": {"app": "web"}}), &labels));
        assert!(!selects(&json!({"matchLabels": {"app": "db"}}), &labels));
        let exprs =
            |op: &str, values: Value| json!({"matchExpressions": [{"key": "tier", "operator": op, "values": values}]});
        assert!(selects(&exprs("In", json!(["front", "back"])), &labels));
        assert!(!selects(&exprs("NotIn", json!(["front"])), &labels));
        assert!(selects(&exprs("Exists", json!([])), &labels));
        assert!(!selects(&exprs("DoesNotExist", json!([])), &labels));
        assert!(!selects(&exprs("Sometimes", json!([])), &labels), "an unknown operator picks nothing");
    }

    #[test]
    fn a_workload_whose_selector_misses_its_template_is_refused_in_kubes_words() {
        let spec = json!({"selector": {"matchLabels": {"app": "a"}},
                          "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}});
        let problems = workload(&spec, "deployment");
        assert_eq!(problems[0].0, "spec.template.metadata.labels");
        assert!(problems[0].1.contains("map[string]string{\"app\":\"b\"}"), "{problems:?}");
    }
}
