//! The typed matching rules the filters share: node selector terms, tolerations against
//! taints, and label selectors (the model's, shared with the controllers).

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};

pub use crate::model::labels::{Labels, selects};

/// One requirement of a node selector term against a value (a label's, or a field's).
fn requirement(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // Gt and Lt take exactly one integer value, compared with the label's.
        "Gt" | "Lt" => match (value.and_then(|v| number(v)), values.first().and_then(|v| number(v))) {
            (Some(have), Some(bound)) if values.len() == 1 => {
                if r.operator == "Gt" {
                    have > bound
                } else {
                    have < bound
                }
            }
            _ => false,
        },
        _ => false,
    }
}

/// A node selector term: all its label expressions and field expressions (only
/// `metadata.name` exists) hold. A term with neither matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node_name: &str, labels: &Labels) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let name = node_name.to_string();
    exprs.iter().all(|r| requirement(r, labels.get(&r.key)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement(r, Some(&name)))
}

/// Whether a toleration tolerates a taint (kube's Toleration.ToleratesTaint).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        // An empty key with Exists tolerates everything.
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn labels(v: Value) -> Labels {
        from(v)
    }

    #[test]
    fn node_terms_match_labels_numbers_and_the_nodes_name() {
        let l = labels(json!({"zone": "a", "cores": "8"}));
        let term = |v: Value| from::<NodeSelectorTerm>(v);
        assert!(term_matches(
            &term(json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]})),
            "n1",
            &l
        ));
        assert!(term_matches(
            &term(json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]})),
            "n1",
            &l
        ));
        assert!(!term_matches(
            &term(json!({"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["4"]}]})),
            "n1",
            &l
        ));
        assert!(term_matches(
            &term(json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]})),
            "n1",
            &l
        ));
        assert!(!term_matches(
            &term(json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]})),
            "n2",
            &l
        ));
        assert!(!term_matches(&term(json!({})), "n1", &l), "an empty term matches nothing");
    }

    #[test]
    fn tolerations_match_taints_by_key_value_and_effect() {
        let taint: Taint = from(json!({"key": "gpu", "value": "yes", "effect": "NoSchedule"}));
        let tol = |v: Value| tolerates(&from::<Toleration>(v), &taint);
        assert!(tol(json!({"key": "gpu", "value": "yes", "effect": "NoSchedule"})));
        assert!(tol(json!({"key": "gpu", "operator": "Exists"})));
        assert!(tol(json!({"operator": "Exists"})), "an empty key with Exists tolerates every taint");
        assert!(!tol(json!({"key": "gpu", "value": "no"})));
        assert!(!tol(json!({"key": "gpu", "operator": "Exists", "effect": "NoExecute"})));
    }
}
