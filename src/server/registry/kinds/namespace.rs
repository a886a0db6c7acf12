//! Namespaces: made with the finalizer the namespace controller removes once it emptied
//! them, Terminating while it does, the three built-in ones never deleted, and
//! `spec.finalizers` changed only through `/finalize`.

use serde_json::{Value, json};

use super::super::deletion::NAMESPACE_FINALIZER;
use super::super::error::RegistryError;
use super::{Names, PLAIN, Strategy};

/// Namespaces the API server refuses to delete.
const PROTECTED: [&str; 3] = ["default", "kube-system", "kube-public"];

pub const NAMESPACE: Strategy = Strategy {
    names: Names::Label,
    status: true,
    on_create: |obj| {
        obj["spec"] = json!({"finalizers": [NAMESPACE_FINALIZER]});
        obj["status"] = json!({"phase": "Active"});
    },
    keep_allocated: keep_spec_finalizers,
    refuse_delete: |name| {
        PROTECTED.contains(&name).then(|| {
            RegistryError::forbidden(
                "namespaces",
                name,
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
            )
        })
    },
    on_mark: |obj| obj["status"]["phase"] = json!("Terminating"),
    ..PLAIN
};

/// `spec.finalizers` of a namespace change only through `/finalize`, as in the API server.
fn keep_spec_finalizers(new: &mut Value, old: &Value) {
    match old.pointer("/spec/finalizers") {
        Some(f) => new["spec"]["finalizers"] = f.clone(),
        None => {
            if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("finalizers");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_namespaces_cannot_be_deleted_and_others_can() {
        assert!((NAMESPACE.refuse_delete)("kube-system").is_some());
        assert!((NAMESPACE.refuse_delete)("default").is_some());
        assert!((NAMESPACE.refuse_delete)("dev").is_none());
    }

    #[test]
    fn an_update_keeps_the_stored_spec_finalizers() {
        let old = json!({"spec": {"finalizers": ["kubernetes"]}});
        let mut new = json!({"spec": {"finalizers": []}});
        (NAMESPACE.keep_allocated)(&mut new, &old);
        assert_eq!(new["spec"]["finalizers"], json!(["kubernetes"]));
        let mut new = json!({"spec": {"finalizers": ["x"]}});
        (NAMESPACE.keep_allocated)(&mut new, &json!({"spec": {}}));
        assert!(new["spec"].get("finalizers").is_none());
    }
}
