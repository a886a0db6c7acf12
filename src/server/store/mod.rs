//! The control plane's store: keys such as `/registry/pods/default/web-1` with JSON values,
//! where every write gets a global revision (the Kubernetes resourceVersion) and every
//! change is kept in a log until compaction, so that a watch can resume from an exact
//! revision (docs/architecture.md, decision 9).
//!
//! [`Backend`] is what a storage engine provides; [`watch`] builds watches on any backend
//! from its log and its live feed. The embedded default is [`sqlite::Sqlite`]; several
//! control-plane machines share an [`etcd::Etcd`].

pub mod etcd;
pub mod sqlite;
mod watch;

use std::sync::Arc;
use std::time::Duration;

pub use watch::{Watcher, watch};

/// A live key, as of some revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision that created this incarnation of the key.
    pub create_revision: i64,
    /// The revision of the write that gave it this value.
    pub mod_revision: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One write, as a watch reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// The revision of this write.
    pub revision: i64,
    /// For a put, the new value; for a delete, the value deleted.
    pub kv: KeyValue,
    /// The value before this write, if the key existed.
    pub prev: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The revision the list reflects.
    pub revision: i64,
    /// More keys follow the last item (ask again starting after it).
    pub more: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key} not found")]
    NotFound { key: String },
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} was modified at revision {actual}, not {expected}")]
    Conflict { key: String, expected: i64, actual: i64 },
    #[error("revision {requested} has been compacted; the oldest available is {compacted}")]
    Compacted { requested: i64, compacted: i64 },
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision { requested: i64, current: i64 },
    #[error("sqlite store {path}: {op}: {source}")]
    Sqlite { path: String, op: &'static str, source: rusqlite::Error },
    #[error("etcd store {endpoints}: {op}: {source}")]
    Etcd { endpoints: String, op: &'static str, source: etcd_client::Error },
    /// No member answered in time; a write that ends so may or may not have been applied.
    #[error("etcd store {endpoints}: {op}: no answer within {waited:?}")]
    EtcdUnreachable { endpoints: String, op: &'static str, waited: Duration },
    #[error("key {0:?} is not printable ASCII")]
    BadKey(String),
    #[error("the store has shut down")]
    Closed,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The objects of a page cut by count alone, in [`Backend::list_within`]: with objects of
/// at most 1.5 MiB (the API's limit), a page holds under 50 MiB.
pub const COUNTED_PAGE: usize = 32;

/// A storage engine. Writes are acknowledged only once durable; events reach subscribers
/// in revision order, after the write is durable.
pub trait Backend: Send + Sync + 'static {
    fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Live keys under `prefix`, in key order, after `start_after` if given, at most
    /// `limit` (0: no limit), as of `revision` (None: now).
    fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize, revision: Option<i64>) -> Result<ListResult>;
    /// As [`Backend::list`], but the page also ends once its values hold
    /// `bytes` (it always has one item, if any is left): the pages of a list streamed out
    /// are as large as memory allows, whatever the objects' sizes. A backend that cannot
    /// stop as it reads gives [`COUNTED_PAGE`] objects at most.
    fn list_within(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        bytes: usize,
        revision: Option<i64>,
    ) -> Result<ListResult> {
        let _ = bytes;
        let limit = if limit == 0 { COUNTED_PAGE } else { limit.min(COUNTED_PAGE) };
        self.list(prefix, start_after, limit, revision)
    }
    /// How many live keys start with `prefix` now (for `apiserver_storage_objects`); a
    /// backend counts keys without reading their values.
    fn count(&self, prefix: &str) -> Result<i64>;
    fn create(&self, key: &str, value: &[u8]) -> Result<i64>;
    /// Replaces the value; with `expected`, only if the key's mod_revision is that.
    fn update(&self, key: &str, value: &[u8], expected: Option<i64>) -> Result<i64>;
    /// Deletes the key; with `expected`, only if its mod_revision is that.
    fn delete(&self, key: &str, expected: Option<i64>) -> Result<(i64, KeyValue)>;
    fn current_revision(&self) -> Result<i64>;
    /// Revisions at or below this are gone from the log.
    fn compacted_revision(&self) -> Result<i64>;
    /// Logged events under `prefix` with revision > `after`, oldest first, at most `limit`.
    fn events_since(&self, prefix: &str, after: i64, limit: usize) -> Result<Vec<Event>>;
    /// Live events from now on, for every key.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Event>>;
    /// Drops superseded history at or below `revision`.
    fn compact(&self, revision: i64) -> Result<()>;
}

/// How a backend's compactor is paced: every backend drops old history by itself, so that
/// the store stays bounded (docs/architecture.md, decision 9).
#[derive(Clone, Debug)]
pub struct CompactionPolicy {
    /// History kept: the newest this many revisions stay watchable, and (see
    /// [`Compactor`]) every revision that was current less than one `interval` ago.
    pub retain: i64,
    /// How often the compactor wakes.
    pub interval: Duration,
}

/// Where a background compactor may compact to. A count alone is not enough: under a burst
/// of writes 10,000 revisions pass in seconds, and a long list read page by page at its
/// revision (a 50,000-pod list) or a watch catching up would find that revision gone
/// midway. So, as kube-apiserver compacts etcd to the revision it saw one round earlier,
/// a revision stays until at least one interval after it stopped being the newest.
#[derive(Debug, Default)]
pub(crate) struct Compactor {
    previous: Option<i64>,
}

impl Compactor {
    /// The horizon for this round, given the store's `current` revision; None: nothing yet.
    pub(crate) fn horizon(&mut self, current: i64, retain: i64) -> Option<i64> {
        let seen_a_round_ago = self.previous.replace(current)?;
        let horizon = (current - retain).min(seen_a_round_ago);
        (horizon > 1).then_some(horizon)
    }
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        // kube-apiserver compacts every 5 minutes; 10,000 revisions cover a busy small cluster.
        CompactionPolicy { retain: 10_000, interval: Duration::from_secs(60) }
    }
}

/// Keys are non-empty printable ASCII, as Kubernetes names and our prefixes are; every
/// backend refuses anything else, so that key order and [`prefix_end`] mean the same in each.
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(StoreError::BadKey(key.to_string()));
    }
    Ok(())
}

/// The first key after every key that starts with `prefix` (for range scans). Keys are
/// ASCII (Kubernetes names are), so the last byte below 0x7f can be incremented.
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).expect("ASCII stays ASCII");
        }
    }
    "\u{7f}".to_string()
}

#[cfg(test)]
mod compactor_tests {
    use super::Compactor;

    #[test]
    fn a_revision_outlives_the_round_it_was_newest_in() {
        let mut c = Compactor::default();
        assert_eq!(c.horizon(50_000, 10_000), None, "the first round only looks");
        // 100,000 writes in one round: only what was current a round ago may go.
        assert_eq!(c.horizon(150_000, 10_000), Some(50_000));
        // A quiet round: the count rules.
        assert_eq!(c.horizon(150_100, 10_000), Some(140_100));
        assert_eq!(c.horizon(150_200, 1_000_000), None);
    }
}
