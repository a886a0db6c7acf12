//! Ownership by controllers, as kube's ControllerRefManager: an owner claims the objects
//! its selector picks: its own (controller reference with its uid) while they match, matching
//! orphans by adopting them, and it releases its own that no longer match. Adopting and
//! releasing are merge patches guarded by the object's resourceVersion, so that a write in
//! between makes them fail (and the next event brings the object back) rather than
//! overwrite. Also the API-error helpers the client controllers share.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::pods;
use crate::model::labels;

/// A call to the API that failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {what}: {source}")]
pub struct ApiCallError {
    pub action: &'static str,
    pub what: String,
    #[source]
    pub source: kube::Error,
}

pub fn failed(action: &'static str, what: impl Into<String>) -> impl FnOnce(kube::Error) -> ApiCallError {
    let what = what.into();
    move |source| ApiCallError { action, what, source }
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(r) if r.code == 404)
}

/// A create refused because its namespace is being deleted: nothing to retry.
pub fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(r) if r.code == 403 && r.message.contains("because it is being terminated"))
}

/// A write refused because the object changed or went since it was read: the next event
/// brings it back.
pub fn is_stale(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(r) if r.code == 404 || r.code == 409 || r.code == 422)
}

/// The API's message, else the client's error.
pub fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(r) => r.message.clone(),
        other => other.to_string(),
    }
}

/// `namespace/name` of an object, for messages and keys.
pub fn key_of<K: Resource>(o: &K) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

/// The reference that makes `owner` (of `api_version` and `kind`) the controller of an object.
pub fn controller_ref<O: Resource>(owner: &O, api_version: &str, kind: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The selector, unless it is empty: an empty one would claim every object in the namespace
/// (validation refuses it; a stored one must not do harm either).
pub fn usable(selector: Option<&LabelSelector>) -> Option<&LabelSelector> {
    selector.filter(|s| !labels::is_empty(s))
}

/// The owner claiming: `owner` with its controller reference `me`, its selector, and
/// whether it may still adopt (the fresh read kube's canAdopt makes, done at most once).
pub struct Claim<'a, O> {
    pub client: &'a kube::Client,
    pub owner: &'a O,
    pub me: OwnerReference,
    pub selector: Option<&'a LabelSelector>,
    fresh: Option<bool>,
}

impl<'a, O> Claim<'a, O>
where
    O: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    pub fn new(
        client: &'a kube::Client,
        owner: &'a O,
        me: OwnerReference,
        selector: Option<&'a LabelSelector>,
    ) -> Self {
        Claim { client, owner, me, selector: usable(selector), fresh: None }
    }

    /// The candidates (all in the owner's namespace) that are the owner's after claiming.
    pub async fn claim<K>(&mut self, candidates: &[&K]) -> Result<Vec<K>, ApiCallError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    {
        let Some(sel) = self.selector else { return Ok(Vec::new()) };
        let deleting = self.owner.meta().deletion_timestamp.is_some();
        let mut owned = Vec::new();
        for obj in candidates {
            let matches = labels::selects(sel, &obj.meta().labels.clone().unwrap_or_default());
            match pods::controller_of(obj.meta()) {
                Some(o) if o.uid != self.me.uid => {}
                Some(_) if matches || deleting => owned.push((*obj).clone()),
                Some(_) => self.release(*obj).await?,
                None if !matches || deleting || obj.meta().deletion_timestamp.is_some() => {}
                None => {
                    if self.may_adopt().await?
                        && let Some(o) = self.adopt(*obj).await?
                    {
                        owned.push(o);
                    }
                }
            }
        }
        Ok(owned)
    }

    /// As kube's canAdopt: a fresh read, so that an owner deleted or replaced meanwhile
    /// adopts nothing.
    async fn may_adopt(&mut self) -> Result<bool, ApiCallError> {
        if let Some(v) = self.fresh {
            return Ok(v);
        }
        let api: Api<O> = Api::namespaced(self.client.clone(), &self.owner.namespace().unwrap_or_default());
        let v = match api.get_opt(&self.owner.name_any()).await {
            Ok(Some(o)) => o.uid() == self.owner.uid() && o.meta().deletion_timestamp.is_none(),
            Ok(None) => false,
            Err(e) => return Err(failed("reading", key_of(self.owner))(e)),
        };
        self.fresh = Some(v);
        Ok(v)
    }

    async fn adopt<K>(&self, obj: &K) -> Result<Option<K>, ApiCallError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    {
        let mut refs = obj.meta().owner_references.clone().unwrap_or_default();
        refs.push(self.me.clone());
        patch_owners(self.client, obj, &refs, "adopting").await
    }

    async fn release<K>(&self, obj: &K) -> Result<(), ApiCallError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    {
        if obj.meta().deletion_timestamp.is_some() {
            return Ok(());
        }
        let refs: Vec<OwnerReference> =
            obj.meta().owner_references.iter().flatten().filter(|r| r.uid != self.me.uid).cloned().collect();
        patch_owners(self.client, obj, &refs, "releasing").await.map(|_| ())
    }
}

/// Sets the object's owner references, only on the object as it was read: a
/// resourceVersion in a patch is a precondition (409 if anyone wrote since).
async fn patch_owners<K>(
    client: &kube::Client,
    obj: &K,
    refs: &[OwnerReference],
    action: &'static str,
) -> Result<Option<K>, ApiCallError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let refs = if refs.is_empty() { Value::Null } else { json!(refs) };
    let patch = json!({"metadata": {"resourceVersion": obj.meta().resource_version, "ownerReferences": refs}});
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    match api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if is_stale(&e) => Ok(None),
        Err(e) => Err(failed(action, key_of(obj))(e)),
    }
}
