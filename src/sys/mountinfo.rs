//! /proc/self/mountinfo (proc(5)), read into typed entries: the one parser that cgroup
//! detection, pivot_root's propagation check and subtree unmounting share.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Field 4: the path inside the filesystem that is mounted (a bind mount's source).
    pub root: PathBuf,
    /// Field 5: where it is mounted, relative to our root.
    pub mount_point: PathBuf,
    /// Field 6: per-mount options (`rw,nosuid,…`).
    pub mount_options: String,
    /// The optional fields (`shared:N`, `master:N`, …).
    pub optional: Vec<String>,
    pub fstype: String,
    pub source: String,
    /// Per-superblock options (`rw,memory` for a v1 memory cgroup).
    pub super_options: String,
}

impl Mount {
    /// Whether mounts and unmounts below this one propagate to peers (`shared:N`).
    pub fn is_shared(&self) -> bool {
        self.optional.iter().any(|f| f.starts_with("shared:"))
    }
}

/// This process's mounts, in the order the kernel lists them.
pub fn read() -> io::Result<Vec<Mount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| io::Error::new(e.kind(), format!("read /proc/self/mountinfo: {e}")))?;
    Ok(parse(&text))
}

/// Lines that do not have the documented shape are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let (_id, _parent, _dev) = (l.next()?, l.next()?, l.next()?);
    let root = unescape(l.next()?);
    let mount_point = unescape(l.next()?);
    let mount_options = l.next()?.to_string();
    let optional = l.map(str::to_string).collect();
    let mut r = right.split(' ');
    let fstype = r.next()?.to_string();
    let source = r.next().unwrap_or_default().to_string();
    let super_options = r.next().unwrap_or_default().to_string();
    Some(Mount {
        root: root.into(),
        mount_point: mount_point.into(),
        mount_options,
        optional,
        fstype,
        source,
        super_options,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0').wrapping_mul(64).wrapping_add((d[1] - b'0') * 8 + (d[2] - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_field_by_field() {
        let text = "36 35 98:0 /mnt1 /mnt\\040two rw,noatime shared:1 master:2 - ext3 /dev/root rw,errors=continue\n\
                    25 1 0:22 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    garbage\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].root, PathBuf::from("/mnt1"));
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt two"));
        assert!(m[0].is_shared());
        assert_eq!(m[0].optional, ["shared:1", "master:2"]);
        assert_eq!((m[0].fstype.as_str(), m[0].source.as_str()), ("ext3", "/dev/root"));
        assert_eq!(m[1].super_options, "rw,memory");
        assert!(!m[1].is_shared());
    }

    #[test]
    fn escapes_are_undone_and_a_short_escape_is_kept() {
        assert_eq!(unescape("a\\134b\\011"), OsString::from("a\\b\t"));
        assert_eq!(unescape("x\\04"), OsString::from("x\\04"));
    }

    #[test]
    fn our_own_mounts_include_the_root() {
        assert!(read().unwrap().iter().any(|m| m.mount_point == std::path::Path::new("/")));
    }
}
