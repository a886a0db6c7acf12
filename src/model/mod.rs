//! The Kubernetes object model as nodectl reads it (docs/architecture.md, decision 8): names, strict
//! decoding into k8s-openapi types, and Pod manifests for `nodectl run`.

// Manifests come from users and requests: a bad one is an error, never a panic.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod labels;
pub mod manifest;
pub mod names;
pub mod pod_view;
pub mod podspec;
pub mod quantity;
pub mod schema;
pub mod time;
