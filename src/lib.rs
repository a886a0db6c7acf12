//! nodectl as a library: the parts the `nodectl` binary dispatches to, laid out as
//! DESIGN.md describes (one folder per part). Integration tests use it directly.

pub mod api;
pub mod cli;
pub mod image;
pub mod network;
pub mod node;
pub mod runtime;
pub mod server;
pub mod timefmt;
pub mod unwind;
