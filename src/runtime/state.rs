//! A container's record on disk, under the runtime root: `<root>/<id>/state.json`, the
//! `exec.fifo` a created container waits on, and a lock file that serialises the verbs.
//! The status is never stored; it is read from the process itself (alive, same start
//! time, fifo still there), so a crash cannot leave a stale status behind.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::{Hook, Hooks};
use crate::sys::lock::FileLock;
use crate::sys::process;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container id {0:?} is invalid: use 1-1024 characters of [A-Za-z0-9_.+-], not starting with . or -")]
    BadId(String),
    /// runc's words (its callers and tests look for "container does not exist").
    #[error("container does not exist: {0:?}")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

pub type Result<T> = std::result::Result<T, StateError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io { op, path: path.to_path_buf(), source }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What `create` records.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    /// Field 22 of /proc/PID/stat when created: tells our process from a recycled pid.
    pub pid_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub annotations: BTreeMap<String, String>,
    /// The cgroup, relative to our own (see runtime::cgroups).
    pub cgroup: String,
    pub cgroup_parent: Option<String>,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub hooks: HooksRecord,
    /// The profile exec'd processes get too.
    #[serde(default)]
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    /// The AppArmor profile the init was started under, which exec'd processes get
    /// unless they name their own (as runc's exec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apparmor_profile: Option<String>,
}

/// The hooks the runtime runs after `create` returns, kept for `start` and `delete`
/// (startContainer hooks run in the init, from the config it already has).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HooksRecord {
    pub poststart: Vec<Hook>,
    pub poststop: Vec<Hook>,
}

impl HooksRecord {
    pub fn from_hooks(h: &Hooks) -> HooksRecord {
        HooksRecord { poststart: h.poststart.clone(), poststop: h.poststop.clone() }
    }
}

pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && !id.starts_with('-')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
    if ok { Ok(()) } else { Err(StateError::BadId(id.to_string())) }
}

/// The runtime root: one directory per container.
#[derive(Clone, Debug)]
pub struct StateRoot {
    dir: PathBuf,
}

impl StateRoot {
    pub fn new(dir: &Path) -> StateRoot {
        StateRoot { dir: dir.to_path_buf() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    pub fn fifo_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("exec.fifo")
    }

    /// Makes the directory for a new container and locks it; fails if it exists.
    pub fn reserve(&self, id: &str) -> Result<FileLock> {
        validate_id(id)?;
        fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        let dir = self.container_dir(id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(StateError::Exists(id.to_string())),
            Err(e) => return Err(io_err("create", &dir)(e)),
        }
        let lock = dir.join("lock");
        FileLock::exclusive(&lock).map_err(io_err("lock", &lock))
    }

    /// Locks an existing container for a verb that changes it.
    pub fn lock(&self, id: &str) -> Result<FileLock> {
        validate_id(id)?;
        let dir = self.container_dir(id);
        if !dir.is_dir() {
            return Err(StateError::NotFound(id.to_string()));
        }
        let lock = dir.join("lock");
        FileLock::exclusive(&lock).map_err(io_err("lock", &lock))
    }

    pub fn load(&self, id: &str) -> Result<Record> {
        validate_id(id)?;
        let path = self.container_dir(id).join("state.json");
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StateError::NotFound(id.to_string())),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        serde_json::from_slice(&text).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Writes the record atomically (temp file, fsync, rename).
    pub fn save(&self, rec: &Record) -> Result<()> {
        let dir = self.container_dir(&rec.id);
        let tmp = dir.join("state.json.tmp");
        let path = dir.join("state.json");
        let mut f = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(&serde_json::to_vec_pretty(rec).unwrap_or_default()).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.container_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &dir)(e)),
        }
    }

    /// Every container id, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &self.dir)(e)),
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().join("state.json").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub fn status(&self, rec: &Record) -> Status {
        if rec.pid <= 0 || !process::alive(rec.pid, rec.pid_start_time) {
            return Status::Stopped;
        }
        if self.fifo_path(&rec.id).exists() {
            Status::Created
        } else if rec.paused {
            Status::Paused
        } else {
            Status::Running
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        for good in ["a", "abc-1.2_3+x", "A"] {
            validate_id(good).unwrap();
        }
        for bad in ["", ".", "..", "-x", "a/b", "a b", ".hidden"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }
}
