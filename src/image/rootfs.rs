//! A container's root filesystem: an overlayfs mount of an image's layers.
