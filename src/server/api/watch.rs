//! `?watch=true`: newline-delimited JSON events (ADDED, MODIFIED, DELETED, ERROR) over a
//! chunked response, as client-go reads them.
//!
//! With no resourceVersion (or "0") the watch starts with an ADDED event for every object
//! there is now, then follows; with an exact one it replays what came after it. A
//! compacted revision ends the stream with an ERROR event carrying a 410 Status, which is
//! what the API server sends and what makes clients list again.
//!
//! With `allowWatchBookmarks=true`, a BOOKMARK (an object with only kind, apiVersion and
//! metadata.resourceVersion) comes every minute and once more when the watch times out,
//! carrying a revision up to which the client has seen everything, so that it resumes from
//! there and not from an older one that compaction may have removed.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::status::ApiError;
use crate::server::registry::objects::{Store, blocking, decode_as};
use crate::server::registry::raw;
use crate::server::registry::resources::Resource;
use crate::server::registry::selectors::Selectors;
use crate::server::store::{self, Backend, EventKind, KeyValue, Watcher};

/// The API server's default: requests end after at most half an hour; clients re-watch.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// The longest watch a client may ask for (`timeoutSeconds` is the client's number: near
/// u64::MAX it overflowed the deadline's Instant, and a panic ended the server).
pub const MAX_TIMEOUT_SECONDS: u64 = 24 * 3600;
/// How often a bookmark is sent, as the API server's watch cache does.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

fn bookmark(r: &Resource, revision: i64) -> Bytes {
    line(
        "BOOKMARK",
        json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": {"resourceVersion": revision.to_string()}}),
    )
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut v = json!({"type": kind, "object": object}).to_string().into_bytes();
    v.push(b'\n');
    Bytes::from(v)
}

/// A write as the watchers of one resource see it: written out in the watched version
/// once, and its line made once per event type, however many watchers send it.
struct Sent {
    /// The watched resource's address (a `'static` Resource: its identity).
    resource: usize,
    /// As stored, with the write's revision. The bytes are compared in full on a hit: two
    /// stores in one process (tests) may share a revision and a key.
    kv: KeyValue,
    /// The object as sent, in JSON ([`raw::write_object`]: the stored bytes with the
    /// resourceVersion added, unless it needs converting).
    json: Vec<u8>,
    /// What selectors read of it ([`raw::selectable`]), made for the first watcher that has
    /// selectors.
    view: std::sync::OnceLock<Result<Value, String>>,
    lines: [std::sync::OnceLock<Bytes>; 3],
}

/// How many recent writes are kept decoded: enough for every watcher of a burst to find
/// its write, small enough to cost nothing.
const RECENT: usize = 256;

fn recent() -> &'static std::sync::Mutex<std::collections::VecDeque<Arc<Sent>>> {
    static RECENT_SENT: std::sync::OnceLock<std::sync::Mutex<std::collections::VecDeque<Arc<Sent>>>> =
        std::sync::OnceLock::new();
    RECENT_SENT.get_or_init(Default::default)
}

/// `e` as `r`'s watchers send it, written out by the first of them to ask.
fn sent(r: &'static Resource, e: &store::Event) -> Result<Arc<Sent>, ApiError> {
    let resource = std::ptr::from_ref(r) as usize;
    let same = |s: &Sent| s.resource == resource && s.kv.mod_revision == e.revision && s.kv.value == e.kv.value;
    if let Some(s) = recent().lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().rev().find(|s| same(s)) {
        return Ok(s.clone());
    }
    let kv = KeyValue { mod_revision: e.revision, ..e.kv.clone() };
    let mut json = Vec::with_capacity(kv.value.len() + 32);
    raw::write_object(r, &kv, &mut json).map_err(ApiError::from)?;
    let s = Arc::new(Sent { resource, kv, json, view: Default::default(), lines: Default::default() });
    let mut recent = recent().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if recent.len() >= RECENT {
        recent.pop_front();
    }
    recent.push_back(s.clone());
    Ok(s)
}

impl Sent {
    fn line(&self, kind: &'static str) -> Bytes {
        let slot = match kind {
            "ADDED" => &self.lines[0],
            "MODIFIED" => &self.lines[1],
            _ => &self.lines[2],
        };
        slot.get_or_init(|| {
            let mut v = Vec::with_capacity(self.json.len() + 32);
            v.extend_from_slice(b"{\"type\":\"");
            v.extend_from_slice(kind.as_bytes());
            v.extend_from_slice(b"\",\"object\":");
            v.extend_from_slice(&self.json);
            v.extend_from_slice(b"}\n");
            Bytes::from(v)
        })
        .clone()
    }

    /// Whether `selectors` select it.
    fn selected(&self, r: &'static Resource, selectors: &Selectors) -> Result<bool, ApiError> {
        if selectors.is_empty() {
            return Ok(true);
        }
        let view = self.view.get_or_init(|| raw::selectable(r, &self.kv).map_err(|e| e.to_string()));
        view.as_ref().map(|v| selectors.matches(v)).map_err(|e| ApiError::internal(e.clone()))
    }

    /// The whole object, for a watcher that sends Tables.
    fn object(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.json).map_err(|e| ApiError::internal(format!("an object sent: {e}")))
    }
}

enum Phase {
    Initial(std::vec::IntoIter<Value>, Live),
    Live(Live),
    Done,
}

/// A watcher, the selectors its events pass through, and how objects are sent.
struct Live {
    watcher: Watcher<dyn Backend>,
    /// The resource watched: objects are sent in its version.
    resource: &'static Resource,
    selectors: Arc<Selectors>,
    /// Each object as a one-row Table (kubectl get -w), columns in the first only.
    table: Option<(&'static Resource, bool)>,
    /// When the watch ends (timeoutSeconds).
    deadline: tokio::time::Instant,
    /// Where bookmarks go, if the client allows them: its resource, and the next one due.
    bookmarks: Option<(&'static Resource, tokio::time::Instant)>,
}

impl Live {
    fn event(&mut self, kind: &str, obj: Value) -> Bytes {
        match &mut self.table {
            None => line(kind, obj),
            Some((r, columns_sent)) => {
                let t = super::table::table(
                    r,
                    std::slice::from_ref(&obj),
                    obj["metadata"]["resourceVersion"].as_str(),
                    None,
                    !*columns_sent,
                );
                *columns_sent = true;
                line(kind, t)
            }
        }
    }

    /// A live write's event: its shared line, or a Table row of its own.
    fn live_event(&mut self, kind: &'static str, sent: &Sent) -> Result<Bytes, ApiError> {
        match self.table {
            None => Ok(sent.line(kind)),
            Some(_) => Ok(self.event(kind, sent.object()?)),
        }
    }
}

/// What a watch request asks for, from its query.
pub struct WatchOptions {
    pub resource_version: Option<String>,
    pub timeout: Option<u64>,
    pub selectors: Selectors,
    /// As Table rows (kubectl get -w).
    pub as_table: bool,
    pub allow_bookmarks: bool,
}

pub async fn watch(
    store: Store,
    r: &'static Resource,
    ns: Option<String>,
    opts: WatchOptions,
) -> Result<Response, ApiError> {
    let WatchOptions { resource_version, timeout, selectors, as_table, allow_bookmarks } = opts;
    let selectors = Arc::new(selectors);
    let prefix = r.key(ns.as_deref(), None);
    let (initial, from) = match resource_version.as_deref() {
        None | Some("") | Some("0") => {
            let (s, p) = (store.clone(), prefix.clone());
            let list =
                blocking(move || s.list(&p, None, 0, None).map_err(|e| ApiError::from_store(e, r.plural, ""))).await?;
            let mut items = list.items.iter().map(|kv| decode_as(r, kv)).collect::<Result<Vec<_>, _>>()?;
            items.retain(|o| selectors.matches(o));
            (items, list.revision)
        }
        Some(v) => {
            (Vec::new(), v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?)
        }
    };
    let (s, p) = (store.clone(), prefix.clone());
    // Starting a watch reads the store's revisions: off the async workers.
    let started =
        tokio::task::spawn_blocking(move || crate::sys::unwind::unwinding(|| store::watch(s, &p, Some(from))))
            .await
            .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?;
    let now = tokio::time::Instant::now();
    let wanted = timeout.map(|t| Duration::from_secs(t.min(MAX_TIMEOUT_SECONDS))).unwrap_or(DEFAULT_TIMEOUT);
    let deadline = now.checked_add(wanted).unwrap_or(now + DEFAULT_TIMEOUT);
    let bookmarks = (allow_bookmarks && !as_table).then_some((r, now + BOOKMARK_EVERY));
    let first = match started {
        Ok(watcher) => Phase::Initial(
            initial.into_iter(),
            Live { watcher, resource: r, selectors, table: as_table.then_some((r, false)), deadline, bookmarks },
        ),
        Err(e) => {
            // Sent as an event in a 200 response, as the API server does.
            let status = ApiError::from_store(e, r.plural, "").to_status();
            let body = Body::from(line("ERROR", status));
            return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response());
        }
    };
    let events = futures_util::stream::unfold(first, |phase| async move {
        match phase {
            Phase::Initial(mut items, mut live) => match items.next() {
                Some(obj) => Some((live.event("ADDED", obj), Phase::Initial(items, live))),
                None => next_live(live).await,
            },
            Phase::Live(w) => next_live(w).await,
            Phase::Done => None,
        }
    });
    let events = events.map(Ok::<_, std::convert::Infallible>);
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(events)).into_response())
}

/// The next event that passes the selectors. An object that starts or stops matching
/// arrives as ADDED or DELETED, as the API server reports it to a filtered watch.
async fn next_live(mut live: Live) -> Option<(Bytes, Phase)> {
    loop {
        let bookmark_due = live.bookmarks.map(|(_, at)| at.min(live.deadline)).unwrap_or(live.deadline);
        // Watcher::next is cancel-safe: a timer that wins loses no event.
        let next = tokio::select! {
            next = live.watcher.next() => next,
            _ = tokio::time::sleep_until(bookmark_due) => {
                let ended = tokio::time::Instant::now() >= live.deadline;
                return match live.bookmarks {
                    Some((r, _)) => {
                        let mark = bookmark(r, live.watcher.progress());
                        live.bookmarks = Some((r, tokio::time::Instant::now() + BOOKMARK_EVERY));
                        Some((mark, if ended { Phase::Done } else { Phase::Live(live) }))
                    }
                    None => None,
                };
            }
        };
        let e = match next {
            Ok(e) => e,
            Err(err) => return Some((line("ERROR", ApiError::from_store(err, "", "").to_status()), Phase::Done)),
        };
        let sent = match sent(live.resource, &e) {
            Ok(s) => s,
            Err(err) => return Some((line("ERROR", err.to_status()), Phase::Done)),
        };
        let now = match sent.selected(live.resource, &live.selectors) {
            Ok(now) => now,
            Err(err) => return Some((line("ERROR", err.to_status()), Phase::Done)),
        };
        let before = match &e.prev {
            Some(p) if !live.selectors.is_empty() => {
                raw::selectable(live.resource, p).map(|o| live.selectors.matches(&o)).unwrap_or(false)
            }
            Some(_) => true,
            None => false,
        };
        let kind = match (e.kind, before, now) {
            (EventKind::Delete, _, true) => "DELETED",
            (EventKind::Put, true, true) => "MODIFIED",
            (EventKind::Put, false, true) => "ADDED",
            (EventKind::Put, true, false) => "DELETED",
            _ => continue,
        };
        return match live.live_event(kind, &sent) {
            Ok(event) => Some((event, Phase::Live(live))),
            Err(err) => Some((line("ERROR", err.to_status()), Phase::Done)),
        };
    }
}
