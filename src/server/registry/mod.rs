//! The registry: what the API does to objects, below HTTP. Create, get, list, update,
//! patch and delete with the rules kube-apiserver applies (per-kind defaults and
//! validation, selectors, graceful deletion, finalizers, admission of namespaces), over
//! the store. The HTTP layer ([`crate::server::api`]) parses requests, authorizes them and
//! turns a [`RegistryError`] into a Status answer; the controllers call the registry
//! directly and match on its error variants.

// Bodies and patches come from clients: a bad one is an error, never a panic.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod binding;
pub mod cluster_config;
pub mod clusterip;
pub mod convert;
pub mod custom;
pub mod deletion;
pub mod error;
pub mod event_ttl;
pub mod eviction;
pub mod kinds;
pub mod kubernetes_service;
pub mod managed;
pub mod nodeport;
pub mod objects;
pub mod patch;
pub mod raw;
pub mod records;
pub mod resources;
pub mod selectors;
pub mod service_account;

pub use error::RegistryError;
