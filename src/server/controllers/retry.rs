//! When a failed reconcile runs again: kube-controller-manager's default controller rate
//! limiter, the larger of a per-item exponential backoff (5 ms doubling per failure in a
//! row, at most 1,000 s) and a token bucket shared by all items (10 retries a second,
//! bursts of 100), so that one broken object backs off alone and many failing together
//! cannot flood the API server. A success forgets the item's failures.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BASE: Duration = Duration::from_millis(5);
const MAX: Duration = Duration::from_secs(1000);
const RATE_PER_SEC: f64 = 10.0;
const BURST: f64 = 100.0;

pub struct RetryLimiter<K> {
    inner: Mutex<State<K>>,
}

struct State<K> {
    failures: HashMap<K, u32>,
    /// Tokens left in the bucket as of `filled`; negative when retries are booked ahead.
    tokens: f64,
    filled: Instant,
}

impl<K: Eq + Hash + Clone> Default for RetryLimiter<K> {
    fn default() -> Self {
        RetryLimiter { inner: Mutex::new(State { failures: HashMap::new(), tokens: BURST, filled: Instant::now() }) }
    }
}

impl<K: Eq + Hash + Clone> RetryLimiter<K> {
    /// How long `item`, which just failed, waits before its next try.
    pub fn failed(&self, item: &K) -> Duration {
        self.failed_at(item, Instant::now())
    }

    fn failed_at(&self, item: &K, now: Instant) -> Duration {
        let mut s = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = s.failures.entry(item.clone()).or_insert(0);
        let exp = *n;
        *n = n.saturating_add(1);
        // 5 ms · 2^exp, with no overflow for any count of failures.
        let backoff = if exp >= 28 { MAX } else { BASE.saturating_mul(1 << exp).min(MAX) };
        let elapsed = now.saturating_duration_since(s.filled).as_secs_f64();
        s.tokens = (s.tokens + elapsed * RATE_PER_SEC).min(BURST);
        s.filled = now;
        s.tokens -= 1.0;
        let bucket = if s.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-s.tokens / RATE_PER_SEC) };
        backoff.max(bucket)
    }

    /// `item` succeeded: its next failure starts again at the shortest wait.
    pub fn forget(&self, item: &K) {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).failures.remove(item);
    }

    /// Failures in a row of `item`.
    pub fn failures(&self, item: &K) -> u32 {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).failures.get(item).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_item_backs_off_exponentially_up_to_the_cap_and_a_success_resets_it() {
        let l = RetryLimiter::default();
        let t = Instant::now();
        let waits: Vec<Duration> = (0..4).map(|_| l.failed_at(&"a", t)).collect();
        assert_eq!(waits, [5, 10, 20, 40].map(Duration::from_millis));
        for _ in 0..100 {
            l.failed_at(&"b", t + Duration::from_secs(3600));
        }
        assert_eq!(l.failed_at(&"b", t + Duration::from_secs(7200)), MAX);
        l.forget(&"a");
        assert_eq!(l.failures(&"a"), 0);
        assert_eq!(l.failed_at(&"a", t + Duration::from_secs(7200)), Duration::from_millis(5));
    }

    #[test]
    fn many_items_failing_at_once_share_ten_retries_a_second_after_a_burst_of_a_hundred() {
        let l = RetryLimiter::default();
        let t = Instant::now();
        for i in 0..100 {
            assert_eq!(l.failed_at(&i, t), Duration::from_millis(5), "item {i} is within the burst");
        }
        // The 101st waits for a token (0.1 s), the 110th for ten.
        assert_eq!(l.failed_at(&100, t), Duration::from_millis(100));
        for i in 101..109 {
            l.failed_at(&i, t);
        }
        let tenth = l.failed_at(&109, t);
        assert!((tenth.as_secs_f64() - 1.0).abs() < 1e-6, "{tenth:?}");
        // A second later ten tokens are back.
        assert!(l.failed_at(&110, t + Duration::from_secs(1)).as_secs_f64() <= 1.0 + 1e-6);
    }
}
