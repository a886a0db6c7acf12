//! What a delete request does before the store forgets an object, as the API server's
//! generic registry and its namespace registry decide it: the finalizers that ask the
//! garbage collector for a propagation policy, a namespace's termination, and the
//! admission rule that keeps new objects out of a namespace being terminated.
//!
//! The work itself (deleting or orphaning dependents, emptying a namespace) is done by the
//! controllers in `server::controllers`, which remove these finalizers when it is done.

use serde_json::{Value, json};

use super::error::RegistryError;
use super::resources::Resource;

/// The garbage collector deletes an object's dependents first (Foreground).
pub const FOREGROUND: &str = "foregroundDeletion";
/// The garbage collector removes the object's owner references from its dependents first.
pub const ORPHAN: &str = "orphan";
/// The namespace controller empties the namespace first (in `spec.finalizers`).
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// DeleteOptions.propagationPolicy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Propagation {
    /// From DeleteOptions as JSON: `propagationPolicy`, or the older `orphanDependents`.
    /// Both given and disagreeing is refused, as the API server refuses it.
    pub fn from_options(v: &Value) -> Result<Option<Propagation>, RegistryError> {
        let policy = match v.get("propagationPolicy").and_then(Value::as_str) {
            None | Some("") => None,
            Some("Orphan") => Some(Propagation::Orphan),
            Some("Background") => Some(Propagation::Background),
            Some("Foreground") => Some(Propagation::Foreground),
            Some(other) => {
                return Err(RegistryError::invalid(
                    "DeleteOptions.meta.k8s.io",
                    "",
                    vec![(
                        "propagationPolicy".into(),
                        format!(
                            "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                        ),
                    )],
                ));
            }
        };
        match (v.get("orphanDependents").and_then(Value::as_bool), policy) {
            (Some(_), Some(_)) => Err(RegistryError::invalid(
                "DeleteOptions.meta.k8s.io",
                "",
                vec![(
                    "propagationPolicy".into(),
                    "Invalid value: \"null\": orphanDependents and deletionPropagation cannot be both set".into(),
                )],
            )),
            (Some(true), None) => Ok(Some(Propagation::Orphan)),
            (Some(false), None) => Ok(Some(Propagation::Background)),
            (None, p) => Ok(p),
        }
    }
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

pub fn has_finalizer(obj: &Value, name: &str) -> bool {
    finalizers(obj).iter().any(|f| f == name)
}

/// Sets the garbage-collection finalizers a policy asks for (none without one: what the
/// object has stays). Answers whether anything changed.
pub fn apply_policy(obj: &mut Value, policy: Option<Propagation>) -> bool {
    let Some(policy) = policy else { return false };
    let before = finalizers(obj);
    let mut after: Vec<String> = before.iter().filter(|f| *f != FOREGROUND && *f != ORPHAN).cloned().collect();
    match policy {
        Propagation::Foreground => after.push(FOREGROUND.into()),
        Propagation::Orphan => after.push(ORPHAN.into()),
        Propagation::Background => {}
    }
    if after == before {
        return false;
    }
    if after.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("finalizers");
        }
    } else {
        obj["metadata"]["finalizers"] = json!(after);
    }
    true
}

/// Whether finalizers still hold an object marked for deletion: its own, or for a
/// namespace those in `spec.finalizers` too.
pub fn held(obj: &Value) -> bool {
    let spec = obj["kind"] == "Namespace"
        && obj.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    spec || !finalizers(obj).is_empty()
}

/// `/finalize`: the stored namespace with the body's `spec.finalizers`.
pub fn finalized(old: &Value, body: &Value) -> Value {
    let mut o = old.clone();
    o["spec"]["finalizers"] = body.pointer("/spec/finalizers").cloned().unwrap_or_else(|| json!([]));
    o
}

/// The NamespaceLifecycle admission rule: nothing new is made in a namespace that is
/// being terminated (its controller could never finish).
pub fn admit_create(namespace: &Value, r: &Resource, name: &str) -> Result<(), RegistryError> {
    if !namespace.pointer("/metadata/deletionTimestamp").is_some_and(Value::is_string) {
        return Ok(());
    }
    let ns = namespace.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    Err(RegistryError::NamespaceTerminating { resource: r.plural.into(), name: name.into(), namespace: ns.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_set_their_finalizers_and_keep_others() {
        let mut o = json!({"metadata": {"finalizers": ["example.com/x", "orphan"]}});
        assert!(apply_policy(&mut o, Some(Propagation::Foreground)));
        assert_eq!(o["metadata"]["finalizers"], json!(["example.com/x", "foregroundDeletion"]));
        assert!(!apply_policy(&mut o, Some(Propagation::Foreground)));
        assert!(!apply_policy(&mut o, None));
        assert!(apply_policy(&mut o, Some(Propagation::Background)));
        assert_eq!(o["metadata"]["finalizers"], json!(["example.com/x"]));
        let mut bare = json!({"metadata": {"finalizers": ["orphan"]}});
        assert!(apply_policy(&mut bare, Some(Propagation::Background)));
        assert!(bare["metadata"].get("finalizers").is_none());
    }

    #[test]
    fn options_are_read_as_the_api_server_reads_them() {
        assert_eq!(
            Propagation::from_options(&json!({"propagationPolicy": "Orphan"})).unwrap(),
            Some(Propagation::Orphan)
        );
        assert_eq!(Propagation::from_options(&json!({"orphanDependents": true})).unwrap(), Some(Propagation::Orphan));
        assert_eq!(Propagation::from_options(&json!({})).unwrap(), None);
        assert!(Propagation::from_options(&json!({"propagationPolicy": "Sideways"})).is_err());
        assert!(Propagation::from_options(&json!({"propagationPolicy": "Orphan", "orphanDependents": false})).is_err());
    }

    #[test]
    fn a_namespace_is_held_by_its_spec_finalizers() {
        assert!(held(&json!({"kind": "Namespace", "metadata": {}, "spec": {"finalizers": ["kubernetes"]}})));
        assert!(!held(&json!({"kind": "Namespace", "metadata": {}, "spec": {"finalizers": []}})));
        assert!(!held(&json!({"kind": "ConfigMap", "metadata": {}, "spec": {"finalizers": ["kubernetes"]}})));
    }
}
