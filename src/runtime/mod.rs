//! The container runtime (docs/architecture.md): a bundle's config.json becomes a
//! process in its own namespaces, root filesystem and cgroup.
//!
//! Data flows one way: `spec` checks the bundle into a `Config`; `container` (the
//! runtime's side) forks, and `init` (the container's side) uses `namespaces`, `rootfs`,
//! `process` and `seccomp` to become the container; `state` records it on disk. System calls come from
//! the crate's bottom layer, `crate::sys`.

pub mod apparmor;
pub mod cgroups;
pub mod container;
mod hooks;
mod init;
mod mount_sources;
pub mod namespaces;
mod process;
pub mod rootfs;
mod seccomp;
mod seccomp_agent;
mod seccomp_enosys;
pub mod spec;
pub mod state;
mod sync;
mod tty;

pub use container::{CreateOptions, ExecOptions, Runtime, RuntimeError};
pub use init::set_before_park;
pub use tty::receive_master;
