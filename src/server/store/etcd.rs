//! The store on an etcd cluster, for several control-plane machines (docs/architecture.md, decision 9).
//!
//! etcd keeps the same revision log the SQLite store keeps, so its revisions are ours:
//! mod_revision and create_revision of a key, the header revision of a write. Conditional
//! writes are transactions on those revisions. History is read back through watches that
//! start at a revision, and compaction is etcd's own.
//!
//! [`Backend`] is synchronous (the API calls it from `spawn_blocking`), while etcd-client is
//! async: the store owns a small tokio runtime, runs each call there and waits for the
//! answer on a plain channel, so that it neither needs nor blocks the caller's runtime.
//!
//! Calls go to any of the given members. A call whose request cannot have been applied
//! (no connection could be made, the member has no leader) is tried again until
//! [`RETRY_WINDOW`] runs out; reads are also tried again after any transport failure. A
//! write whose connection broke mid-call is not repeated: it may have been applied, and a
//! second attempt would answer AlreadyExists or Conflict for the caller's own write.
//!
//! https:// members are reached over TLS ([`Tls`]): etcd-client's own, rustls on aws-lc-rs.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Identity, KvClient,
    TlsOptions, TxnOp, TxnOpResponse, WatchClient, WatchOptions,
};
use tokio::sync::broadcast;

use super::{
    Backend, CompactionPolicy, Event, EventKind, KeyValue, ListResult, Result, StoreError, check_key, prefix_end,
};

/// How long one request may take before the member is taken for gone.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call keeps trying other members (an election takes about a second).
const RETRY_WINDOW: Duration = Duration::from_secs(20);
/// Events the live feed buffers for slow subscribers (they fall back to the log beyond).
const FEED_BUFFER: usize = 4096;
/// The largest answer taken: a list or a watch batch holds many objects, far beyond the
/// client's 4 MiB default (kube-apiserver's etcd client takes up to this too).
const MAX_ANSWER: usize = i32::MAX as usize;

// etcd's answers for reads outside the log (its rpctypes; codes.OutOfRange).
const ERR_COMPACTED: &str = "required revision has been compacted";
const ERR_FUTURE: &str = "required revision is a future revision";
/// Refused by a member before proposing anything (codes.Unavailable): safe to repeat.
const ERR_NO_LEADER: &str = "etcdserver: no leader";

/// Whether a failed call may be sent again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Reads, and compaction: repeating them changes nothing.
    Idempotent,
    /// Writes: repeated only when etcd cannot have applied them.
    Mutation,
}

/// TLS toward https:// members, as kube-apiserver's `--etcd-cafile`, `--etcd-certfile` and
/// `--etcd-keyfile`: PEM text, read and checked by the caller.
#[derive(Clone, Default)]
pub struct Tls {
    /// The certificates of the CAs that sign the members' serving certificates. None: the
    /// system's roots, as kube-apiserver (Go's TLS) trusts without `--etcd-cafile`.
    pub ca: Option<Vec<u8>>,
    /// A client certificate (chain) and its key, for members that ask for one
    /// (`--client-cert-auth`).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl Tls {
    fn options(self) -> TlsOptions {
        let options = match self.ca {
            Some(ca) => TlsOptions::new().ca_certificate(Certificate::from_pem(ca)),
            None => TlsOptions::new().with_native_roots(),
        };
        match self.identity {
            Some((cert, key)) => options.identity(Identity::from_pem(cert, key)),
            None => options,
        }
    }
}

pub struct Etcd {
    shared: Arc<Shared>,
    runtime: Runtime,
}

/// The store's own runtime, shut down without waiting: the store may be dropped inside
/// another runtime, where blocking is not allowed. The feed and compactor tasks end with it.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl std::ops::Deref for Runtime {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("present until dropped")
    }
}

struct Shared {
    /// The members, as given, for messages.
    endpoints: String,
    clients: Clients,
    /// The live feed. Replaced when the feed lost events it cannot replay (compacted while
    /// it was disconnected): subscribers of the old one see it close and go to the log,
    /// which answers Compacted.
    feed: Mutex<broadcast::Sender<Arc<Event>>>,
}

/// Handles on one connection to the cluster; cheap to clone, one per attempt.
#[derive(Clone)]
struct Clients {
    kv: KvClient,
    watch: WatchClient,
}

impl Etcd {
    /// Connects to the cluster at `endpoints` (`http://host:port`), waits until it answers,
    /// and starts the live feed and the compactor.
    pub fn connect(endpoints: &[String], policy: CompactionPolicy) -> Result<Etcd> {
        Etcd::connect_with(endpoints, None, policy)
    }

    /// As [`Etcd::connect`], with `tls` for https:// members (the system's roots and no
    /// client certificate when None). etcd-client takes one TLS setting for all members: it
    /// is used when they are all https://, and plain members are reached without it (as
    /// kube-apiserver uses its TLS files for https:// members only); the caller refuses a
    /// mix of the two.
    pub fn connect_with(endpoints: &[String], tls: Option<Tls>, policy: CompactionPolicy) -> Result<Etcd> {
        let runtime = Runtime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("etcd-store")
                .enable_all()
                .build()
                .expect("building the etcd store's runtime"),
        ));
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            // A member that vanished without closing its connections is noticed.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            // A member cut off from the others refuses, rather than serving a stale watch.
            .with_require_leader(true);
        let all_https = endpoints.iter().all(|e| e.starts_with("https://"));
        let options = if all_https { options.with_tls(tls.unwrap_or_default().options()) } else { options };
        let names = endpoints.join(",");
        let eps = endpoints.to_vec();
        let err_names = names.clone();
        let client = wait(&runtime, async move {
            Client::connect(eps, Some(options)).await.map_err(|source| StoreError::Etcd {
                endpoints: err_names,
                op: "connect",
                source,
            })
        })?;
        let (feed, _) = broadcast::channel(FEED_BUFFER);
        let clients = Clients {
            kv: client.kv_client().max_decoding_message_size(MAX_ANSWER),
            watch: client.watch_client().max_decoding_message_size(MAX_ANSWER),
        };
        let shared = Arc::new(Shared { endpoints: names, clients, feed: Mutex::new(feed) });
        let s = shared.clone();
        // Also proves that the cluster answers before the server says it is ready.
        let start = wait(&runtime, async move { s.current().await })?;
        runtime.spawn(follow(shared.clone(), start + 1));
        runtime.spawn(compactor(shared.clone(), policy));
        Ok(Etcd { shared, runtime })
    }

    /// Runs `f` on the store's runtime and waits for it.
    fn run<T, F>(&self, f: impl FnOnce(Arc<Shared>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        wait(&self.runtime, f(self.shared.clone()))
    }
}

/// Runs `fut` on `runtime` and waits for it on a plain channel: unlike `block_on`, this
/// works from any thread, inside another runtime too.
fn wait<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    fut: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    // The sender is gone without an answer only if the runtime shut down.
    rx.recv().unwrap_or(Err(StoreError::Closed))
}

/// Safe to send again: etcd cannot have applied it.
fn never_applied(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            (s.code() == tonic::Code::Unavailable && s.message().contains(ERR_NO_LEADER)) || refused_connection(s)
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// tonic reports a connection that could not be made as Unavailable with the connect
/// error as its source; nothing was sent then. (A dead member stays among the client's
/// endpoints, so calls keep meeting this until it is back.)
fn refused_connection(s: &tonic::Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Worth another try for a read: the member or the connection failed, not the request.
fn transient(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            matches!(
                s.code(),
                Code::Unavailable
                    | Code::Unknown
                    | Code::Internal
                    | Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::Aborted
            )
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) | etcd_client::Error::WatchError(_) => {
            true
        }
        _ => false,
    }
}

fn out_of_range(e: &StoreError, what: &str) -> bool {
    matches!(e, StoreError::Etcd { source: etcd_client::Error::GRpcStatus(s), .. }
        if s.code() == tonic::Code::OutOfRange && s.message().contains(what))
}

/// Our keys are printable ASCII ([`check_key`]); anything else in etcd is not ours.
fn key_of(kv: &etcd_client::KeyValue) -> Option<String> {
    std::str::from_utf8(kv.key()).ok().filter(|k| check_key(k).is_ok()).map(str::to_string)
}

fn convert(kv: &etcd_client::KeyValue) -> Option<KeyValue> {
    Some(KeyValue {
        key: key_of(kv)?,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// An etcd watch event as ours: a delete carries the value deleted, as the log's does.
fn event_of(e: &etcd_client::Event) -> Option<Event> {
    let kv = e.kv()?;
    let prev = e.prev_kv().and_then(convert);
    let revision = kv.mod_revision();
    match e.event_type() {
        EventType::Put => Some(Event { kind: EventKind::Put, revision, kv: convert(kv)?, prev }),
        EventType::Delete => {
            let (value, create_revision) =
                prev.as_ref().map_or((Vec::new(), 0), |p| (p.value.clone(), p.create_revision));
            Some(Event {
                kind: EventKind::Delete,
                revision,
                kv: KeyValue { key: key_of(kv)?, value, create_revision, mod_revision: revision },
                prev,
            })
        }
    }
}

impl Shared {
    fn err(&self, op: &'static str) -> impl FnOnce(etcd_client::Error) -> StoreError + '_ {
        move |source| StoreError::Etcd { endpoints: self.endpoints.clone(), op, source }
    }

    /// One logical call: `attempt` is run with a fresh client handle until it succeeds, fails
    /// for good, or [`RETRY_WINDOW`] is over (see the module's notes on what is repeated).
    async fn call<T, F, Fut>(&self, op: &'static str, kind: Kind, mut attempt: F) -> Result<T>
    where
        F: FnMut(Clients) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let start = Instant::now();
        // The first retry at once: it usually goes to another member.
        let mut pause = Duration::ZERO;
        loop {
            let again = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt(self.clients.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    let retry = never_applied(&e) || (kind == Kind::Idempotent && transient(&e));
                    if !retry || start.elapsed() + pause > RETRY_WINDOW {
                        return Err(self.err(op)(e));
                    }
                    tracing::debug!(op, err = %e, "etcd call failed; trying again");
                    true
                }
                // A write that timed out may still be applied: not repeated.
                Err(_) => kind == Kind::Idempotent && start.elapsed() + pause <= RETRY_WINDOW,
            };
            if !again {
                return Err(StoreError::EtcdUnreachable {
                    endpoints: self.endpoints.clone(),
                    op,
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).clamp(Duration::from_millis(20), Duration::from_secs(1));
        }
    }

    /// A linearizable read of the store's revision (any range answers with it).
    async fn current(&self) -> Result<i64> {
        self.call("read revision", Kind::Idempotent, |mut c| async move {
            let r = c.kv.get("\0", Some(GetOptions::new().with_count_only())).await?;
            Ok(r.header().map_or(0, |h| h.revision()))
        })
        .await
    }

    /// Whether the log still holds revision `rev` (a read there is refused below etcd's
    /// compaction revision).
    async fn readable_at(&self, rev: i64) -> Result<bool> {
        let at = self.call("probe revision", Kind::Idempotent, |mut c| async move {
            c.kv.get("\0", Some(GetOptions::new().with_count_only().with_revision(rev))).await.map(|_| ())
        });
        match at.await {
            Ok(()) => Ok(true),
            Err(e) if out_of_range(&e, ERR_COMPACTED) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// etcd's compaction revision. etcd 3.4 has no call that reports it, but a read at a
    /// revision fails exactly when it lies below, so it is found by bisection (a few
    /// count-only reads). 0 when nothing was compacted.
    async fn compacted(&self) -> Result<i64> {
        if self.readable_at(1).await? {
            return Ok(0);
        }
        // Invariant: `lo` is compacted, `hi` is readable (the current revision always is).
        let (mut lo, mut hi) = (1, self.current().await?);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.readable_at(mid).await? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(hi)
    }

    /// Maps a refused read at `rev` to Compacted or FutureRevision, as the SQLite store answers.
    async fn explain(&self, e: StoreError, rev: i64) -> StoreError {
        let explained = if out_of_range(&e, ERR_COMPACTED) {
            self.compacted().await.map(|compacted| StoreError::Compacted { requested: rev, compacted })
        } else if out_of_range(&e, ERR_FUTURE) {
            self.current().await.map(|current| StoreError::FutureRevision { requested: rev, current })
        } else {
            return e;
        };
        explained.unwrap_or(e)
    }

    /// `prev` if the key's current value is `expected` (or the key exists, without one):
    /// the compare of a conditional write, as one etcd transaction.
    fn guard(key: &str, expected: Option<i64>) -> Vec<Compare> {
        let mut when = vec![Compare::create_revision(key, CompareOp::Greater, 0)];
        if let Some(rev) = expected {
            when.push(Compare::mod_revision(key, CompareOp::Equal, rev));
        }
        when
    }

    /// Why a guarded write was refused, from the key as the transaction's else branch read it.
    fn refusal(key: &str, expected: Option<i64>, read: &[TxnOpResponse]) -> StoreError {
        let current = read.iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        });
        match (current, expected) {
            (Some(actual), Some(expected)) => StoreError::Conflict { key: key.to_string(), expected, actual },
            _ => StoreError::NotFound { key: key.to_string() },
        }
    }

    /// Logged events under `prefix` after `after`, through a watch over all keys that starts
    /// at `after` (etcd then refuses exactly when the SQLite log would: `after` below the
    /// compaction revision). All keys, because the read ends at the current revision, and
    /// only a watch over every key is sure to deliver an event at that revision.
    async fn history(&self, prefix: &str, after: i64, limit: usize) -> Result<Vec<Event>> {
        let until = self.current().await?;
        // Revision 1 is etcd's empty start; every later one is a write with events.
        if until <= after.max(1) {
            return Ok(Vec::new());
        }
        let end = prefix_end(prefix);
        let (p, e) = (prefix.to_string(), end.clone());
        let read = self.call("read history", Kind::Idempotent, |mut c| {
            let (prefix, end) = (p.clone(), e.clone());
            async move {
                let options = WatchOptions::new().with_all_keys().with_prev_key().with_start_revision(after.max(1));
                let mut stream = c.watch.watch("\0", Some(options)).await?;
                let mut out: Vec<Event> = Vec::new();
                loop {
                    let Some(resp) = stream.message().await? else {
                        return Err(etcd_client::Error::WatchError("the history watch ended early".into()));
                    };
                    if resp.canceled() {
                        return Ok(Err(resp.compact_revision()));
                    }
                    for ev in resp.events() {
                        let rev = ev.kv().map_or(0, |kv| kv.mod_revision());
                        let full = limit != 0 && out.len() >= limit;
                        // A revision's events are not split between two answers.
                        if rev > until || (full && out.last().is_some_and(|l| l.revision != rev)) {
                            return Ok(Ok(out));
                        }
                        if let Some(e) =
                            event_of(ev).filter(|e| e.revision > after && e.kv.key >= prefix && e.kv.key < end)
                        {
                            out.push(e);
                        }
                    }
                    // etcd sends a revision's events in one answer: at `until`, all is seen.
                    if resp.events().last().and_then(|ev| ev.kv()).is_some_and(|kv| kv.mod_revision() >= until) {
                        return Ok(Ok(out));
                    }
                }
            }
        });
        match read.await? {
            Ok(events) => Ok(events),
            Err(compacted) if compacted > 0 => Err(StoreError::Compacted { requested: after, compacted }),
            Err(_) => Err(StoreError::Etcd {
                endpoints: self.endpoints.clone(),
                op: "read history",
                source: etcd_client::Error::WatchError("etcd cancelled the watch".into()),
            }),
        }
    }

    fn send(&self, event: Event) {
        // No receiver is not an error.
        let _ = self.feed.lock().expect("feed").send(Arc::new(event));
    }
}

/// The live feed: one watch over every key from revision `next` on, resumed from the last
/// revision seen whenever the connection or the member fails.
async fn follow(shared: Arc<Shared>, mut next: i64) {
    let mut pause = Duration::from_millis(20);
    loop {
        let mut client = shared.clients.watch.clone();
        let options = WatchOptions::new().with_all_keys().with_prev_key().with_start_revision(next);
        let ended = match client.watch("\0", Some(options)).await {
            Err(e) => format!("starting the watch: {e}"),
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(resp)) if resp.canceled() && resp.compact_revision() > 0 => {
                        // The events between are gone: subscribers must hear it.
                        tracing::warn!(
                            from = next,
                            compacted = resp.compact_revision(),
                            "the etcd feed missed compacted events"
                        );
                        *shared.feed.lock().expect("feed") = broadcast::channel(FEED_BUFFER).0;
                        next = resp.compact_revision();
                        break "compacted".to_string();
                    }
                    Ok(Some(resp)) if resp.canceled() => break format!("cancelled: {}", resp.cancel_reason()),
                    Ok(Some(resp)) => {
                        for ev in resp.events() {
                            if let Some(kv) = ev.kv() {
                                next = kv.mod_revision() + 1;
                            }
                            if let Some(e) = event_of(ev) {
                                shared.send(e);
                            }
                        }
                        pause = Duration::from_millis(20);
                    }
                    Ok(None) => break "the stream ended".to_string(),
                    Err(e) => break e.to_string(),
                }
            },
        };
        tracing::debug!(next, %ended, "etcd feed interrupted; resuming");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Keeps history as the SQLite store's compactor does ([`super::Compactor`]). Several
/// servers on one cluster each run one; compacting to where another already went is a no-op.
async fn compactor(shared: Arc<Shared>, policy: CompactionPolicy) {
    let mut tick = tokio::time::interval(policy.interval);
    let mut rounds = super::Compactor::default();
    tick.tick().await;
    loop {
        tick.tick().await;
        let horizon = match shared.current().await {
            Ok(current) => rounds.horizon(current, policy.retain),
            Err(err) => {
                tracing::warn!(%err, "store compaction failed; will retry");
                continue;
            }
        };
        if let Some(horizon) = horizon
            && let Err(err) = compact(&shared, horizon).await
        {
            tracing::warn!(%err, "store compaction failed; will retry");
        }
    }
}

async fn compact(shared: &Shared, revision: i64) -> Result<()> {
    let done =
        shared.call("compact", Kind::Idempotent, |mut c| async move { c.kv.compact(revision, None).await.map(|_| ()) });
    match done.await {
        Ok(()) => Ok(()),
        // Already compacted there or beyond.
        Err(e) if out_of_range(&e, ERR_COMPACTED) => Ok(()),
        Err(e) => Err(shared.explain(e, revision).await),
    }
}

impl Backend for Etcd {
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.run(|s| async move {
            let r = s
                .call("get", Kind::Idempotent, |mut c| {
                    let key = key.clone();
                    async move { c.kv.get(key, None).await }
                })
                .await?;
            Ok(r.kvs().first().and_then(convert))
        })
    }

    fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize, revision: Option<i64>) -> Result<ListResult> {
        let mut lower = match start_after {
            // The next key after it (keys hold no NUL).
            Some(k) if k >= prefix => format!("{k}\0"),
            _ => prefix.to_string(),
        };
        if lower.is_empty() {
            lower.push('\0');
        }
        let end = prefix_end(prefix);
        self.run(move |s| async move {
            if let Some(at) = revision.filter(|r| *r < 1) {
                // Before the first write: nothing existed (etcd would read 0 as "now").
                let compacted = s.compacted().await?;
                if at < compacted {
                    return Err(StoreError::Compacted { requested: at, compacted });
                }
                return Ok(ListResult { items: Vec::new(), revision: at, more: false });
            }
            let options = GetOptions::new()
                .with_range(end.as_bytes())
                .with_limit(limit as i64)
                .with_revision(revision.unwrap_or(0));
            let r = s.call("list", Kind::Idempotent, |mut c| {
                let (lower, options) = (lower.clone(), options.clone());
                async move { c.kv.get(lower, Some(options)).await }
            });
            let r = match r.await {
                Ok(r) => r,
                Err(e) => return Err(s.explain(e, revision.unwrap_or(0)).await),
            };
            let items = r.kvs().iter().filter_map(convert).collect();
            Ok(ListResult {
                items,
                revision: revision.unwrap_or_else(|| r.header().map_or(0, |h| h.revision())),
                more: r.more(),
            })
        })
    }

    fn count(&self, prefix: &str) -> Result<i64> {
        let (lower, end) = (prefix.to_string(), prefix_end(prefix));
        self.run(move |s| async move {
            let r = s
                .call("count", Kind::Idempotent, |mut c| {
                    let options = GetOptions::new().with_range(end.as_bytes()).with_count_only();
                    let lower = lower.clone();
                    async move { c.kv.get(lower, Some(options)).await }
                })
                .await?;
            Ok(r.count())
        })
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<i64> {
        check_key(key)?;
        let (key, value) = (key.to_string(), value.to_vec());
        self.run(|s| async move {
            let txn = etcd_client::Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), value, None)]);
            let r = s.call("create", Kind::Mutation, |mut c| {
                let txn = txn.clone();
                async move { c.kv.txn(txn).await }
            });
            let r = r.await?;
            if !r.succeeded() {
                return Err(StoreError::AlreadyExists { key });
            }
            Ok(r.header().map_or(0, |h| h.revision()))
        })
    }

    fn update(&self, key: &str, value: &[u8], expected: Option<i64>) -> Result<i64> {
        check_key(key)?;
        let (key, value) = (key.to_string(), value.to_vec());
        self.run(move |s| async move {
            let txn = etcd_client::Txn::new()
                .when(Shared::guard(&key, expected))
                .and_then([TxnOp::put(key.as_str(), value, None)])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let r = s.call("update", Kind::Mutation, |mut c| {
                let txn = txn.clone();
                async move { c.kv.txn(txn).await }
            });
            let r = r.await?;
            if !r.succeeded() {
                return Err(Shared::refusal(&key, expected, &r.op_responses()));
            }
            Ok(r.header().map_or(0, |h| h.revision()))
        })
    }

    fn delete(&self, key: &str, expected: Option<i64>) -> Result<(i64, KeyValue)> {
        check_key(key)?;
        let key = key.to_string();
        self.run(move |s| async move {
            let txn = etcd_client::Txn::new()
                .when(Shared::guard(&key, expected))
                .and_then([TxnOp::delete(key.as_str(), Some(DeleteOptions::new().with_prev_key()))])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let r = s.call("delete", Kind::Mutation, |mut c| {
                let txn = txn.clone();
                async move { c.kv.txn(txn).await }
            });
            let r = r.await?;
            let ops = r.op_responses();
            if !r.succeeded() {
                return Err(Shared::refusal(&key, expected, &ops));
            }
            let prev = ops.iter().find_map(|o| match o {
                TxnOpResponse::Delete(d) => d.prev_kvs().first().and_then(convert),
                _ => None,
            });
            // The guard held, so the key existed and was deleted with its value.
            let prev = prev.ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
            Ok((r.header().map_or(0, |h| h.revision()), prev))
        })
    }

    fn current_revision(&self) -> Result<i64> {
        self.run(|s| async move { s.current().await })
    }

    fn compacted_revision(&self) -> Result<i64> {
        self.run(|s| async move { s.compacted().await })
    }

    fn events_since(&self, prefix: &str, after: i64, limit: usize) -> Result<Vec<Event>> {
        let prefix = prefix.to_string();
        self.run(move |s| async move { s.history(&prefix, after, limit).await })
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.shared.feed.lock().expect("feed").subscribe()
    }

    fn compact(&self, revision: i64) -> Result<()> {
        self.run(move |s| async move { compact(&s, revision).await })
    }
}
