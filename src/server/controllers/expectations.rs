//! What a controller wrote and has not yet seen in its cache, as kube-controller-manager's
//! (UID-tracking) controller expectations: the pods it created, by name, until the pod
//! informer shows them; the pods it deleted, by uid, until the informer shows them gone
//! or terminating. While a controller's writes are unobserved its cache is behind its own
//! actions, and counting from the cache would create or delete the same pods again; so it
//! waits (the informer's event for the last of them triggers it again). An entry older than
//! five minutes is forgotten, so that a lost event cannot stall a controller for ever.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// kube-controller-manager's ExpectationsTimeout.
pub const TTL: Duration = Duration::from_secs(5 * 60);

pub struct Expectations<K> {
    inner: Mutex<HashMap<K, Pending>>,
}

#[derive(Default)]
struct Pending {
    /// Names of created pods not yet seen, and when each was created.
    creations: HashMap<String, Instant>,
    /// Uids of deleted pods still seen alive, and when each was deleted.
    deletions: HashMap<String, Instant>,
}

impl<K: Eq + Hash + Clone> Default for Expectations<K> {
    fn default() -> Self {
        Expectations { inner: Mutex::new(HashMap::new()) }
    }
}

/// What the cache shows of one pod, for [`Expectations::observe`].
pub struct Seen<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    /// Has a deletionTimestamp: as good as gone to a controller.
    pub terminating: bool,
}

impl<K: Eq + Hash + Clone> Expectations<K> {
    pub fn created(&self, owner: &K, name: &str) {
        self.lock().entry(owner.clone()).or_default().creations.insert(name.to_string(), Instant::now());
    }

    pub fn deleted(&self, owner: &K, uid: &str) {
        self.lock().entry(owner.clone()).or_default().deletions.insert(uid.to_string(), Instant::now());
    }

    /// A write that failed will never be observed.
    pub fn create_failed(&self, owner: &K, name: &str) {
        if let Some(p) = self.lock().get_mut(owner) {
            p.creations.remove(name);
        }
    }

    pub fn delete_failed(&self, owner: &K, uid: &str) {
        if let Some(p) = self.lock().get_mut(owner) {
            p.deletions.remove(uid);
        }
    }

    /// Settles `owner`'s expectations against every pod the cache holds now (all of them,
    /// not only the owner's: a created pod may already carry other labels), and answers
    /// whether all of its writes have been observed.
    pub fn satisfied<'a>(&self, owner: &K, cache: impl IntoIterator<Item = Seen<'a>>) -> bool {
        self.satisfied_at(owner, cache, Instant::now())
    }

    fn satisfied_at<'a>(&self, owner: &K, cache: impl IntoIterator<Item = Seen<'a>>, now: Instant) -> bool {
        let mut all = self.lock();
        let Some(p) = all.get_mut(owner) else { return true };
        p.creations.retain(|_, at| now.saturating_duration_since(*at) < TTL);
        p.deletions.retain(|_, at| now.saturating_duration_since(*at) < TTL);
        if !p.creations.is_empty() || !p.deletions.is_empty() {
            let mut alive = std::collections::HashSet::new();
            for seen in cache {
                p.creations.remove(seen.name);
                if !seen.terminating {
                    alive.insert(seen.uid);
                }
            }
            p.deletions.retain(|uid, _| alive.contains(uid.as_str()));
        }
        let done = p.creations.is_empty() && p.deletions.is_empty();
        if done {
            all.remove(owner);
        }
        done
    }

    /// The owner is gone: nothing it wrote matters any more.
    pub fn forget(&self, owner: &K) {
        self.lock().remove(owner);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Pending>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<'a>(name: &'a str, uid: &'a str, terminating: bool) -> Seen<'a> {
        Seen { name, uid, terminating }
    }

    #[test]
    fn creations_wait_until_the_cache_shows_every_created_pod() {
        let e = Expectations::default();
        assert!(e.satisfied(&"rs", []));
        e.created(&"rs", "web-a");
        e.created(&"rs", "web-b");
        assert!(!e.satisfied(&"rs", [seen("web-a", "1", false)]));
        // Seen once is enough, even if the pod went again meanwhile.
        assert!(e.satisfied(&"rs", [seen("web-b", "2", false)]));
    }

    #[test]
    fn deletions_wait_until_the_pod_is_gone_or_terminating() {
        let e = Expectations::default();
        e.deleted(&"rs", "1");
        e.deleted(&"rs", "2");
        assert!(!e.satisfied(&"rs", [seen("a", "1", false), seen("b", "2", true)]));
        assert!(e.satisfied(&"rs", [seen("b", "2", true)]));
    }

    #[test]
    fn a_failed_write_is_not_expected_and_old_expectations_expire() {
        let e = Expectations::default();
        e.created(&"rs", "a");
        e.create_failed(&"rs", "a");
        e.deleted(&"rs", "9");
        e.delete_failed(&"rs", "9");
        assert!(e.satisfied(&"rs", []));
        e.created(&"other", "x");
        assert!(!e.satisfied(&"other", []));
        assert!(e.satisfied_at(&"other", [], Instant::now() + TTL + Duration::from_secs(1)));
    }
}
