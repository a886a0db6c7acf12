//! Container logs in the CRI format the kubelet reads (`TIMESTAMP STREAM P|F CONTENT`, one
//! line each, RFC 3339 time with nanoseconds), written by the pod's monitor and rotated by
//! size, so a container's output never waits on whoever reads it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};

/// The kubelet's defaults (containerLogMaxSize 10Mi, containerLogMaxFiles 5).
pub const DEFAULT_MAX_SIZE: u64 = 10 << 20;
pub const DEFAULT_MAX_FILES: u32 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// How large a log file grows before it is rotated, and how many files are kept (the
/// current one included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub max_size: u64,
    pub max_files: u32,
}

impl Default for Rotation {
    fn default() -> Rotation {
        Rotation { max_size: DEFAULT_MAX_SIZE, max_files: DEFAULT_MAX_FILES }
    }
}

/// The log of one run of a container: `DIR/N.log` (N its restart count), rotated to
/// `N.log.1`, `N.log.2`… (the higher, the older).
pub struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
}

impl Writer {
    /// The log of run number `restart`; the logs of runs before the previous one go (the
    /// kubelet keeps one dead container per container, so `logs --previous` still works).
    pub fn open(dir: &Path, restart: u32, rotation: Rotation) -> io::Result<Writer> {
        fs::create_dir_all(dir)?;
        for e in fs::read_dir(dir)?.flatten() {
            let name = e.file_name();
            let run = name.to_str().and_then(|n| n.split_once(".log")).and_then(|(n, _)| n.parse::<u32>().ok());
            if run.is_some_and(|r| r.saturating_add(1) < restart) {
                let _ = fs::remove_file(e.path());
            }
        }
        let path = dir.join(format!("{restart}.log"));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Writer { path, file, size, rotation })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One line (or a piece of one, `partial`), without its newline.
    pub fn write(&mut self, stream: Stream, content: &[u8], partial: bool) -> io::Result<()> {
        self.write_at(DateTime::<Utc>::from(std::time::SystemTime::now()), stream, content, partial)
    }

    pub fn write_at(&mut self, at: DateTime<Utc>, stream: Stream, content: &[u8], partial: bool) -> io::Result<()> {
        let mut line = Vec::with_capacity(content.len() + 48);
        line.extend_from_slice(at.to_rfc3339_opts(SecondsFormat::Nanos, true).as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_str().as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(content);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.rotation.max_size {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.rotation.max_files.max(1);
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if keep == 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = fs::remove_file(numbered(keep - 1));
        for n in (1..keep - 1).rev() {
            match fs::rename(numbered(n), numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, numbered(1))?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// One parsed log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub time: &'a str,
    pub stream: Stream,
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses a line of a CRI log (without its newline); None if it is not one.
pub fn parse(line: &[u8]) -> Option<Line<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Line { time, stream, partial, content: parts.next().unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_run_removes_the_logs_of_runs_before_the_previous_one() {
        let d = tempfile::tempdir().unwrap();
        for f in ["0.log", "0.log.1", "1.log", "2.log", "notes"] {
            fs::write(d.path().join(f), "x").unwrap();
        }
        Writer::open(d.path(), 3, Rotation::default()).unwrap();
        let mut left: Vec<String> =
            fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["2.log", "3.log", "notes"]);
    }

    #[test]
    fn lines_are_written_in_the_cri_format_and_parse_back() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Writer::open(d.path(), 0, Rotation::default()).unwrap();
        let at = DateTime::parse_from_rfc3339("2026-12-02T03:04:05.000000042Z").unwrap().with_timezone(&Utc);
        w.write_at(at, Stream::Stdout, b"hello world", false).unwrap();
        w.write_at(at, Stream::Stderr, b"a piece", true).unwrap();
        let text = fs::read_to_string(d.path().join("0.log")).unwrap();
        assert_eq!(
            text,
            "2026-12-02T03:04:05.000000042Z stdout F hello world\n2026-12-02T03:04:05.000000042Z stderr P a piece\n"
        );
        let first = text.lines().next().unwrap().as_bytes();
        assert_eq!(
            parse(first),
            Some(Line {
                time: "2026-12-02T03:04:05.000000042Z",
                stream: Stream::Stdout,
                partial: false,
                content: b"hello world"
            })
        );
        assert_eq!(parse(b"garbage"), None);
    }

    #[test]
    fn a_log_rotates_by_size_and_keeps_max_files() {
        let d = tempfile::tempdir().unwrap();
        let mut w = Writer::open(d.path(), 3, Rotation { max_size: 200, max_files: 3 }).unwrap();
        for i in 0..40 {
            w.write(Stream::Stdout, format!("line {i:03}").as_bytes(), false).unwrap();
        }
        let mut names: Vec<String> =
            fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["3.log", "3.log.1", "3.log.2"]);
        for n in &names {
            assert!(fs::metadata(d.path().join(n)).unwrap().len() <= 200, "{n}");
        }
        assert!(fs::read_to_string(d.path().join("3.log")).unwrap().contains("line 039"));
    }
}
