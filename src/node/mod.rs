//! The node part: pods on this machine. `nodectl run` drives one pod in the foreground
//! ([`pod`]); the daemon (a later part) will keep many. Data flows one way: a checked
//! manifest (`crate::model::manifest`) → a sandbox (namespaces, network, /etc files,
//! volumes) → one OCI spec per container → the runtime.

pub mod config;
pub mod container_spec;
pub mod env;
pub mod images;
pub mod namespaces;
pub mod output;
pub mod pod;
pub mod sandbox;
pub mod volumes;

/// Why a pod could not be set up or run. Errors about the manifest name its field.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    Image(String),
    /// Something on the host failed: a mount, a namespace, a file, the runtime.
    #[error("{0}")]
    Host(String),
}

impl PlanError {
    pub fn invalid(field: String, message: String) -> PlanError {
        PlanError::Invalid { field, message }
    }

    /// A reference to something the manifest does not carry (a ConfigMap, a key).
    pub fn missing(field: String, message: String) -> PlanError {
        PlanError::Invalid { field, message }
    }
}
