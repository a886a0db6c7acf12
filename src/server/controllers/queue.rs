//! A work queue that holds each item once: an item queued again before a worker took it
//! is not worked twice, as client-go's workqueue dedups keys.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

pub struct Queue<T> {
    items: Mutex<(VecDeque<T>, HashSet<T>)>,
    ready: Notify,
}

impl<T: Clone + Eq + Hash + Send + 'static> Queue<T> {
    pub fn new() -> Arc<Queue<T>> {
        Arc::new(Queue { items: Mutex::new((VecDeque::new(), HashSet::new())), ready: Notify::new() })
    }

    pub fn push(&self, item: T) {
        let mut guard = self.items.lock().expect("queue lock");
        let (order, queued) = &mut *guard;
        if queued.insert(item.clone()) {
            order.push_back(item);
            // A permit is stored when no worker waits, so a push is never lost.
            self.ready.notify_one();
        }
    }

    /// Queues `item` again after `delay`: a failed item is retried, not dropped.
    pub fn push_after(self: &Arc<Self>, item: T, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.push(item);
        });
    }

    /// The oldest item, waiting for one if there is none.
    pub async fn pop(&self) -> T {
        loop {
            {
                let mut guard = self.items.lock().expect("queue lock");
                let (order, queued) = &mut *guard;
                if let Some(item) = order.pop_front() {
                    queued.remove(&item);
                    return item;
                }
            }
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_item_queued_twice_is_worked_once() {
        let q = Queue::new();
        q.push("a");
        q.push("b");
        q.push("a");
        assert_eq!(q.pop().await, "a");
        assert_eq!(q.pop().await, "b");
        q.push("a");
        assert_eq!(q.pop().await, "a");
    }
}
