//! The images a pod's containers name, found in the store or pulled as imagePullPolicy
//! allows, and their configurations (entrypoint, cmd, env, user, working directory).

use oci_spec::image::{Config as ImageConfig, ImageConfiguration};

use super::PlanError;
use crate::image::pull::{self, PullOptions};
use crate::image::reference::Reference;
use crate::image::store::{ImageRecord, Store, StoreError};

pub struct Resolved {
    pub record: ImageRecord,
    pub config: Option<ImageConfig>,
}

/// The kubelet's default policy: Always for `:latest` or no tag, IfNotPresent otherwise.
fn default_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else {
        match last.split_once(':') {
            Some((_, "latest")) | None => "Always",
            Some(_) => "IfNotPresent",
        }
    }
}

/// Finds (or pulls) `image` for the container at `field`. `warn` gets messages to print.
pub fn resolve(
    store: &Store,
    image: &str,
    policy: Option<&str>,
    field: &str,
    pull_opts: &PullOptions,
    warn: &mut dyn FnMut(String),
) -> Result<Resolved, PlanError> {
    let policy = policy.unwrap_or_else(|| default_policy(image));
    let local = match store.resolve(image) {
        Ok(r) => Some(r),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(PlanError::Image(format!("{field}.image: {image}: {e}"))),
    };
    let record = match (policy, local) {
        ("Never", Some(r)) | ("IfNotPresent", Some(r)) => r,
        ("Never", None) => {
            return Err(PlanError::Image(format!(
                "{field}.image: image \"{image}\" is not in the store and imagePullPolicy is Never (put it there with `nodectl image import` or `nodectl image pull`)"
            )));
        }
        (_, local) => {
            let reference: Reference =
                image.parse().map_err(|e| PlanError::Image(format!("{field}.image: {image:?}: {e}")))?;
            let pulled = pull::pull(store, &reference, pull_opts);
            // The pull's event loop had threads; the runtime forks only when they are gone.
            crate::sys::process::wait_single_threaded();
            match pulled {
                Ok(r) => r,
                // Always, with a copy at hand and the registry out of reach: a machine
                // without a network still runs what it has, and says so.
                Err(e) if local.is_some() => {
                    warn(format!(
                        "{field}.image: pulling {image} (imagePullPolicy {policy}) failed, using the copy in the store: {e}"
                    ));
                    local.expect("checked")
                }
                Err(e) => {
                    return Err(PlanError::Image(format!(
                        "{field}.image: image \"{image}\" is not in the store, and pulling it failed: {e}"
                    )));
                }
            }
        }
    };
    let bytes = store
        .read_blob(&record.config)
        .map_err(|e| PlanError::Image(format!("{field}.image: {image}: config: {e}")))?;
    let parsed: ImageConfiguration = serde_json::from_slice(&bytes)
        .map_err(|e| PlanError::Image(format!("{field}.image: {image}: config {}: {e}", record.config)))?;
    Ok(Resolved { config: parsed.config().clone(), record })
}
