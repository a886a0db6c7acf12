//! The work queue the store-fed controllers share, as client-go's workqueue: an item queued
//! again before a worker took it is worked once; an item queued while a worker holds it
//! waits until that worker is done, so no two workers ever reconcile the same item at once;
//! and [`work`] runs the workers, retrying a failed item after the [`RetryLimiter`]'s
//! backoff instead of at a fixed pace.

use std::collections::{HashSet, VecDeque};
use std::fmt::Display;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::retry::RetryLimiter;

pub struct Queue<T> {
    items: Mutex<Items<T>>,
    ready: Notify,
}

struct Items<T> {
    order: VecDeque<T>,
    /// Queued and not yet taken (client-go's dirty set).
    queued: HashSet<T>,
    /// Taken by a worker that is not done with it.
    processing: HashSet<T>,
}

impl<T: Clone + Eq + Hash + Send + 'static> Queue<T> {
    pub fn new() -> Arc<Queue<T>> {
        let items = Items { order: VecDeque::new(), queued: HashSet::new(), processing: HashSet::new() };
        Arc::new(Queue { items: Mutex::new(items), ready: Notify::new() })
    }

    pub fn push(&self, item: T) {
        let mut q = self.items.lock().expect("queue lock");
        if !q.queued.insert(item.clone()) {
            return;
        }
        // A worker holds it: [`Queue::done`] puts it back in line.
        if q.processing.contains(&item) {
            return;
        }
        q.order.push_back(item);
        // A permit is stored when no worker waits, so a push is never lost.
        self.ready.notify_one();
    }

    /// Queues `item` again after `delay`: a failed item is retried, not dropped.
    pub fn push_after(self: &Arc<Self>, item: T, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.push(item);
        });
    }

    /// The oldest item, waiting for one if there is none; the caller owns it until it
    /// calls [`Queue::done`].
    pub async fn pop(&self) -> T {
        loop {
            {
                let mut q = self.items.lock().expect("queue lock");
                if let Some(item) = q.order.pop_front() {
                    q.queued.remove(&item);
                    q.processing.insert(item.clone());
                    return item;
                }
            }
            self.ready.notified().await;
        }
    }

    /// A worker is done with `item`; if it was queued meanwhile, it goes back in line.
    pub fn done(&self, item: &T) {
        let mut q = self.items.lock().expect("queue lock");
        q.processing.remove(item);
        if q.queued.contains(item) {
            q.order.push_back(item.clone());
            self.ready.notify_one();
        }
    }
}

/// Runs `workers` workers on `queue` for as long as the runtime runs: each takes an item,
/// reconciles it, and on failure queues it again after the limiter's backoff (a success
/// forgets its failures). `what` names the work in the log.
pub async fn work<T, E, F, Fut>(queue: Arc<Queue<T>>, workers: usize, what: &'static str, reconcile: F)
where
    T: Clone + Eq + Hash + Send + Sync + Display + 'static,
    E: Display,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
{
    let limiter = Arc::new(RetryLimiter::<T>::default());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let (queue, limiter, reconcile) = (queue.clone(), limiter.clone(), reconcile.clone());
        tasks.spawn(async move {
            loop {
                let item = queue.pop().await;
                match reconcile(item.clone()).await {
                    Ok(()) => limiter.forget(&item),
                    Err(err) => {
                        let wait = limiter.failed(&item);
                        tracing::warn!(%err, %item, retry_in = ?wait, "{what} failed");
                        queue.push_after(item.clone(), wait);
                    }
                }
                queue.done(&item);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn an_item_queued_twice_is_worked_once() {
        let q = Queue::new();
        q.push("a");
        q.push("b");
        q.push("a");
        assert_eq!(q.pop().await, "a");
        q.done(&"a");
        assert_eq!(q.pop().await, "b");
        q.done(&"b");
        q.push("a");
        assert_eq!(q.pop().await, "a");
    }

    #[tokio::test]
    async fn an_item_queued_while_a_worker_holds_it_waits_for_that_worker() {
        let q = Queue::new();
        q.push("a");
        assert_eq!(q.pop().await, "a");
        q.push("a");
        q.push("b");
        // Another worker gets b, not a second a.
        assert_eq!(q.pop().await, "b");
        let next = tokio::time::timeout(Duration::from_millis(50), q.pop()).await;
        assert!(next.is_err(), "a was handed out twice at once");
        q.done(&"a");
        assert_eq!(q.pop().await, "a");
    }

    #[tokio::test]
    async fn a_failed_item_is_retried_until_it_succeeds() {
        let q = Queue::new();
        let tries = Arc::new(AtomicUsize::new(0));
        let t = tries.clone();
        tokio::spawn(work(q.clone(), 2, "the test's work", move |_item: String| {
            let t = t.clone();
            async move { if t.fetch_add(1, Ordering::SeqCst) < 3 { Err("not yet") } else { Ok(()) } }
        }));
        q.push("x".to_string());
        tokio::time::timeout(Duration::from_secs(5), async {
            while tries.load(Ordering::SeqCst) < 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the item was retried after its backoff");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(tries.load(Ordering::SeqCst), 4, "a success is not retried");
    }
}
