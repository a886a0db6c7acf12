//! Watches over any [`Backend`]: history from the log, then live events, with no gap and
//! no duplicate between the two.
//!
//! The live feed is subscribed before the log is read, so nothing written in between is
//! missed; live events at or below the last revision already delivered are dropped. A
//! watcher too slow for the live feed's buffer does not lose events: it goes back to the
//! log from where it was, and only if compaction has passed that point does it end with
//! [`StoreError::Compacted`] (the API answers 410 Gone, and clients list again). A live
//! feed that closes (the etcd store closes it when it lost events it cannot replay) is
//! handled the same way: subscribe again, then read the log from where it was.
//!
//! Reads of the log run on tokio's blocking threads: a backend may wait on the network.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};

use super::{Backend, Event, Result, StoreError};

/// Log events read per query while catching up.
const BATCH: usize = 500;

/// What one read of the log gives: the revision it covers, and the events under the
/// prefix after the cursor.
type LogRead = (i64, Vec<Event>);

pub struct Watcher<B: Backend + ?Sized> {
    backend: Arc<B>,
    prefix: String,
    /// The revision of the last event delivered (or the start).
    last: i64,
    /// Every event under the prefix up to this revision has been delivered: `last`, or a
    /// later revision of another prefix's write seen on the live feed with nothing pending.
    progress: i64,
    pending: VecDeque<Event>,
    live: broadcast::Receiver<Arc<Event>>,
    /// Still reading history from the log.
    catching_up: bool,
    /// The log read under way, kept across calls so that a caller that drops `next` (a
    /// `select!` that another branch won) finds it again instead of starting another: a
    /// read started anew each time would never finish while other branches keep winning.
    reading: Option<tokio::task::JoinHandle<Result<LogRead>>>,
}

/// Watches keys under `prefix` for writes after revision `from` (a client's
/// resourceVersion); `None` starts from now.
pub fn watch<B: Backend + ?Sized>(backend: Arc<B>, prefix: &str, from: Option<i64>) -> Result<Watcher<B>> {
    let live = backend.subscribe();
    let start = match from {
        Some(rev) => {
            let current = backend.current_revision()?;
            if rev > current {
                return Err(StoreError::FutureRevision { requested: rev, current });
            }
            let compacted = backend.compacted_revision()?;
            if rev < compacted {
                return Err(StoreError::Compacted { requested: rev, compacted });
            }
            rev
        }
        None => backend.current_revision()?,
    };
    Ok(Watcher {
        backend,
        prefix: prefix.to_string(),
        last: start,
        progress: start,
        pending: VecDeque::new(),
        live,
        catching_up: true,
        reading: None,
    })
}

impl<B: Backend + ?Sized> Watcher<B> {
    /// The next event, waiting for one if need be.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                self.last = e.revision;
                self.progress = self.progress.max(e.revision);
                return Ok(e);
            }
            if self.catching_up {
                let read = self.reading.get_or_insert_with(|| {
                    // Nothing is pending, so every event under the prefix up to `progress` has
                    // been delivered: the log is read from there, not from the last event
                    // delivered, which for a prefix written rarely may lie far behind, and a
                    // watcher that lags again and again would read the same stretch each time.
                    let (backend, prefix, from) = (self.backend.clone(), self.prefix.clone(), self.progress);
                    // The revision is read first: every write up to it is in the log the read sees.
                    tokio::task::spawn_blocking(move || {
                        Ok::<_, StoreError>((backend.current_revision()?, backend.events_since(&prefix, from, BATCH)?))
                    })
                });
                // Cancel-safe: a JoinHandle polled again after a drop of this future resumes.
                let done = read.await;
                self.reading = None;
                let (covered, batch) = match done {
                    Ok(result) => result?,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(_) => return Err(StoreError::Closed),
                };
                // A full batch (etcd may add the rest of a revision's events) means more may follow.
                self.catching_up = batch.len() >= BATCH;
                if !self.catching_up {
                    self.progress = self.progress.max(covered);
                }
                self.pending.extend(batch);
                continue;
            }
            match self.live.recv().await {
                Ok(e) if e.revision > self.last && e.kv.key.starts_with(&self.prefix) => {
                    self.pending.push_back((*e).clone())
                }
                // The live feed is in revision order and nothing is pending: nothing of ours
                // can come at or below this revision any more.
                Ok(e) => self.progress = self.progress.max(e.revision),
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, prefix = %self.prefix, "watcher lagged; reading the log");
                    self.catching_up = true;
                }
                Err(RecvError::Closed) => {
                    tracing::debug!(prefix = %self.prefix, "live feed closed; subscribing again and reading the log");
                    self.live = self.backend.subscribe();
                    self.catching_up = true;
                }
            }
        }
    }

    /// The revision of the last event delivered.
    pub fn revision(&self) -> i64 {
        self.last
    }

    /// A revision up to which every event under the prefix has been delivered (at least
    /// `revision()`): what a bookmark may tell a client to resume from.
    pub fn progress(&self) -> i64 {
        self.progress
    }
}
