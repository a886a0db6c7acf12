//! Pulls images from registries that speak the OCI distribution API.
//!
//! (Interface fixed; implementation being written.)

use super::reference::Reference;
use super::store::{ImageRecord, Store};

#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// Plain HTTP is allowed for this registry (loopback test registries).
    pub insecure: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("pulling is not implemented yet")]
    Unimplemented,
}

pub fn pull(_store: &Store, _reference: &Reference, _opts: &PullOptions) -> Result<ImageRecord, PullError> {
    Err(PullError::Unimplemented)
}
