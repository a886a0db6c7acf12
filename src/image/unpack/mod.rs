//! Unpacks one layer's tar stream into a directory, confined to it.
//!
//! (Interface fixed; implementation being written.)

use std::io::Read;
use std::path::Path;

/// How `.wh.` entries are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whiteouts {
    /// Each layer in its own directory, stacked by overlayfs: `.wh.NAME` becomes a 0/0
    /// character device NAME, `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
    Overlay,
    /// Layers applied one over another into the same directory: `.wh.NAME` removes NAME,
    /// `.wh..wh..opq` removes what the directory held before this layer.
    Apply,
}

#[derive(Clone, Debug)]
pub struct UnpackOptions {
    pub whiteouts: Whiteouts,
}

#[derive(Debug, Default, Clone)]
pub struct UnpackStats {
    pub entries: u64,
    /// Sum of regular file sizes written.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("unpack is not implemented yet")]
    Unimplemented,
}

pub fn unpack<R: Read>(_tar: R, _target: &Path, _opts: &UnpackOptions) -> Result<UnpackStats, UnpackError> {
    Err(UnpackError::Unimplemented)
}
