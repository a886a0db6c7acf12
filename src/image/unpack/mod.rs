//! Unpacks one layer's tar stream into a directory, as the OCI image spec says, and never
//! outside it.
//!
//! The `tar` crate parses headers (ustar, GNU long names, PAX); everything it would write
//! is written here instead, because its own unpacker writes device nodes as empty files and
//! whiteouts as plain files. Paths are resolved by [`confined`] (openat2 RESOLVE_IN_ROOT),
//! so a hostile entry that climbs with `..`, names an absolute path, or writes through a
//! symlink lands inside the target, never on the host.

mod confined;
mod entry;

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::Path;

use confined::Root;
pub use entry::EntryKind;

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
    /// The most a layer may unpack to: the sum of its files' sizes, holes included.
    pub max_bytes: u64,
}

/// The default for [`UnpackOptions::max_bytes`]; `NODECTL_MAX_LAYER_SIZE` (bytes, or with
/// a suffix such as `64Gi`) sets another.
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 64 << 30;

#[derive(Debug, Default, Clone)]
pub struct UnpackStats {
    pub entries: u64,
    /// Sum of regular file sizes written.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("opening target {path}: {source}")]
    Target { path: String, source: io::Error },
    #[error("reading the layer (truncated or not a tar archive?): {0}")]
    Read(#[source] io::Error),
    #[error("entry {path:?}: {op}: {source}")]
    Entry { path: String, op: &'static str, source: io::Error },
    #[error("entry {path:?}: {reason}")]
    Invalid { path: String, reason: &'static str },
    #[error(
        "entry {path:?}: the layer unpacks to more than {limit} bytes, the limit (NODECTL_MAX_LAYER_SIZE sets another)"
    )]
    TooLarge { path: String, limit: u64 },
}

pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub const OPAQUE: &[u8] = b".wh..wh..opq";

pub fn unpack<R: Read>(tar: R, target: &Path, opts: &UnpackOptions) -> Result<UnpackStats, UnpackError> {
    let root =
        Root::open(target).map_err(|source| UnpackError::Target { path: target.display().to_string(), source })?;
    let mut state = entry::Unpacker::new(&root, opts.whiteouts);
    let mut archive = tar::Archive::new(tar);
    let mut stats = UnpackStats::default();
    for item in archive.entries().map_err(UnpackError::Read)? {
        let mut item = item.map_err(UnpackError::Read)?;
        // Checked before a byte is written: what the header declares (a GNU sparse entry's
        // real size, not its stored data), then what was written.
        let header = item.header();
        let declared = match header.entry_type() {
            tar::EntryType::GNUSparse => header.as_gnu().and_then(|g| g.real_size().ok()),
            tar::EntryType::Regular | tar::EntryType::Continuous => header.entry_size().ok(),
            _ => None,
        };
        let too_large = |item: &tar::Entry<'_, _>| UnpackError::TooLarge {
            path: String::from_utf8_lossy(&item.path_bytes()).into_owned(),
            limit: opts.max_bytes,
        };
        if stats.bytes.saturating_add(declared.unwrap_or(0)) > opts.max_bytes {
            return Err(too_large(&item));
        }
        stats.bytes += state.apply(&mut item)?;
        if stats.bytes > opts.max_bytes {
            return Err(too_large(&item));
        }
        stats.entries += 1;
    }
    state.finish()?;
    Ok(stats)
}

/// A path inside the layer, as bytes, normalised: no leading `/` or `./`, no `.`
/// components, `..` taken lexically and never above the root (as RESOLVE_IN_ROOT would).
pub fn normalise(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if raw.contains(&0) {
        return Err("the name contains a NUL byte");
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join(&b'/'))
}

/// Splits a normalised path into its parent and final name.
pub fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[][..], path),
    }
}

/// Paths this layer has created, for Apply mode: whiteouts remove only what lower layers
/// put there.
#[derive(Default)]
pub(crate) struct Created(HashSet<Vec<u8>>);

impl Created {
    fn insert(&mut self, p: &[u8]) {
        self.0.insert(p.to_vec());
    }
    fn contains(&self, p: &[u8]) -> bool {
        self.0.contains(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_hostile_names_inside_the_root() {
        assert_eq!(normalise(b"./a/b/").unwrap(), b"a/b");
        assert_eq!(normalise(b"/etc/passwd").unwrap(), b"etc/passwd");
        assert_eq!(normalise(b"../../etc/passwd").unwrap(), b"etc/passwd");
        assert_eq!(normalise(b"a/../../b").unwrap(), b"b");
        assert_eq!(normalise(b"./").unwrap(), b"");
        assert!(normalise(b"a\0b").is_err());
    }

    #[test]
    fn splits_parent_and_name() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    }
}
