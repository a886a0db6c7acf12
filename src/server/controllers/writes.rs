//! The controllers' writes, through the same object functions the HTTP API calls (so that
//! validation, finalizers and deletion behave as for any client), each aimed at one
//! incarnation of an object: a write finds the object by name, and leaves it alone if its
//! uid is not the one the controller decided about (deleted and made again meanwhile).

use serde_json::Value;

use super::graph::Location;
use crate::server::registry::RegistryError;
use crate::server::registry::deletion::Propagation;
use crate::server::registry::objects::{self, DeleteOptions, FieldValidation, Part, Store};

#[derive(Debug, thiserror::Error)]
#[error("{action} {object}: {source}")]
pub struct WriteError {
    pub action: &'static str,
    pub object: String,
    #[source]
    pub source: RegistryError,
}

pub fn failed<'a>(action: &'static str, at: &'a Location) -> impl FnOnce(RegistryError) -> WriteError + 'a {
    move |source| WriteError { action, object: at.to_string(), source }
}

/// Conflicts in a row after which a write gives up (and is retried later by its queue).
const ATTEMPTS: usize = 10;

/// The object at `at` if it is still the incarnation `uid`.
pub async fn get(store: &Store, at: &Location, uid: &str) -> Result<Option<Value>, WriteError> {
    match objects::get(store.clone(), at.resource, at.namespace.clone(), at.name.clone()).await {
        Ok(obj) if obj.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid) => Ok(Some(obj)),
        Ok(_) => Ok(None),
        Err(RegistryError::NotFound { .. }) => Ok(None),
        Err(e) => Err(failed("reading", at)(e)),
    }
}

/// Changes the object `uid` at `at` with `change` (which says whether it changed
/// anything), written through `part`; a concurrent write makes it read and change again.
pub async fn modify(
    store: &Store,
    at: &Location,
    uid: &str,
    part: Part,
    change: impl Fn(&mut Value) -> bool,
) -> Result<(), WriteError> {
    for _ in 0..ATTEMPTS {
        let Some(mut obj) = get(store, at, uid).await? else { return Ok(()) };
        if !change(&mut obj) {
            return Ok(());
        }
        // The read's resourceVersion stays in the body: the write is refused if anyone wrote since.
        let body = serde_json::to_vec(&obj).expect("JSON values serialise");
        match objects::update(
            store.clone(),
            at.resource,
            at.namespace.clone(),
            at.name.clone(),
            part,
            &body,
            (FieldValidation::Lenient, None, false),
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(RegistryError::Conflict { .. }) => continue,
            Err(RegistryError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(failed("updating", at)(e)),
        }
    }
    Err(failed("updating", at)(RegistryError::internal(format!("still conflicting after {ATTEMPTS} attempts"))))
}

/// Removes a finalizer from metadata.finalizers; the object goes if it was the last.
pub async fn remove_finalizer(store: &Store, at: &Location, uid: &str, finalizer: &str) -> Result<(), WriteError> {
    modify(store, at, uid, Part::Main, |obj| {
        let Some(list) = obj.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) else { return false };
        let before = list.len();
        list.retain(|f| f.as_str() != Some(finalizer));
        list.len() != before
    })
    .await
}

/// Deletes the object `uid` at `at`, as a client's DELETE with this propagation policy.
pub async fn delete(store: &Store, at: &Location, uid: &str, propagation: Propagation) -> Result<(), WriteError> {
    let opts = DeleteOptions {
        precondition_uid: Some(uid.to_string()),
        propagation: Some(propagation),
        ..DeleteOptions::default()
    };
    match objects::delete(store.clone(), at.resource, at.namespace.clone(), at.name.clone(), opts, None).await {
        Ok(_) => Ok(()),
        // Gone already, or another incarnation now: nothing of ours to delete.
        Err(RegistryError::NotFound { .. } | RegistryError::Conflict { .. }) => Ok(()),
        Err(e) => Err(failed("deleting", at)(e)),
    }
}
