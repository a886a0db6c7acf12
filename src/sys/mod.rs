//! The bottom layer: system calls that nix and std do not wrap, and the small OS
//! primitives that several parts share (file locks, /proc readers, mountinfo, reaping).
//! Each item is a thin, safe function over the kernel; nothing here knows about images,
//! containers or pods, and nothing here imports from the rest of the crate.

pub mod bpf;
pub mod exe;
pub mod fdpass;
pub mod lock;
pub mod mount;
pub mod mountinfo;
pub mod process;
pub mod resolve;
pub mod tty;
pub mod unwind;
pub mod wake;

use std::io;

/// A raw syscall's return value as a Result: negative means errno is set.
fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}
