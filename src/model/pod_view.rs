//! Partial pods: types that decode only what their reader needs of a Pod and are served by
//! kube-rs as Pods (same kind, group, version and path), so a watcher or an `Api` can use
//! them in place of k8s-openapi's `Pod`. That type holds every optional field inline (2 KiB
//! for the pod and 2 KiB more per container before any is set) and decodes everything; a
//! reader of a few fields skips the rest of the JSON without building it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

/// Implements `kube::Resource` for `$view` as a Pod; `$view` has a `metadata: ObjectMeta`.
macro_rules! pod_view {
    ($view:ty) => {
        impl kube::Resource for $view {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Pod as k8s_openapi::Resource>::KIND.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Pod as k8s_openapi::Resource>::GROUP.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Pod as k8s_openapi::Resource>::VERSION.into()
            }
            fn api_version(_: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Pod as k8s_openapi::Resource>::API_VERSION.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT.into()
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

pub(crate) use pod_view;

/// Decodes an object's metadata but for its managed fields, which a cache drops anyway
/// (`#[serde(deserialize_with)]` on a view's `metadata`): they are most of a pod's
/// metadata, a tree of JSON objects per writer.
pub fn meta_without_managed_fields<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta {
        annotations: Option<BTreeMap<String, String>>,
        creation_timestamp: Option<Time>,
        deletion_grace_period_seconds: Option<i64>,
        deletion_timestamp: Option<Time>,
        finalizers: Option<Vec<String>>,
        generate_name: Option<String>,
        generation: Option<i64>,
        labels: Option<BTreeMap<String, String>>,
        name: Option<String>,
        namespace: Option<String>,
        owner_references: Option<Vec<OwnerReference>>,
        resource_version: Option<String>,
        self_link: Option<String>,
        uid: Option<String>,
    }
    let m = <Meta as serde::Deserialize>::deserialize(d)?;
    Ok(ObjectMeta {
        annotations: m.annotations,
        creation_timestamp: m.creation_timestamp,
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        deletion_timestamp: m.deletion_timestamp,
        finalizers: m.finalizers,
        generate_name: m.generate_name,
        generation: m.generation,
        labels: m.labels,
        managed_fields: None,
        name: m.name,
        namespace: m.namespace,
        owner_references: m.owner_references,
        resource_version: m.resource_version,
        self_link: m.self_link,
        uid: m.uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_decoded_whole_but_for_managed_fields() {
        let json = serde_json::json!({
            "name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7", "generation": 2,
            "generateName": "p-", "labels": {"a": "b"}, "annotations": {"c": "d"}, "finalizers": ["f"],
            "creationTimestamp": "2026-12-06T09:00:00Z", "deletionTimestamp": "2026-12-06T10:00:00Z",
            "deletionGracePeriodSeconds": 30, "selfLink": "/x",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "r", "controller": true}],
            "managedFields": [{"manager": "m", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
        });
        let whole: ObjectMeta = serde_json::from_value(json.clone()).unwrap();
        let trimmed = meta_without_managed_fields(json).unwrap();
        assert!(whole.managed_fields.is_some());
        assert_eq!(trimmed, ObjectMeta { managed_fields: None, ..whole });
    }
}
