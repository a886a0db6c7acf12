//! A pod's state on disk, under `ROOT/pods/UID/`: what it was created from and what became
//! of each container, written so that a process that dies at any instant leaves either the
//! old file or the new one (write to a temporary name, then rename).
//!
//! ```text
//! ROOT/pods/UID/
//!   lock              flock'd by the pod's owner for its life (docs/architecture.md)
//!   pod.json          the sandbox record: what teardown must undo (sandbox::PodRecord)
//!   manifest.json     the Pod (and the ConfigMaps and Secrets it uses) it was made from
//!   monitor.json      the monitor's pid and start time
//!   monitor.sock      the monitor's control socket
//!   containers/NAME.json   the monitor's record of the container's current run
//!   status.json       the owner's decisions: restart counts, backoff, last states
//!   logs/NAME/N.log   container output in the CRI log format, N = restart count
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::reconcile::Terminated;

pub fn pods_dir(root: &Path) -> PathBuf {
    root.join("pods")
}

pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    pods_dir(root).join(uid)
}

/// A new pod UID, as the API server makes them (a random, version 4 UUID).
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether `uid` can name a directory of ours: a UUID's characters only.
pub fn uid_is_valid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The pod's short key: a prefix of its name and the first 8 hex digits of its UID, short
/// so that container ids and veth names made from it stay within their limits.
pub fn key_for(name: &str, uid: &str) -> String {
    let prefix: String = name.chars().take(40).collect();
    let prefix = prefix.trim_end_matches(['-', '.']);
    let id: String = uid.chars().filter(|c| c.is_ascii_hexdigit()).take(8).collect();
    format!("{prefix}-{id}")
}

/// Writes `bytes` to `path` so a reader sees the old content or the new, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &bytes)
}

/// The JSON file at `path`, or None if there is none. Records are ours, but bounded all the
/// same: nothing a container can write is under the pod directory's top levels.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Which process is a pod's monitor: its pid and start time (pids are reused).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitorRecord {
    pub pid: i32,
    pub start_time: u64,
}

impl MonitorRecord {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("monitor.json")
    }

    pub fn alive(&self) -> bool {
        crate::sys::process::alive(self.pid, self.start_time)
    }
}

/// What the sandbox became, written by the monitor that made it: a monitor started again
/// (the first died) finds the sandbox made and adopts it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxReady {
    pub ip: Option<std::net::Ipv4Addr>,
    pub hostname: String,
}

impl SandboxReady {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("sandbox.json")
    }
}

/// The monitor's record of a container's current run: written when it starts and again
/// when it ends.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    /// The runtime's container id.
    pub id: String,
    pub pid: i32,
    pub started_at: SystemTime,
    /// Set once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<Terminated>,
}

impl ContainerRecord {
    pub fn path(dir: &Path, name: &str) -> PathBuf {
        dir.join("containers").join(format!("{name}.json"))
    }
}

/// The directory of a container's logs.
pub fn log_dir(dir: &Path, container: &str) -> PathBuf {
    dir.join("logs").join(container)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_version_4_uuids_and_keys_fit_the_limits_of_what_is_named_after_them() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.as_bytes()[14], b'4');
        assert!(uid_is_valid(&uid));
        assert!(!uid_is_valid("../x") && !uid_is_valid(""));
        let k = key_for(&"a".repeat(253), &uid);
        assert!(k.len() <= 49, "{k}");
        assert_eq!(key_for("web-", "0123abcd-ffff"), "web-0123abcd");
    }

    #[test]
    fn an_atomic_write_replaces_the_whole_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.json");
        write_json(&p, &vec![1, 2, 3]).unwrap();
        write_json(&p, &vec![4]).unwrap();
        assert_eq!(read_json::<Vec<i32>>(&p).unwrap(), Some(vec![4]));
        assert_eq!(read_json::<Vec<i32>>(&d.path().join("none")).unwrap(), None);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "no temporary file left");
    }
}
