//! The control plane: the Kubernetes API over HTTP (to come), its store, its controllers.

pub mod store;
