//! `?watch=true`: newline-delimited JSON events (ADDED, MODIFIED, DELETED, ERROR) over a
//! chunked response, as client-go reads them.
//!
//! With no resourceVersion (or "0") the watch starts with an ADDED event for every object
//! there is now, then follows; with an exact one it replays what came after it. A
//! compacted revision ends the stream with an ERROR event carrying a 410 Status, which is
//! what the API server sends and what makes clients list again.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::objects::{Store, blocking, decode};
use super::resources::Resource;
use super::status::ApiError;
use crate::server::store::{self, Backend, EventKind, Watcher};
use crate::server::store::sqlite::Sqlite;

/// The API server's default: requests end after at most half an hour; clients re-watch.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

fn line(kind: &str, object: Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("JSON serialises");
    v.push(b'\n');
    Bytes::from(v)
}

enum Phase {
    Initial(std::vec::IntoIter<Value>, Watcher<Sqlite>),
    Live(Watcher<Sqlite>),
    Done,
}

pub async fn watch(store: Store, r: &'static Resource, ns: Option<String>, resource_version: Option<String>, timeout: Option<u64>) -> Result<Response, ApiError> {
    let prefix = r.key(ns.as_deref(), None);
    let (initial, from) = match resource_version.as_deref() {
        None | Some("") | Some("0") => {
            let (s, p) = (store.clone(), prefix.clone());
            let list = blocking(move || s.list(&p, None, 0, None).map_err(|e| ApiError::from_store(e, r.plural, ""))).await?;
            (list.items.iter().map(decode).collect::<Result<Vec<_>, _>>()?, list.revision)
        }
        Some(v) => (Vec::new(), v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?),
    };
    let first = match store::watch(store.clone(), &prefix, Some(from)) {
        Ok(w) => Phase::Initial(initial.into_iter(), w),
        Err(e) => {
            // Sent as an event in a 200 response, as the API server does.
            let status = ApiError::from_store(e, r.plural, "").to_status();
            let body = Body::from(line("ERROR", status));
            return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response());
        }
    };
    let events = futures_util::stream::unfold(first, |phase| async move {
        match phase {
            Phase::Initial(mut items, w) => match items.next() {
                Some(obj) => Some((line("ADDED", obj), Phase::Initial(items, w))),
                None => next_live(w).await,
            },
            Phase::Live(w) => next_live(w).await,
            Phase::Done => None,
        }
    });
    let deadline = tokio::time::sleep(timeout.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT));
    let events = events.take_until(deadline).map(Ok::<_, std::convert::Infallible>);
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(events)).into_response())
}

async fn next_live(mut w: Watcher<Sqlite>) -> Option<(Bytes, Phase)> {
    match w.next().await {
        Ok(e) => {
            let mut obj = match decode(&e.kv) {
                Ok(o) => o,
                Err(err) => return Some((line("ERROR", err.to_status()), Phase::Done)),
            };
            obj["metadata"]["resourceVersion"] = json!(e.revision.to_string());
            let kind = match (e.kind, &e.prev) {
                (EventKind::Delete, _) => "DELETED",
                (EventKind::Put, None) => "ADDED",
                (EventKind::Put, Some(_)) => "MODIFIED",
            };
            Some((line(kind, obj), Phase::Live(w)))
        }
        Err(err) => Some((line("ERROR", ApiError::from_store(err, "", "").to_status()), Phase::Done)),
    }
}
