//! Label selectors (metav1.LabelSelector) against label sets: the one matcher that the
//! scheduler, the controllers and the server's validation share.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

pub type Labels = BTreeMap<String, String>;

/// Whether a LabelSelector picks `labels` (an empty selector picks everything; an unknown
/// operator picks nothing, as apimachinery refuses it).
pub fn selects(selector: &LabelSelector, labels: &Labels) -> bool {
    let by_labels = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    by_labels
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// [`selects`] on JSON values, as objects are held before they are typed; a selector or
/// label set that is not one picks nothing.
pub fn selects_value(selector: &Value, labels: &Value) -> bool {
    let Ok(selector) = serde_json::from_value::<LabelSelector>(selector.clone()) else { return false };
    let labels: Labels = match labels {
        Value::Null => Labels::new(),
        v => match serde_json::from_value(v.clone()) {
            Ok(l) => l,
            Err(_) => return false,
        },
    };
    selects(&selector, &labels)
}

/// Whether the selector has no requirement at all (and so would pick every object).
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

/// Whether `have` holds every label of `want` with the same value.
pub fn has_all(want: &Labels, have: &Labels) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_pick_by_labels_and_expressions_typed_or_not() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "canary", "operator": "DoesNotExist"}]});
        assert!(selects_value(&sel, &json!({"app": "web", "tier": "b"})));
        assert!(!selects_value(&sel, &json!({"app": "web", "tier": "c"})));
        assert!(!selects_value(&sel, &json!({"app": "web", "tier": "a", "canary": "1"})));
        assert!(!selects_value(&json!({"matchExpressions": [{"key": "x", "operator": "Near"}]}), &json!({"x": "1"})));
        assert!(selects_value(&json!({}), &Value::Null));
        assert!(is_empty(&LabelSelector::default()));
        let l = |v: Value| serde_json::from_value::<Labels>(v).unwrap();
        assert!(has_all(&l(json!({"a": "1"})), &l(json!({"a": "1", "b": "2"}))));
        assert!(!has_all(&l(json!({"a": "1", "c": "3"})), &l(json!({"a": "1"}))));
    }
}
