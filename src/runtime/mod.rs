//! The container runtime: namespaces, mounts, processes and cgroups (DESIGN.md, the
//! runtime part). Built in steps; today: cgroups.

pub mod cgroups;
