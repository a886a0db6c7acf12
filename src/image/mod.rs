//! The image store: OCI layouts, OCI archives and docker-archives in; blobs by digest,
//! layers unpacked once by ChainID; an overlayfs root filesystem per container out.

pub mod compression;
pub mod digest;
pub mod import;
pub mod pull;
pub mod reference;
pub mod rootfs;
pub mod store;
pub mod unpack;

pub use reference::Reference;
pub use store::{ImageRecord, Store, StoreError};
