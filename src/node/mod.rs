//! The node part: pods on this machine. Each pod has an [`owner`]: `nodectl run` owns one
//! in the foreground (the command line's `foreground` module prints what happens), the
//! [`daemon`] owns many, the same way; this library returns events and typed errors and
//! prints nothing. Data flows one way: a
//! checked manifest (`crate::model::manifest`) → the pod's directory and record
//! ([`pod_state`]) → its monitor ([`monitor`]), which makes the sandbox (namespaces,
//! network, /etc files) → one OCI spec per container, prepared by the owner as
//! [`reconcile`] decides → the runtime, called by the monitor.

// The node turns manifests into containers: a bad one is an error, never a panic.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod agent;
pub mod apparmor;
pub mod config;
pub mod container_spec;
pub mod crilog;
pub mod daemon;
pub mod disk;
pub mod dns;
pub mod env;
pub mod fake;
pub mod image_gc;
pub mod images;
pub mod monitor;
pub mod namespaces;
pub mod output;
pub mod owner;
pub mod pod_state;
pub mod probe;
pub mod reconcile;
pub mod resolv;
pub mod sandbox;
pub mod seccomp;
pub mod seccomp_default;
pub mod sysctls;
pub mod volumes;

/// Why a pod could not be set up or run. Errors about the manifest name its field; errors
/// of the host keep the typed error of the part that failed, so a caller can tell a
/// missing image from a full disk from a vanished namespace. Each message carries its
/// cause (docs/architecture.md, "Errors").
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{field}.image: {source}")]
    Image { field: String, source: Box<images::ImageError> },
    #[error("{what}: {source}")]
    Store { what: String, source: crate::image::store::StoreError },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Runtime { what: String, source: crate::runtime::container::RuntimeError },
    #[error("{what}: {source}")]
    Spec { what: String, source: crate::runtime::spec::SpecError },
    #[error("{what}: {source}")]
    Cgroup { what: String, source: crate::runtime::cgroups::CgroupError },
    #[error("{what}: {source}")]
    Rootfs { what: String, source: crate::image::rootfs::RootfsError },
    #[error("{what}: {source}")]
    Network { what: String, source: crate::network::Error },
    /// What the pod's monitor reported, or that it is gone.
    #[error("{0}")]
    Monitor(String),
    /// Every part of a teardown that failed; the rest was still done.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Teardown(Vec<PlanError>),
}

impl PlanError {
    pub fn invalid(field: String, message: String) -> PlanError {
        PlanError::Invalid { field, message }
    }

    /// A reference to something the manifest does not carry (a ConfigMap, a key).
    pub fn missing(field: String, message: String) -> PlanError {
        PlanError::Invalid { field, message }
    }

    /// Wraps an io::Error (or a nix Errno) with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PlanError {
        let what = what.into();
        move |source| PlanError::Io { what, source }
    }

    pub fn errno(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> PlanError {
        let what = what.into();
        move |e| PlanError::Io { what, source: e.into() }
    }

    pub fn runtime(what: impl Into<String>) -> impl FnOnce(crate::runtime::container::RuntimeError) -> PlanError {
        let what = what.into();
        move |source| PlanError::Runtime { what, source }
    }

    pub fn rootfs(what: impl Into<String>) -> impl FnOnce(crate::image::rootfs::RootfsError) -> PlanError {
        let what = what.into();
        move |source| PlanError::Rootfs { what, source }
    }

    pub fn network(what: impl Into<String>) -> impl FnOnce(crate::network::Error) -> PlanError {
        let what = what.into();
        move |source| PlanError::Network { what, source }
    }
}
