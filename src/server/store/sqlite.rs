//! The embedded store: one SQLite file holding a revision log, as kine keeps one.
//!
//! Every write appends a row (revision, key, value, create_revision, prev_revision,
//! deleted); the current state of a key is its newest row. Revisions come from an
//! AUTOINCREMENT key, so they never go back, even when compaction removes the newest rows.
//! WAL with `synchronous=FULL`: a write is acknowledged only after its commit reached the
//! disk, so `kill -9` loses nothing acknowledged.
//!
//! Writes go through one connection under a mutex, which also orders the live events by
//! revision, and concurrent writes are committed in groups sharing one sync; reads use a small pool of their own connections (WAL lets them run beside
//! the writer). Compaction runs on a thread of its own and keeps the file bounded: history
//! beyond the newest `retain` revisions is dropped, freed pages are returned with
//! incremental vacuum, and the WAL is truncated.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::broadcast;

pub use super::CompactionPolicy;
use super::{Backend, Event, EventKind, KeyValue, ListResult, Result, StoreError, check_key, prefix_end};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS log (
        revision INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        create_revision INTEGER NOT NULL,
        prev_revision INTEGER NOT NULL,
        deleted INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS log_key_revision ON log (key, revision);
    CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

// The statements run on every request, each compiled once per connection (see
// `open_connection`).

/// The newest row of a key, live or a deletion marker.
const LATEST: &str =
    "SELECT revision, key, value, create_revision, deleted FROM log WHERE key = ?1 ORDER BY revision DESC LIMIT 1";
const APPEND: &str =
    "INSERT INTO log (key, value, create_revision, prev_revision, deleted) VALUES (?1, ?2, ?3, ?4, ?5)";
const SET_CREATED: &str = "UPDATE log SET create_revision = ?1 WHERE revision = ?1";
/// A page of live keys at a revision. It walks the (key, revision) index in key order and
/// keeps each key's newest row at the revision, so a page costs what it returns: a join on
/// a grouped subquery made SQLite materialize every key after the page's start for each
/// page, and a list streamed in pages of 32 read 10,000 pods some 300 times over (1.1 s
/// instead of 0.2 s).
const LIST: &str = "SELECT l.revision, l.key, l.value, l.create_revision FROM log AS l
     WHERE l.key >= ?1 AND l.key < ?2
       AND l.revision = (SELECT MAX(x.revision) FROM log AS x WHERE x.key = l.key AND x.revision <= ?3)
       AND l.deleted = 0
     ORDER BY l.key LIMIT ?4";
/// The live keys under a prefix: the newest row of each, from the (key, revision) index
/// alone.
const COUNT: &str = "SELECT COUNT(*) FROM log AS l
     JOIN (SELECT MAX(revision) AS rev FROM log WHERE key >= ?1 AND key < ?2 GROUP BY key) AS m
       ON l.revision = m.rev
     WHERE l.deleted = 0";
/// The changes under a prefix after a revision, each with the row it replaced. NOT
/// INDEXED: the log is walked in revision order from the start. Left to itself SQLite
/// takes the (key, revision) index for the prefix and sorts what it finds: every row ever
/// written under the prefix, values and all, for each batch.
const EVENTS: &str = "SELECT l.revision, l.key, l.value, l.create_revision, l.deleted,
            p.revision AS p_revision, p.value AS p_value, p.create_revision AS p_create
     FROM log AS l NOT INDEXED LEFT JOIN log AS p ON p.revision = l.prev_revision
     WHERE l.revision > ?1 AND l.key >= ?2 AND l.key < ?3
     ORDER BY l.revision LIMIT ?4";

/// Read connections kept open between reads: lagging watchers catch up beside the lists.
const READERS: usize = 8;

struct Shared {
    path: PathBuf,
    writer: Mutex<Connection>,
    /// Writes waiting for the writer (see [`Shared::write`]).
    queue: Mutex<std::collections::VecDeque<Request>>,
    readers: Mutex<Vec<Connection>>,
    events: broadcast::Sender<Arc<Event>>,
    stop: (Mutex<bool>, Condvar),
}

pub struct Sqlite {
    shared: Arc<Shared>,
    compactor: Option<std::thread::JoinHandle<()>>,
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    // The query planner's stability guarantee: a plan never depends on the values bound.
    // Without it SQLite 3.54 compiles `WHERE key = ?1 ORDER BY revision DESC` again on
    // every run (it re-plans per bound key), which was an eighth of the server's CPU under
    // load; our statements have one good plan whatever the key.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // auto_vacuum must be set before the first table exists; later it is a no-op.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
    Ok(conn)
}

fn kv_from(row: &Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: row.get("key")?,
        value: row.get("value")?,
        create_revision: row.get("create_revision")?,
        mod_revision: row.get("revision")?,
    })
}

impl Shared {
    fn err(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite { path: self.path.display().to_string(), op, source }
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.readers.lock().expect("reader pool").pop();
        let conn = match conn {
            Some(c) => c,
            None => open_connection(&self.path).map_err(self.err("open reader"))?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().expect("reader pool");
        if pool.len() < READERS {
            pool.push(conn);
        }
        out
    }

    fn current(conn: &Connection) -> rusqlite::Result<i64> {
        conn.query_row("SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'log'), 0)", [], |r| r.get(0))
    }

    fn compacted(conn: &Connection) -> rusqlite::Result<i64> {
        conn.query_row("SELECT COALESCE((SELECT value FROM meta WHERE name = 'compacted'), 0)", [], |r| r.get(0))
    }

    fn latest(conn: &Connection, key: &str) -> rusqlite::Result<Option<(KeyValue, bool)>> {
        conn.prepare_cached(LATEST)?.query_row([key], |r| Ok((kv_from(r)?, r.get::<_, bool>("deleted")?))).optional()
    }

    /// Appends one row for `key` as `op` decides, acknowledged once its commit is on disk,
    /// and announces it.
    ///
    /// Group commit: the write is queued, and whoever holds the writer connection next
    /// commits everything queued by then in one transaction (one WAL sync for all), so
    /// concurrent writers share the disk's flush instead of waiting for one each. Each
    /// write still sees the ones before it, gets its own revision and its own answer; if
    /// the group's transaction fails, each of its writes is tried again alone, so one
    /// write's failure is never another's.
    fn write(&self, key: &str, op: Op) -> Result<Arc<Event>> {
        check_key(key)?;
        let (reply, answer) = mpsc::sync_channel(1);
        self.queue.lock().expect("write queue").push_back(Request { key: key.to_string(), op, reply });
        loop {
            if let Ok(done) = answer.try_recv() {
                return done;
            }
            let mut conn = self.writer.lock().expect("writer");
            // The one before may have committed ours.
            if let Ok(done) = answer.try_recv() {
                return done;
            }
            let group: Vec<Request> = {
                let mut q = self.queue.lock().expect("write queue");
                let n = q.len().min(MAX_GROUP);
                q.drain(..n).collect()
            };
            self.commit_group(&mut conn, group);
        }
    }

    /// Commits `group` and answers each of its writers; called with the writer held, so
    /// events go out in revision order.
    fn commit_group(&self, conn: &mut Connection, group: Vec<Request>) {
        let outcome = match self.apply(conn, &group) {
            Ok(results) => results,
            Err(_) if group.len() > 1 => {
                for request in group {
                    self.commit_group(conn, vec![request]);
                }
                return;
            }
            Err(e) => vec![Err(e)],
        };
        for (request, result) in group.into_iter().zip(outcome) {
            // The watchers and the writer share the event (its values are not copied).
            let result = result.map(Arc::new);
            if let Ok(event) = &result {
                // No receiver is not an error.
                let _ = self.events.send(event.clone());
            }
            // A writer that stopped waiting is not an error either.
            let _ = request.reply.send(result);
        }
    }

    /// Runs `group` in one durable transaction: each write's own answer (a refusal such as
    /// a conflict writes nothing), or Err if the transaction failed and nothing was written.
    fn apply(&self, conn: &mut Connection, group: &[Request]) -> Result<Vec<Result<Event>>> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(self.err("begin"))?;
        let mut results = Vec::with_capacity(group.len());
        for Request { key, op, .. } in group {
            let prev = Self::latest(&tx, key)
                .map_err(self.err("read key"))?
                .and_then(|(kv, deleted)| (!deleted).then_some(kv));
            let new_value = match op.decide(key, prev.as_ref()) {
                Ok(v) => v,
                Err(refused) => {
                    results.push(Err(refused));
                    continue;
                }
            };
            let deleted = new_value.is_none();
            let value = new_value.unwrap_or_else(|| prev.as_ref().map(|p| p.value.clone()).unwrap_or_default());
            let prev_revision = prev.as_ref().map_or(0, |p| p.mod_revision);
            tx.prepare_cached(APPEND)
                .and_then(|mut st| {
                    st.execute(params![
                        key,
                        value,
                        prev.as_ref().map_or(0, |p| p.create_revision),
                        prev_revision,
                        deleted,
                    ])
                })
                .map_err(self.err("append"))?;
            let revision = tx.last_insert_rowid();
            if prev.is_none() {
                // A new incarnation is created by its own first write.
                tx.prepare_cached(SET_CREATED).and_then(|mut st| st.execute([revision])).map_err(self.err("append"))?;
            }
            let kv = KeyValue {
                key: key.clone(),
                value,
                create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                mod_revision: revision,
            };
            results.push(Ok(Event {
                kind: if deleted { EventKind::Delete } else { EventKind::Put },
                revision,
                kv,
                prev,
            }));
        }
        tx.commit().map_err(self.err("commit"))?;
        Ok(results)
    }
}

/// The most writes one transaction commits.
const MAX_GROUP: usize = 256;

/// A queued write and where its answer goes.
struct Request {
    key: String,
    op: Op,
    reply: mpsc::SyncSender<Result<Arc<Event>>>,
}

/// What a write does, given the key's live value.
enum Op {
    Create(Vec<u8>),
    /// With `expected`, only if the live value is at that revision.
    Update {
        value: Vec<u8>,
        expected: Option<i64>,
    },
    Delete {
        expected: Option<i64>,
    },
}

impl Op {
    /// The value to write (None: a deletion marker), or why not.
    fn decide(&self, key: &str, prev: Option<&KeyValue>) -> Result<Option<Vec<u8>>> {
        let check = |expected: &Option<i64>| match (prev, expected) {
            (None, _) => Err(StoreError::NotFound { key: key.to_string() }),
            (Some(p), Some(want)) if p.mod_revision != *want => {
                Err(StoreError::Conflict { key: key.to_string(), expected: *want, actual: p.mod_revision })
            }
            _ => Ok(()),
        };
        match self {
            Op::Create(value) => match prev {
                Some(_) => Err(StoreError::AlreadyExists { key: key.to_string() }),
                None => Ok(Some(value.clone())),
            },
            Op::Update { value, expected } => check(expected).map(|()| Some(value.clone())),
            Op::Delete { expected } => check(expected).map(|()| None),
        }
    }
}

impl Sqlite {
    /// Opens (creating if needed) the store in `path`, with a compactor thread.
    pub fn open(path: &Path, policy: CompactionPolicy) -> Result<Sqlite> {
        let err = |op| move |source| StoreError::Sqlite { path: path.display().to_string(), op, source };
        let writer = open_connection(path).map_err(err("open"))?;
        writer.execute_batch(SCHEMA).map_err(err("create schema"))?;
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            queue: Mutex::new(std::collections::VecDeque::new()),
            readers: Mutex::new(Vec::new()),
            events,
            stop: (Mutex::new(false), Condvar::new()),
        });
        let worker = shared.clone();
        let compactor = std::thread::Builder::new()
            .name("store-compactor".into())
            .spawn(move || compactor(worker, policy))
            .expect("spawning a thread");
        Ok(Sqlite { shared, compactor: Some(compactor) })
    }

    /// The file's size in pages now in use (page_count less the freelist), and the WAL's
    /// size in bytes: what compaction keeps bounded.
    pub fn footprint(&self) -> Result<(i64, u64)> {
        let s = &self.shared;
        let pages = s.read(|c| {
            c.query_row("SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count())", [], |r| r.get(0))
                .map_err(s.err("page count"))
        })?;
        let wal = std::fs::metadata(format!("{}-wal", s.path.display())).map(|m| m.len()).unwrap_or(0);
        Ok((pages, wal))
    }

    /// One compaction pass now, keeping the newest `retain` revisions.
    pub fn compact_keeping(&self, retain: i64) -> Result<()> {
        compact_keeping(&self.shared, retain)
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        let (lock, cv) = &self.shared.stop;
        *lock.lock().expect("stop flag") = true;
        cv.notify_all();
        if let Some(t) = self.compactor.take() {
            let _ = t.join();
        }
    }
}

fn compactor(shared: Arc<Shared>, policy: CompactionPolicy) {
    let mut rounds = super::Compactor::default();
    loop {
        let (lock, cv) = &shared.stop;
        let guard = lock.lock().expect("stop flag");
        let (guard, _) = cv.wait_timeout_while(guard, policy.interval, |stop| !*stop).expect("stop flag");
        if *guard {
            return;
        }
        drop(guard);
        let current = shared.read(|c| Shared::current(c).map_err(shared.err("current revision")));
        let done = current.and_then(|current| match rounds.horizon(current, policy.retain) {
            Some(horizon) => compact(&shared, horizon),
            None => Ok(()),
        });
        if let Err(err) = done {
            tracing::warn!(%err, "store compaction failed; will retry");
        }
    }
}

fn compact_keeping(shared: &Shared, retain: i64) -> Result<()> {
    let current = shared.read(|c| Shared::current(c).map_err(shared.err("current revision")))?;
    let horizon = current - retain;
    if horizon > 0 {
        compact(shared, horizon)?;
    }
    Ok(())
}

/// Drops history at or below `horizon`, in batches so that writers are never held up long.
/// The horizon is recorded first: from then on, reads before it are answered Compacted
/// rather than from half-compacted history. Superseded rows go first, deletion markers
/// after (a marker removed before the row it deletes would bring that row back); then
/// freed pages are returned and the WAL truncated.
fn compact(shared: &Shared, horizon: i64) -> Result<()> {
    {
        let conn = shared.writer.lock().expect("writer");
        if horizon <= Shared::compacted(&conn).map_err(shared.err("read horizon"))? {
            return Ok(());
        }
        conn.execute("INSERT INTO meta (name, value) VALUES ('compacted', ?1) ON CONFLICT(name) DO UPDATE SET value = excluded.value", [horizon])
            .map_err(shared.err("record horizon"))?;
    }
    const SUPERSEDED: &str = "DELETE FROM log WHERE revision IN (
        SELECT old.revision FROM log AS old
        WHERE old.revision <= ?1 AND EXISTS (
            SELECT 1 FROM log AS newer WHERE newer.key = old.key AND newer.revision > old.revision AND newer.revision <= ?1)
        LIMIT 1000)";
    const MARKERS: &str =
        "DELETE FROM log WHERE revision IN (SELECT revision FROM log WHERE revision <= ?1 AND deleted = 1 LIMIT 1000)";
    for statement in [SUPERSEDED, MARKERS] {
        loop {
            let removed =
                shared.writer.lock().expect("writer").execute(statement, [horizon]).map_err(shared.err("compact"))?;
            if removed == 0 {
                break;
            }
            std::thread::yield_now();
        }
    }
    let conn = shared.writer.lock().expect("writer");
    conn.execute_batch("PRAGMA incremental_vacuum;").map_err(shared.err("vacuum"))?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(shared.err("checkpoint"))
}

impl Backend for Sqlite {
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let s = &self.shared;
        s.read(|c| Ok(Shared::latest(c, key).map_err(s.err("get"))?.and_then(|(kv, deleted)| (!deleted).then_some(kv))))
    }

    fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize, revision: Option<i64>) -> Result<ListResult> {
        self.list_within(prefix, start_after, limit, usize::MAX, revision)
    }

    fn list_within(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        bytes: usize,
        revision: Option<i64>,
    ) -> Result<ListResult> {
        let s = &self.shared;
        s.read(|c| {
            // One snapshot for the revision checks and the rows.
            let tx = c.unchecked_transaction().map_err(s.err("begin read"))?;
            let current = Shared::current(&tx).map_err(s.err("current revision"))?;
            let at = revision.unwrap_or(current);
            let compacted = Shared::compacted(&tx).map_err(s.err("read horizon"))?;
            if at < compacted {
                return Err(StoreError::Compacted { requested: at, compacted });
            }
            if at > current {
                return Err(StoreError::FutureRevision { requested: at, current });
            }
            let lower = match start_after {
                Some(k) if k >= prefix => format!("{k}\u{1}"),
                _ => prefix.to_string(),
            };
            let fetch = if limit == 0 { -1 } else { limit as i64 + 1 };
            let mut stmt = tx.prepare_cached(LIST).map_err(s.err("list"))?;
            let rows = stmt.query_map(params![lower, prefix_end(prefix), at, fetch], kv_from).map_err(s.err("list"))?;
            let (mut items, mut size, mut more) = (Vec::new(), 0, false);
            // Rows are read as they are stepped to: the page stops reading where it ends.
            for row in rows {
                let kv = row.map_err(s.err("list"))?;
                if (limit != 0 && items.len() == limit) || (!items.is_empty() && size >= bytes) {
                    more = true;
                    break;
                }
                size += kv.value.len();
                items.push(kv);
            }
            Ok(ListResult { items, revision: at, more })
        })
    }

    fn count(&self, prefix: &str) -> Result<i64> {
        let s = &self.shared;
        s.read(|c| {
            let mut stmt = c.prepare_cached(COUNT).map_err(s.err("count"))?;
            stmt.query_row(params![prefix, prefix_end(prefix)], |r| r.get(0)).map_err(s.err("count"))
        })
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<i64> {
        Ok(self.shared.write(key, Op::Create(value.to_vec()))?.revision)
    }

    fn update(&self, key: &str, value: &[u8], expected: Option<i64>) -> Result<i64> {
        Ok(self.shared.write(key, Op::Update { value: value.to_vec(), expected })?.revision)
    }

    fn delete(&self, key: &str, expected: Option<i64>) -> Result<(i64, KeyValue)> {
        let e = self.shared.write(key, Op::Delete { expected })?;
        let prev = e.prev.clone().expect("a delete has a previous value");
        Ok((e.revision, prev))
    }

    fn current_revision(&self) -> Result<i64> {
        let s = &self.shared;
        s.read(|c| Shared::current(c).map_err(s.err("current revision")))
    }

    fn compacted_revision(&self) -> Result<i64> {
        let s = &self.shared;
        s.read(|c| Shared::compacted(c).map_err(s.err("read horizon")))
    }

    fn events_since(&self, prefix: &str, after: i64, limit: usize) -> Result<Vec<Event>> {
        let s = &self.shared;
        s.read(|c| {
            let tx = c.unchecked_transaction().map_err(s.err("begin read"))?;
            let compacted = Shared::compacted(&tx).map_err(s.err("read horizon"))?;
            if after < compacted {
                return Err(StoreError::Compacted { requested: after, compacted });
            }
            let mut stmt = tx.prepare_cached(EVENTS).map_err(s.err("read log"))?;
            let rows = stmt
                .query_map(
                    params![after, prefix, prefix_end(prefix), if limit == 0 { -1 } else { limit as i64 }],
                    |r| {
                        let kv = kv_from(r)?;
                        let deleted: bool = r.get("deleted")?;
                        let prev = match r.get::<_, Option<i64>>("p_revision")? {
                            Some(rev) => Some(KeyValue {
                                key: kv.key.clone(),
                                value: r.get("p_value")?,
                                create_revision: r.get("p_create")?,
                                mod_revision: rev,
                            }),
                            None => None,
                        };
                        Ok(Event {
                            kind: if deleted { EventKind::Delete } else { EventKind::Put },
                            revision: kv.mod_revision,
                            kv,
                            prev,
                        })
                    },
                )
                .map_err(s.err("read log"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(s.err("read log"))
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.shared.events.subscribe()
    }

    fn compact(&self, revision: i64) -> Result<()> {
        compact(&self.shared, revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each statement is compiled once per connection, whatever the values bound: SQLite
    /// 3.54 without the planner's stability guarantee compiled LATEST and LIST again on
    /// every run.
    #[test]
    fn statements_are_not_compiled_again_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let policy = CompactionPolicy { retain: 1_000_000, interval: Duration::from_secs(3600) };
        let store = Sqlite::open(&dir.path().join("state.db"), policy).unwrap();
        for i in 0..5 {
            let key = format!("/k/{i}");
            let rev = store.create(&key, b"a").unwrap();
            store.update(&key, b"b", Some(rev)).unwrap();
            assert!(store.get(&key).unwrap().is_some());
            store.list("/k/", None, 2 + i, None).unwrap();
            store.count("/k/").unwrap();
            store.events_since("/k/", i as i64, 3 + i).unwrap();
        }
        let s = &store.shared;
        let check = |conn: &Connection, statements: &[(&str, i32)]| {
            for &(sql, runs) in statements {
                let st = conn.prepare_cached(sql).unwrap();
                assert_eq!(st.get_status(rusqlite::StatementStatus::Run), runs, "{sql}");
                assert_eq!(st.get_status(rusqlite::StatementStatus::RePrepare), 0, "{sql}");
            }
        };
        check(&s.writer.lock().unwrap(), &[(LATEST, 10), (APPEND, 10), (SET_CREATED, 5)]);
        let readers = s.readers.lock().unwrap();
        assert_eq!(readers.len(), 1, "one reader served every read");
        check(&readers[0], &[(LATEST, 5), (LIST, 5), (COUNT, 5), (EVENTS, 5)]);
    }
}
