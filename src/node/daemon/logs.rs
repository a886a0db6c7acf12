//! A container's log as `kubectl logs` prints it, from its CRI log files: the run asked for
//! (the current one, or the one before with `previous`), rotated files oldest first, pieces
//! of long lines joined, optionally with each line's time, the last `tail` lines.

use std::fs;
use std::io;
use std::path::Path;

use crate::node::crilog;

#[derive(Clone, Debug, Default)]
pub struct Query {
    pub tail: Option<usize>,
    pub timestamps: bool,
}

/// The files of run `restart` of the container whose logs are in `dir`, oldest first.
fn files(dir: &Path, restart: u32) -> Vec<std::path::PathBuf> {
    let base = format!("{restart}.log");
    let mut rotated: Vec<(u32, std::path::PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(&format!("{base}."))?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out: Vec<_> = rotated.into_iter().map(|(_, p)| p).collect();
    let current = dir.join(&base);
    if current.exists() {
        out.push(current);
    }
    out
}

/// The log text; NotFound if the run has no log.
pub fn read(dir: &Path, restart: u32, q: &Query) -> io::Result<Vec<u8>> {
    let files = files(dir, restart);
    if files.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no log of run {restart} in {}", dir.display())));
    }
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_time: Option<String> = None;
    for f in files {
        let text = match fs::read(&f) {
            Ok(t) => t,
            // Rotated away between the listing and the read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for raw in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Some(line) = crilog::parse(raw) else { continue };
            if pending_time.is_none() {
                pending_time = Some(line.time.to_string());
            }
            pending.extend_from_slice(line.content);
            if !line.partial {
                let mut out = Vec::new();
                if q.timestamps {
                    out.extend_from_slice(pending_time.as_deref().unwrap_or_default().as_bytes());
                    out.push(b' ');
                }
                out.append(&mut pending);
                out.push(b'\n');
                lines.push(out);
                pending_time = None;
            }
        }
    }
    let skip = q.tail.map_or(0, |n| lines.len().saturating_sub(n));
    Ok(lines.into_iter().skip(skip).flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::crilog::{Rotation, Stream, Writer};

    #[test]
    fn rotated_files_are_read_oldest_first_and_pieces_joined() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Writer::open(d.path(), 1, Rotation { max_size: 120, max_files: 5 }).unwrap();
        for i in 0..6 {
            w.write(Stream::Stdout, format!("line {i}").as_bytes(), false).unwrap();
        }
        w.write(Stream::Stderr, b"a long ", true).unwrap();
        w.write(Stream::Stderr, b"line", false).unwrap();
        assert!(d.path().join("1.log.1").exists(), "rotated");
        let all = String::from_utf8(read(d.path(), 1, &Query::default()).unwrap()).unwrap();
        assert_eq!(all, "line 0\nline 1\nline 2\nline 3\nline 4\nline 5\na long line\n");
        let tail = String::from_utf8(read(d.path(), 1, &Query { tail: Some(2), timestamps: true }).unwrap()).unwrap();
        let got: Vec<&str> = tail.lines().map(|l| l.split_once(' ').unwrap().1).collect();
        assert_eq!(got, ["line 5", "a long line"]);
        assert_eq!(read(d.path(), 0, &Query::default()).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
