//! A Deployment's ReplicaSets as revisions: which one is the new one (its template equals
//! the Deployment's, the pod-template-hash label aside), the `pod-template-hash` that names
//! a new one, its revision annotations, and the ReplicaSet made for a template.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Annotations of the Deployment that are not copied to its ReplicaSets (kube's
/// skipCopyAnnotation).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// kube's SafeEncodeString alphabet: no vowels, no look-alikes, so a hash never spells a word.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv1a32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, b| (h ^ *b as u32).wrapping_mul(0x0100_0193))
}

/// The pod-template-hash of a template: FNV-32a (as kube's ComputeHash; over the template's
/// JSON here, where kube hashes Go's printing of it) with the collision count, its decimal
/// digits spelled in kube's safe alphabet.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(&without_hash(template)).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend(c.to_le_bytes());
    }
    fnv1a32(&bytes).to_string().bytes().map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char).collect()
}

fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    let meta = t.metadata.get_or_insert_with(ObjectMeta::default);
    if let Some(l) = meta.labels.as_mut() {
        l.remove(HASH_LABEL);
        if l.is_empty() {
            meta.labels = None;
        }
    }
    if meta == &ObjectMeta::default() {
        t.metadata = None;
    }
    t
}

/// kube's EqualIgnoreHash.
pub fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    serde_json::to_value(without_hash(a)).ok() == serde_json::to_value(without_hash(b)).ok()
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations().get(REVISION).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The annotations a ReplicaSet of `d` carries: the Deployment's own (those copied) and its
/// revision, desired and max replicas.
pub fn annotations(
    d: &Deployment,
    base: &BTreeMap<String, String>,
    revision: i64,
    max_surge: i32,
) -> BTreeMap<String, String> {
    let mut out = base.clone();
    for (k, v) in d.annotations() {
        if !NOT_COPIED.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    let replicas = super::plan::desired(d);
    out.insert(REVISION.into(), revision.to_string());
    out.insert(DESIRED_REPLICAS.into(), replicas.to_string());
    out.insert(MAX_REPLICAS.into(), (replicas + max_surge).to_string());
    out
}

/// The ReplicaSet for `d`'s template: named DEPLOYMENT-HASH, its selector and labels with
/// the hash added, controlled by `d`.
pub fn new_replica_set(d: &Deployment, hash: &str, replicas: i32, revision: i64, max_surge: i32) -> Option<ReplicaSet> {
    let spec = d.spec.as_ref()?;
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.into());
    let labels = meta.labels.clone();
    let mut selector = spec.selector.clone();
    selector.match_labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.into());
    Some(ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.namespace(),
            labels,
            annotations: Some(annotations(d, &BTreeMap::new(), revision, max_surge)),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: d.name_any(),
                uid: d.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(image: &str, hash: Option<&str>) -> PodTemplateSpec {
        let mut labels = json!({"app": "web"});
        if let Some(h) = hash {
            labels[HASH_LABEL] = json!(h);
        }
        serde_json::from_value(
            json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": image}]}}),
        )
        .unwrap()
    }

    #[test]
    fn templates_compare_and_hash_without_their_hash_label() {
        let t = template("busybox", None);
        assert!(same_template(&t, &template("busybox", Some("5d4b6f8c9"))));
        assert!(!same_template(&t, &template("nginx", None)));
        let h = template_hash(&t, None);
        assert_eq!(h, template_hash(&template("busybox", Some("x")), None));
        assert_ne!(h, template_hash(&t, Some(1)), "a collision count changes the hash");
        assert!(!h.is_empty() && h.bytes().all(|b| ALPHANUMS.contains(&b)), "{h}");
    }

    #[test]
    fn a_new_replica_set_carries_the_hash_the_revision_and_the_deployments_annotations() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "annotations": {
                "kubernetes.io/change-cause": "v2", "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}}, "template": template("busybox", None)}}))
        .unwrap();
        let rs = new_replica_set(&d, "abc", 1, 3, 1).unwrap();
        assert_eq!(rs.metadata.name.as_deref(), Some("web-abc"));
        let spec = rs.spec.as_ref().unwrap();
        assert_eq!(spec.selector.match_labels.as_ref().unwrap()[HASH_LABEL], "abc");
        assert_eq!(
            spec.template.as_ref().unwrap().metadata.as_ref().unwrap().labels.as_ref().unwrap()[HASH_LABEL],
            "abc"
        );
        let a = rs.metadata.annotations.as_ref().unwrap();
        assert_eq!((a[REVISION].as_str(), a[DESIRED_REPLICAS].as_str(), a[MAX_REPLICAS].as_str()), ("3", "4", "5"));
        assert_eq!(a["kubernetes.io/change-cause"], "v2");
        assert!(!a.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    }
}
