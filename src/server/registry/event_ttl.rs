//! `--event-ttl`: Events go away that long after they were last written, as
//! kube-apiserver's Events do (it gives each an etcd lease). Here one sweeper per server
//! works on either store: an index of the Events' expiries kept in memory, built at start
//! by one scan and kept current from the store's feed of writes, and a loop that deletes
//! each expired Event by its key at the revision it expired at (so that an Event written
//! again meanwhile stays). The deletes are ordinary store deletes: watchers see DELETED.
//!
//! core/v1 and events.k8s.io/v1 Events are one set of keys (see `Resource::storage`), so
//! both expire alike. Several servers on one etcd each sweep; the revision check lets one
//! delete win and the others find the key gone.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::objects::{Store, blocking};
use super::resources;
use crate::server::store::{EventKind, KeyValue, StoreError};

/// When each Event expires, by key and in time order.
#[derive(Debug)]
pub struct Expiries {
    ttl: Duration,
    /// (expiry, key).
    by_time: BTreeSet<(Instant, String)>,
    /// key -> (expiry, the revision of the write it expires with).
    by_key: HashMap<String, (Instant, i64)>,
}

impl Expiries {
    pub fn new(ttl: Duration) -> Self {
        Expiries { ttl, by_time: BTreeSet::new(), by_key: HashMap::new() }
    }

    /// `key` was written at `revision`, `age` before `now`; an older write than the one
    /// known (a feed event from before the start's scan) changes nothing.
    pub fn written(&mut self, key: &str, revision: i64, now: Instant, age: Duration) {
        if self.by_key.get(key).is_some_and(|(_, known)| *known >= revision) {
            return;
        }
        self.forget(key);
        let at = (now + self.ttl).checked_sub(age).unwrap_or(now);
        self.by_time.insert((at, key.to_string()));
        self.by_key.insert(key.to_string(), (at, revision));
    }

    /// `key` was deleted at `revision`.
    pub fn deleted(&mut self, key: &str, revision: i64) {
        if self.by_key.get(key).is_some_and(|(_, known)| *known < revision) {
            self.forget(key);
        }
    }

    fn forget(&mut self, key: &str) {
        if let Some((at, _)) = self.by_key.remove(key) {
            self.by_time.remove(&(at, key.to_string()));
        }
    }

    /// The keys expired at `now`, each with the revision it expires at, oldest first.
    pub fn due(&self, now: Instant) -> Vec<(String, i64)> {
        self.by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter_map(|(_, k)| self.by_key.get(k).map(|(_, rev)| (k.clone(), *rev)))
            .collect()
    }

    /// When the next key expires.
    pub fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Tries `key` again at `at` (its delete failed).
    fn retry(&mut self, key: &str, at: Instant) {
        if let Some((old, rev)) = self.by_key.get(key).copied() {
            self.by_time.remove(&(old, key.to_string()));
            self.by_time.insert((at, key.to_string()));
            self.by_key.insert(key.to_string(), (at, rev));
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// How long ago a stored Event was last written, from its own timestamps (the newest of
/// series.lastObservedTime, lastTimestamp, eventTime, metadata.creationTimestamp): the
/// store keeps no write times, and an Event found at start should not live a TTL more.
fn age(kv: &KeyValue, now_secs: i64) -> Duration {
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Times {
        metadata: Meta,
        last_timestamp: Option<String>,
        event_time: Option<String>,
        series: Series,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Meta {
        creation_timestamp: Option<String>,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Series {
        last_observed_time: Option<String>,
    }
    let Ok(t) = serde_json::from_slice::<Times>(&kv.value) else { return Duration::ZERO };
    // MicroTime (eventTime, lastObservedTime) has a fraction: whole seconds will do.
    let secs = |s: &Option<String>| {
        s.as_deref().and_then(|s| {
            let whole = match s.split_once('.') {
                Some((head, _)) => format!("{head}Z"),
                None => s.to_string(),
            };
            crate::model::time::parse_rfc3339(&whole)
        })
    };
    let newest = [&t.series.last_observed_time, &t.last_timestamp, &t.event_time, &t.metadata.creation_timestamp]
        .into_iter()
        .filter_map(secs)
        .max();
    newest.map_or(Duration::ZERO, |w| Duration::from_secs(now_secs.saturating_sub(w).max(0) as u64))
}

/// How long a failed delete waits before it is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Deletes expired Events for ever.
pub async fn run(store: Store, ttl: Duration) {
    let Some(events) = resources::find("", "v1", "events") else { return };
    let prefix = events.key(None, None);
    loop {
        // Subscribed before the scan, so that no write falls between the two.
        let mut feed = store.subscribe();
        let mut index = Expiries::new(ttl);
        let (s, p) = (store.clone(), prefix.clone());
        let scanned =
            blocking(move || s.list(&p, None, 0, None).map_err(|e| super::RegistryError::from_store(e, "events", "")))
                .await;
        match scanned {
            Ok(list) => {
                let (now, now_secs) = (Instant::now(), crate::model::time::now_secs());
                for kv in &list.items {
                    index.written(&kv.key, kv.mod_revision, now, age(kv, now_secs));
                }
                tracing::debug!(events = index.len(), ?ttl, "expiring Events");
            }
            Err(err) => {
                tracing::warn!(%err, "listing Events to expire failed; trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        }
        loop {
            let wake = index.next().unwrap_or_else(|| Instant::now() + ttl);
            tokio::select! {
                e = feed.recv() => match e {
                    Ok(e) if e.kv.key.starts_with(&prefix) => match e.kind {
                        EventKind::Put => index.written(&e.kv.key, e.revision, Instant::now(), Duration::ZERO),
                        EventKind::Delete => index.deleted(&e.kv.key, e.revision),
                    },
                    Ok(_) => {}
                    // Writes were missed: scan again.
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(wake) => sweep(&store, &mut index).await,
            }
        }
    }
}

/// Deletes what is due, each at the revision it expired at.
async fn sweep(store: &Store, index: &mut Expiries) {
    for (key, revision) in index.due(Instant::now()) {
        let (s, k) = (store.clone(), key.clone());
        let deleted = blocking(move || Ok::<_, super::RegistryError>(s.delete(&k, Some(revision)))).await;
        match deleted {
            // Gone, by this sweep or another's; or written again, whose write the feed brings.
            Ok(Ok(_)) | Ok(Err(StoreError::NotFound { .. })) | Ok(Err(StoreError::Conflict { .. })) => {
                index.deleted(&key, revision + 1)
            }
            Ok(Err(err)) => {
                tracing::warn!(%key, %err, "deleting an expired Event failed");
                index.retry(&key, Instant::now() + RETRY);
            }
            Err(err) => {
                tracing::warn!(%key, %err, "deleting an expired Event failed");
                index.retry(&key, Instant::now() + RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn an_event_expires_a_ttl_after_its_last_write() {
        let start = Instant::now();
        let mut e = Expiries::new(TTL);
        e.written("/a", 5, start, Duration::ZERO);
        e.written("/b", 6, start + Duration::from_secs(10), Duration::ZERO);
        assert_eq!(e.next(), Some(start + TTL));
        assert!(e.due(start + Duration::from_secs(59)).is_empty());
        assert_eq!(e.due(start + TTL), vec![("/a".to_string(), 5)]);
        // Written again: a TTL from then, at the new revision.
        e.written("/a", 7, start + Duration::from_secs(30), Duration::ZERO);
        assert_eq!(e.due(start + TTL), vec![]);
        assert_eq!(e.due(start + Duration::from_secs(90)), vec![("/b".to_string(), 6), ("/a".to_string(), 7)]);
    }

    #[test]
    fn stale_feed_events_change_nothing_and_a_delete_forgets() {
        let now = Instant::now();
        let mut e = Expiries::new(TTL);
        e.written("/a", 9, now, Duration::from_secs(50));
        // A write and a delete from before the scan that saw revision 9.
        e.written("/a", 8, now, Duration::ZERO);
        e.deleted("/a", 9);
        assert_eq!(e.due(now + Duration::from_secs(10)), vec![("/a".to_string(), 9)]);
        e.deleted("/a", 10);
        assert!(e.is_empty());
        assert_eq!(e.next(), None);
    }

    #[test]
    fn an_events_age_comes_from_its_newest_timestamp() {
        let kv =
            |v: &str| KeyValue { key: "/k".into(), value: v.as_bytes().to_vec(), create_revision: 1, mod_revision: 1 };
        let now = crate::model::time::parse_rfc3339("2026-01-01T01:00:00Z").unwrap();
        let e =
            kv(r#"{"metadata":{"creationTimestamp":"2026-01-01T00:00:00Z"},"lastTimestamp":"2026-01-01T00:30:00Z"}"#);
        assert_eq!(age(&e, now), Duration::from_secs(1800));
        let e = kv(
            r#"{"metadata":{"creationTimestamp":"2026-01-01T00:00:00Z"},"eventTime":"2026-01-01T00:50:00.123456Z"}"#,
        );
        assert_eq!(age(&e, now), Duration::from_secs(600));
        assert_eq!(age(&kv("{}"), now), Duration::ZERO);
        assert_eq!(age(&kv("not json"), now), Duration::ZERO);
    }
}
