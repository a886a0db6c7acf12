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
    /// Pulled now, taking this long (None: it was in the store).
    pub pulled: Option<std::time::Duration>,
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

/// Why a container's image could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "image \"{image}\" is not in the store and imagePullPolicy is Never (put it there with `nodectl image import` or `nodectl image pull`)"
    )]
    NeverPulled { image: String },
    #[error("{image}: {source}")]
    Store { image: String, source: StoreError },
    #[error("{image:?}: {source}")]
    Reference { image: String, source: crate::image::reference::ReferenceError },
    #[error("image \"{image}\" is not in the store, and pulling it failed: {source}")]
    Pull { image: String, source: crate::image::pull::PullError },
    #[error("{image}: config: {source}")]
    ConfigBlob { image: String, source: StoreError },
    #[error("{image}: config {digest}: {source}")]
    Config { image: String, digest: String, source: serde_json::Error },
}

impl ImageError {
    /// The image it is about, as the manifest names it.
    pub fn image(&self) -> &str {
        match self {
            ImageError::NeverPulled { image }
            | ImageError::Store { image, .. }
            | ImageError::Reference { image, .. }
            | ImageError::Pull { image, .. }
            | ImageError::ConfigBlob { image, .. }
            | ImageError::Config { image, .. } => image,
        }
    }
}

/// What resolving an image has to tell as it goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Note {
    /// A pull starts (the kubelet's Pulling event).
    Pulling,
    Warning(String),
}

/// Finds (or pulls) `image` for the container at `field`. `tell` hears of pulls and warnings.
pub fn resolve(
    store: &Store,
    image: &str,
    policy: Option<&str>,
    field: &str,
    pull_opts: &PullOptions,
    tell: &mut dyn FnMut(Note),
) -> Result<Resolved, PlanError> {
    let fail = |source| PlanError::Image { field: field.to_string(), source: Box::new(source) };
    let policy = policy.unwrap_or_else(|| default_policy(image));
    // Resolved under the store's shared lock: image garbage collection, which holds it
    // exclusively while it decides and removes, then either saw this pod (the daemon lists
    // a pod before resolving its images) or already removed what it chose.
    let _guard = store.shared_lock().map_err(|source| fail(ImageError::Store { image: image.into(), source }))?;
    let local = match store.resolve(image) {
        Ok(r) => Some(r),
        Err(StoreError::NotFound(_)) => None,
        Err(source) => return Err(fail(ImageError::Store { image: image.into(), source })),
    };
    let mut pulled_in = None;
    let record = match (policy, local) {
        ("Never", Some(r)) | ("IfNotPresent", Some(r)) => r,
        ("Never", None) => {
            return Err(fail(ImageError::NeverPulled { image: image.into() }));
        }
        (_, local) => {
            let reference: Reference =
                image.parse().map_err(|source| fail(ImageError::Reference { image: image.into(), source }))?;
            tell(Note::Pulling);
            let started = std::time::Instant::now();
            let pulled = pull::pull(store, &reference, pull_opts);
            // The pull's event loop had threads; the runtime forks only when they are gone.
            crate::sys::process::wait_single_threaded();
            match pulled {
                Ok(r) => {
                    pulled_in = Some(started.elapsed());
                    r
                }
                // Always, with a copy at hand and the registry out of reach: a machine
                // without a network still runs what it has, and says so.
                Err(e) if let Some(warned) = local => {
                    tell(Note::Warning(format!(
                        "{field}.image: pulling {image} (imagePullPolicy {policy}) failed, using the copy in the store: {e}"
                    )));
                    warned
                }
                Err(source) => return Err(fail(ImageError::Pull { image: image.into(), source })),
            }
        }
    };
    let bytes = store
        .read_blob(&record.config)
        .map_err(|source| fail(ImageError::ConfigBlob { image: image.into(), source }))?;
    let parsed: ImageConfiguration = serde_json::from_slice(&bytes).map_err(|source| {
        fail(ImageError::Config { image: image.into(), digest: record.config.to_string(), source })
    })?;
    // Least recently used images go first when the disk fills (node::image_gc); a full
    // disk must not stop a pod here, so a failure is only logged.
    if let Err(e) = store.mark_used(record.id()) {
        tracing::debug!("{image}: recording its use: {e}");
    }
    Ok(Resolved { config: parsed.config().clone(), record, pulled: pulled_in })
}
