//! A container's log as `kubectl logs` prints it, from its CRI log files: the run asked for
//! (the current one, or the one before with `previous`), rotated files oldest first, pieces
//! of long lines joined, optionally with each line's time, only lines written since a
//! time, the last `tail` lines, at most `limit_bytes` bytes.

use std::fs;
use std::io;
use std::path::Path;

use crate::node::crilog;

#[derive(Clone, Debug, Default)]
pub struct Query {
    pub tail: Option<usize>,
    pub timestamps: bool,
    /// Lines written before this are left out (`sinceSeconds`, `sinceTime`).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// The answer ends after this many bytes (`limitBytes`).
    pub limit_bytes: Option<usize>,
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

/// Turns CRI log lines into what kubectl prints: pieces of a long line joined, with the
/// first piece's time if asked.
#[derive(Default)]
struct Joiner {
    timestamps: bool,
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Bytes of a line not yet ended by a newline (the file is being written).
    raw: Vec<u8>,
    pending: Vec<u8>,
    pending_time: Option<String>,
}

impl Joiner {
    /// Takes bytes of a log file; returns the lines they complete.
    fn feed(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.raw.extend_from_slice(bytes);
        let mut out = Vec::new();
        let end = match self.raw.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => return out,
        };
        let whole: Vec<u8> = self.raw.drain(..end).collect();
        for raw in whole.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Some(line) = crilog::parse(raw) else { continue };
            if self.pending_time.is_none() {
                self.pending_time = Some(line.time.to_string());
            }
            self.pending.extend_from_slice(line.content);
            if !line.partial {
                let before = |since: &chrono::DateTime<chrono::Utc>| {
                    let time = self.pending_time.as_deref().unwrap_or_default();
                    chrono::DateTime::parse_from_rfc3339(time).is_ok_and(|t| t < *since)
                };
                if self.since.as_ref().is_some_and(before) {
                    self.pending.clear();
                    self.pending_time = None;
                    continue;
                }
                let mut l = Vec::new();
                if self.timestamps {
                    l.extend_from_slice(self.pending_time.as_deref().unwrap_or_default().as_bytes());
                    l.push(b' ');
                }
                l.append(&mut self.pending);
                l.push(b'\n');
                out.push(l);
                self.pending_time = None;
            }
        }
        out
    }
}

/// The log text; NotFound if the run has no log.
pub fn read(dir: &Path, restart: u32, q: &Query) -> io::Result<Vec<u8>> {
    let files = files(dir, restart);
    if files.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no log of run {restart} in {}", dir.display())));
    }
    let mut j = Joiner { timestamps: q.timestamps, since: q.since, ..Default::default() };
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for f in files {
        match fs::read(&f) {
            Ok(t) => lines.extend(j.feed(&t)),
            // Rotated away between the listing and the read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    let skip = q.tail.map_or(0, |n| lines.len().saturating_sub(n));
    let mut out: Vec<u8> = lines.into_iter().skip(skip).flatten().collect();
    if let Some(limit) = q.limit_bytes {
        out.truncate(limit);
    }
    Ok(out)
}

/// `logs -f`: what is there (as [`read`]), then each new line as it is written, across
/// rotations, until `running` says the run is over and everything was read, or `send`
/// says the reader is gone.
pub fn follow(
    dir: &Path,
    restart: u32,
    q: &Query,
    running: &dyn Fn() -> bool,
    send: &mut dyn FnMut(Vec<u8>) -> bool,
) -> io::Result<()> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let current = dir.join(format!("{restart}.log"));
    // The current file is opened first: what is written after is read from it, once.
    let mut file = loop {
        match fs::File::open(&current) {
            Ok(f) => break f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && running() => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            Err(e) => return Err(e),
        }
    };
    let mut j = Joiner { timestamps: q.timestamps, since: q.since, ..Default::default() };
    let mut left = q.limit_bytes.unwrap_or(usize::MAX);
    // Sends at most what the limit leaves; false once the reader is gone or the limit met.
    let mut emit = |mut b: Vec<u8>| {
        b.truncate(left);
        left -= b.len();
        (b.is_empty() || send(b)) && left > 0
    };
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for f in files(dir, restart).into_iter().filter(|f| *f != current) {
        if let Ok(t) = fs::read(&f) {
            lines.extend(j.feed(&t));
        }
    }
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    lines.extend(j.feed(&buf));
    let skip = q.tail.map_or(0, |n| lines.len().saturating_sub(n));
    let first: Vec<u8> = lines.into_iter().skip(skip).flatten().collect();
    if !first.is_empty() && !emit(first) {
        return Ok(());
    }
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let over = !running();
        let n = file.read(&mut chunk)?;
        if n > 0 {
            let out: Vec<u8> = j.feed(&chunk[..n]).into_iter().flatten().collect();
            if !out.is_empty() && !emit(out) {
                return Ok(());
            }
            continue;
        }
        // Rotated: the rest of the old file was read; the new one starts at its beginning.
        let rotated = fs::metadata(&current).is_ok_and(|m| m.ino() != file.metadata().map(|f| f.ino()).unwrap_or(0));
        if rotated && let Ok(f) = fs::File::open(&current) {
            file = f;
            continue;
        }
        if over {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
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
        let tail = String::from_utf8(
            read(d.path(), 1, &Query { tail: Some(2), timestamps: true, ..Default::default() }).unwrap(),
        )
        .unwrap();
        let got: Vec<&str> = tail.lines().map(|l| l.split_once(' ').unwrap().1).collect();
        assert_eq!(got, ["line 5", "a long line"]);
        assert_eq!(read(d.path(), 0, &Query::default()).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn since_leaves_older_lines_out_and_limit_bytes_cuts_the_answer() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Writer::open(d.path(), 0, Rotation { max_size: 1 << 20, max_files: 2 }).unwrap();
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&chrono::Utc);
        w.write_at(at("2026-01-01T00:00:00Z"), Stream::Stdout, b"old", false).unwrap();
        w.write_at(at("2026-01-01T00:01:00Z"), Stream::Stdout, b"new ", true).unwrap();
        w.write_at(at("2026-01-01T00:01:01Z"), Stream::Stdout, b"line", false).unwrap();
        let since = Query { since: Some(at("2026-01-01T00:00:30Z")), ..Default::default() };
        assert_eq!(read(d.path(), 0, &since).unwrap(), b"new line\n");
        let limited = Query { limit_bytes: Some(6), ..Default::default() };
        assert_eq!(read(d.path(), 0, &limited).unwrap(), b"old\nne");
        let mut got = Vec::new();
        follow(d.path(), 0, &limited, &|| true, &mut |b| {
            got.extend(b);
            true
        })
        .unwrap();
        assert_eq!(got, b"old\nne", "following stops at the limit even while the run goes on");
    }

    #[test]
    fn following_reads_what_is_there_then_new_lines_across_a_rotation_until_the_run_ends() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let mut w = Writer::open(&dir, 0, Rotation { max_size: 100, max_files: 3 }).unwrap();
        w.write(Stream::Stdout, b"before", false).unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let writer = std::thread::spawn(move || {
            for i in 0..5 {
                std::thread::sleep(std::time::Duration::from_millis(30));
                w.write(Stream::Stdout, format!("after {i}").as_bytes(), false).unwrap();
            }
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut got = Vec::new();
        let running = || !done.load(std::sync::atomic::Ordering::SeqCst);
        follow(&dir, 0, &Query::default(), &running, &mut |b| {
            got.extend_from_slice(&b);
            true
        })
        .unwrap();
        writer.join().unwrap();
        assert!(dir.join("0.log.1").exists(), "it rotated meanwhile");
        assert_eq!(String::from_utf8(got).unwrap(), "before\nafter 0\nafter 1\nafter 2\nafter 3\nafter 4\n");
    }
}
