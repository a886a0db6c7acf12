//! The Kubernetes object model as nodectl reads it (DESIGN.md, decision 8): names, strict
//! decoding into k8s-openapi types, and Pod manifests for `nodectl run`.

pub mod manifest;
pub mod names;
pub mod quantity;
pub mod schema;
pub mod time;
