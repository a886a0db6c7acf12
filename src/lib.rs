//! nodectl as a library: the parts the `nodectl` binary dispatches to, one folder per
//! part (docs/architecture.md). Integration tests use it directly.
//!
//! From the bottom up: `sys` (system calls and OS primitives), `model` (Kubernetes objects
//! as nodectl reads them), `image`, `runtime`, `network`, `node`, `server`, and `cli` on
//! top. A module imports only from the layers below its own.

pub mod cli;
pub mod image;
pub mod model;
pub mod network;
pub mod node;
pub mod runtime;
pub mod server;
pub mod sys;
