//! Limits on connections, against clients that open many and send little (slowloris):
//! 1,030 idle unauthenticated connections used to take every file descriptor and block
//! every legitimate request.
//!
//! - the TLS handshake must end within [`HANDSHAKE_TIMEOUT`];
//! - HTTP/1 request headers must arrive within [`HEADER_TIMEOUT`] (hyper's timer, which
//!   also runs while a kept-alive connection waits for its next request, so it is the
//!   idle timeout of HTTP/1 too); HTTP/2 connections are pinged and closed when the peer
//!   stops answering ([`KEEPALIVE_INTERVAL`]);
//! - a connection that has not authenticated (no request with a valid token yet) is
//!   closed after [`UNAUTHENTICATED_LIMIT`], and at most [`MAX_UNAUTHENTICATED`] such
//!   connections are open at once: a new one closes the oldest, so a flood of idle
//!   connections delays a legitimate client by nothing;
//! - the soft open-files limit is raised to the hard one ([`raise_nofile_limit`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const UNAUTHENTICATED_LIMIT: Duration = Duration::from_secs(30);
pub const MAX_UNAUTHENTICATED: usize = 256;

/// One accepted connection, as the limits see it. Requests carry it as an extension, so
/// that the first one that authenticates frees the connection from the limits.
pub struct Connection {
    id: u64,
    authenticated: AtomicBool,
    /// Told to close: evicted by a newer unauthenticated connection.
    evicted: Notify,
    pending: Arc<Pending>,
}

impl Connection {
    /// A request on this connection carried a valid token.
    pub fn authenticated(&self) {
        if !self.authenticated.swap(true, Ordering::AcqRel) {
            self.pending.remove(self.id);
        }
    }

    /// Resolves when the connection must close because it did not authenticate in time or
    /// was evicted; never once it has authenticated.
    pub async fn unauthenticated_end(&self) {
        tokio::select! {
            _ = tokio::time::sleep(UNAUTHENTICATED_LIMIT) => {}
            _ = self.evicted.notified() => {}
        }
        if self.authenticated.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.pending.remove(self.id);
    }
}

/// The connections not yet authenticated, oldest first.
#[derive(Default)]
pub struct Pending {
    next_id: AtomicU64,
    queue: Mutex<VecDeque<(u64, std::sync::Weak<Connection>)>>,
}

impl Pending {
    /// Registers a new connection, evicting the oldest unauthenticated ones over the cap.
    pub fn admit(self: &Arc<Self>) -> Arc<Connection> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Connection {
            id,
            authenticated: AtomicBool::new(false),
            evicted: Notify::new(),
            pending: self.clone(),
        });
        let mut evicted = Vec::new();
        {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.push_back((id, Arc::downgrade(&conn)));
            while queue.len() > MAX_UNAUTHENTICATED {
                evicted.extend(queue.pop_front().and_then(|(_, oldest)| oldest.upgrade()));
            }
        }
        // Outside the lock: the last reference to one of them may go here, and its Drop
        // takes the lock.
        for oldest in evicted {
            tracing::debug!(id = oldest.id, "closing the oldest unauthenticated connection");
            oldest.evicted.notify_one();
        }
        conn
    }

    fn remove(&self, id: u64) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = queue.iter().position(|(c, _)| *c == id) {
            queue.remove(i);
        }
    }

    pub fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: every connection is a descriptor, and
/// the usual soft limit of 1,024 is what a slowloris client exhausted.
pub fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%err, soft, hard, "could not raise the open-files limit");
            }
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "could not read the open-files limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_connection_over_the_cap_evicts_the_oldest_unauthenticated_one() {
        let pending = Arc::new(Pending::default());
        let first = pending.admit();
        let kept = pending.admit();
        kept.authenticated();
        let rest: Vec<_> = (0..MAX_UNAUTHENTICATED).map(|_| pending.admit()).collect();
        assert_eq!(pending.len(), MAX_UNAUTHENTICATED);
        tokio::time::timeout(Duration::from_secs(1), first.unauthenticated_end()).await.expect("the oldest is evicted");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), rest[0].unauthenticated_end()).await.is_err(),
            "the others stay"
        );
        drop(rest);
        assert_eq!(pending.len(), 0, "a closed connection leaves the queue");
    }
}
