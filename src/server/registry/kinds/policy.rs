//! PodDisruptionBudget (policy/v1): its status is the disruption controller's, written
//! through `/status` (and by evictions); its spec is checked as kube's
//! ValidatePodDisruptionBudgetSpec checks it.

use serde_json::Value;

use super::rules::label_selector;
use super::{PLAIN, Problem, Strategy};

pub const POD_DISRUPTION_BUDGET: Strategy = Strategy { status: true, validate: |obj, _| spec(&obj["spec"]), ..PLAIN };

/// The problems of a budget's spec.
fn spec(spec: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    let (min, max) = (&spec["minAvailable"], &spec["maxUnavailable"]);
    if !min.is_null() && !max.is_null() {
        out.push(("spec".into(), format!("Invalid value: {spec}: minAvailable and maxUnavailable cannot be both set")));
    }
    for (field, v) in [("minAvailable", min), ("maxUnavailable", max)] {
        out.extend(int_or_percent(v, &format!("spec.{field}")));
    }
    if !spec["selector"].is_null() {
        out.extend(label_selector(&spec["selector"], "spec.selector"));
    }
    match spec["unhealthyPodEvictionPolicy"].as_str() {
        None | Some("IfHealthyBudget" | "AlwaysAllow") => {}
        Some(other) => out.push((
            "spec.unhealthyPodEvictionPolicy".into(),
            format!("Unsupported value: {other:?}: supported values: \"AlwaysAllow\", \"IfHealthyBudget\""),
        )),
    }
    out
}

/// kube's ValidatePositiveIntOrPercent and IsNotMoreThan100Percent.
fn int_or_percent(v: &Value, path: &str) -> Vec<Problem> {
    match v {
        Value::Null => Vec::new(),
        Value::Number(n) if n.as_i64().is_some_and(|n| n < 0) => {
            vec![(path.into(), format!("Invalid value: {n}: must be greater than or equal to 0"))]
        }
        Value::Number(_) => Vec::new(),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            None => vec![(
                path.into(),
                format!(
                    "Invalid value: {s:?}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"
                ),
            )],
            Some(p) if p < 0 => {
                vec![(path.into(), format!("Invalid value: {s:?}: must be greater than or equal to 0"))]
            }
            Some(p) if p > 100 => vec![(path.into(), format!("Invalid value: {s:?}: must not be greater than 100%"))],
            Some(_) => Vec::new(),
        },
        other => vec![(path.into(), format!("Invalid value: {other}: must be an integer or percentage (e.g '5%')"))],
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn msgs(v: Value) -> Vec<String> {
        spec(&v).into_iter().map(|(p, m)| format!("{p}: {m}")).collect()
    }

    #[test]
    fn budgets_are_checked_as_kube_checks_them() {
        assert!(msgs(json!({"minAvailable": "50%", "selector": {"matchLabels": {"app": "a"}}})).is_empty());
        assert!(msgs(json!({"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow"})).is_empty());
        let both = msgs(json!({"minAvailable": 1, "maxUnavailable": 1}));
        assert_eq!(both.len(), 1);
        assert!(both[0].ends_with("minAvailable and maxUnavailable cannot be both set"), "{both:?}");
        assert_eq!(
            msgs(json!({"minAvailable": "150%", "maxUnavailable": -1}))[1..],
            [
                "spec.minAvailable: Invalid value: \"150%\": must not be greater than 100%",
                "spec.maxUnavailable: Invalid value: -1: must be greater than or equal to 0"
            ]
        );
        assert!(
            msgs(json!({"minAvailable": "half"}))[0]
                .starts_with("spec.minAvailable: Invalid value: \"half\": a valid percent string")
        );
        assert_eq!(
            msgs(json!({"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "Never"})),
            [
                "spec.unhealthyPodEvictionPolicy: Unsupported value: \"Never\": supported values: \"AlwaysAllow\", \"IfHealthyBudget\""
            ]
        );
        assert_eq!(
            msgs(json!({"maxUnavailable": 1, "selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}})),
            [
                "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
            ]
        );
    }
}
