//! Behaviour every store backend shows, checked the same way against SQLite
//! (tests/store_sqlite.rs) and etcd (tests/store_etcd.rs): revisions, optimistic
//! concurrency, lists at a revision, watches without gaps under concurrent writers, a
//! lagging watcher, and compaction that answers Compacted.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use nodectl::server::store::{Backend, EventKind, StoreError, watch};

/// On a new store.
pub fn writes_get_revisions_and_conflicts_are_refused(s: &dyn Backend) {
    let r0 = s.current_revision().unwrap();
    assert!(s.events_since("/", 0, 0).unwrap().is_empty(), "a new store has no history");
    assert_eq!(s.compacted_revision().unwrap(), 0);
    let r1 = s.create("/registry/pods/default/a", b"one").unwrap();
    let r2 = s.create("/registry/pods/default/b", b"two").unwrap();
    assert!(r1 > r0 && r2 > r1);
    assert!(matches!(s.create("/registry/pods/default/a", b"again"), Err(StoreError::AlreadyExists { .. })));

    let a = s.get("/registry/pods/default/a").unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.create_revision, a.mod_revision), (&b"one"[..], r1, r1));
    let r3 = s.update("/registry/pods/default/a", b"uno", Some(r1)).unwrap();
    let err = s.update("/registry/pods/default/a", b"stale", Some(r1)).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { expected, actual, .. } if expected == r1 && actual == r3), "{err}");
    let a = s.get("/registry/pods/default/a").unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.create_revision, a.mod_revision), (&b"uno"[..], r1, r3));

    assert!(matches!(s.delete("/registry/pods/default/a", Some(r1)), Err(StoreError::Conflict { .. })));
    let (r4, old) = s.delete("/registry/pods/default/a", Some(r3)).unwrap();
    assert_eq!(old.value, b"uno");
    assert!(s.get("/registry/pods/default/a").unwrap().is_none());
    assert!(matches!(s.update("/registry/pods/default/a", b"x", None), Err(StoreError::NotFound { .. })));
    assert!(matches!(s.update("/registry/pods/default/a", b"x", Some(r3)), Err(StoreError::NotFound { .. })));
    assert!(matches!(s.delete("/registry/pods/default/a", None), Err(StoreError::NotFound { .. })));
    // Created again: a new incarnation with its own create_revision.
    let r5 = s.create("/registry/pods/default/a", b"new").unwrap();
    assert!(r5 > r4);
    assert_eq!(s.get("/registry/pods/default/a").unwrap().unwrap().create_revision, r5);
    assert_eq!(s.current_revision().unwrap(), r5);
    assert!(matches!(s.create("/bad\u{e9}key", b""), Err(StoreError::BadKey(_))));
}

pub fn lists_page_and_read_the_past(s: &dyn Backend) {
    for i in 0..10 {
        s.create(&format!("/registry/configmaps/ns/cm{i:02}"), format!("v{i}").as_bytes()).unwrap();
    }
    s.create("/registry/configmaps/other/x", b"x").unwrap();
    s.create("/registry/configmapsx", b"not under the prefix").unwrap();
    let before = s.current_revision().unwrap();
    s.update("/registry/configmaps/ns/cm03", b"changed", None).unwrap();
    s.delete("/registry/configmaps/ns/cm04", None).unwrap();

    let all = s.list("/registry/configmaps/ns/", None, 0, None).unwrap();
    assert_eq!(all.items.len(), 9);
    assert!(!all.more);
    assert_eq!(all.revision, s.current_revision().unwrap());

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.list("/registry/configmaps/ns/", after.as_deref(), 4, Some(all.revision)).unwrap();
        seen.extend(page.items.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        after = Some(page.items.last().unwrap().key.clone());
    }
    assert_eq!(seen, all.items.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(), "pages join up to the full list");
    let by_size = pages_within(s, "/registry/configmaps/ns/", 5, all.revision);
    assert!(by_size.iter().all(|p| !p.is_empty()), "a page cut by size has an item: {by_size:?}");
    assert_eq!(by_size.concat(), seen, "pages cut by size join up to the full list");

    let past = s.list("/registry/configmaps/ns/", None, 0, Some(before)).unwrap();
    assert_eq!(past.revision, before);
    assert_eq!(past.items.len(), 10, "the deleted key is there in the past");
    assert_eq!(past.items[3].value, b"v3", "and the old value");
    assert_eq!(s.list("/registry/configmaps/", None, 0, None).unwrap().items.len(), 10);
    assert!(matches!(s.list("/", None, 0, Some(all.revision + 5)), Err(StoreError::FutureRevision { .. })));
}

/// The keys of each page of `prefix` at `revision`, read by [`Backend::list_within`] with
/// pages of `bytes`.
pub fn pages_within(s: &dyn Backend, prefix: &str, bytes: usize, revision: i64) -> Vec<Vec<String>> {
    let (mut pages, mut after) = (Vec::new(), None::<String>);
    loop {
        let page = s.list_within(prefix, after.as_deref(), 0, bytes, Some(revision)).unwrap();
        pages.push(page.items.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>());
        if !page.more {
            return pages;
        }
        after = page.items.last().map(|kv| kv.key.clone());
    }
}

/// Writers racing on one key with revision-checked updates (read, then update expecting
/// that revision, again on Conflict) lose no increment: among concurrent writes (committed
/// together by SQLite's group commit) each is checked against the ones before it, and a
/// refused one refuses only itself.
pub fn racing_compare_and_swap_writers_lose_no_increment<B: Backend + 'static>(s: Arc<B>) {
    let key = "/registry/configmaps/ns/counter";
    s.create(key, b"0").unwrap();
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut conflicts = 0;
                for i in 0..50 {
                    loop {
                        let kv = s.get(key).unwrap().unwrap();
                        let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                        match s.update(key, (n + 1).to_string().as_bytes(), Some(kv.mod_revision)) {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    // Beside the race, writes of keys of its own that must all succeed, and a
                    // create that must fail alone.
                    s.create(&format!("/registry/configmaps/ns/t{t}-{i}"), b"x").unwrap();
                    assert!(matches!(s.create(key, b"again"), Err(StoreError::AlreadyExists { .. })));
                }
                conflicts
            })
        })
        .collect();
    let _conflicts: usize = writers.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(s.get(key).unwrap().unwrap().value, b"400");
    let list = s.list("/registry/configmaps/ns/t", None, 0, None).unwrap();
    assert_eq!(list.items.len(), 400);
}

pub async fn watches_see_every_write_once_in_order_under_concurrent_writers<B: Backend>(s: Arc<B>) {
    s.create("/registry/pods/ns/early", b"before the watch").unwrap();
    let start = s.current_revision().unwrap();
    let mut w = watch(s.clone(), "/registry/pods/", Some(start)).unwrap();
    let mut others = watch(s.clone(), "/registry/services/", None).unwrap();

    let writers: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let key = format!("/registry/pods/ns/t{t}-{}", i % 20);
                    if s.create(&key, b"c").is_err() {
                        s.update(&key, format!("{i}").as_bytes(), None).unwrap();
                    }
                }
            })
        })
        .collect();
    let mut revisions = Vec::new();
    while revisions.len() < 1600 {
        let e = w.next().await.unwrap();
        assert!(e.kv.key.starts_with("/registry/pods/"));
        revisions.push(e.revision);
    }
    for t in writers {
        t.join().unwrap();
    }
    assert!(revisions.windows(2).all(|p| p[0] < p[1]), "events out of order or repeated");
    assert_eq!(revisions.len(), revisions.iter().collect::<BTreeSet<_>>().len());
    assert_eq!(*revisions.last().unwrap(), s.current_revision().unwrap(), "no write missed");
    assert!(revisions[0] > start, "history before the start is not replayed");

    // A watch that starts in the past replays the log, then follows.
    let mut replay = watch(s.clone(), "/registry/pods/", Some(revisions[1599 - 10])).unwrap();
    for want in &revisions[1600 - 10..] {
        assert_eq!(replay.next().await.unwrap().revision, *want);
    }
    let r = s.create("/registry/services/ns/svc", b"s").unwrap();
    let e = others.next().await.unwrap();
    assert_eq!((e.revision, e.kind), (r, EventKind::Put), "the other watch saw only its prefix");
    let (d, _) = s.delete("/registry/services/ns/svc", None).unwrap();
    let e = others.next().await.unwrap();
    assert_eq!(
        (e.revision, e.kind, e.kv.value.clone(), e.prev.unwrap().value),
        (d, EventKind::Delete, b"s".to_vec(), b"s".to_vec())
    );
}

pub async fn a_lagging_watcher_reads_the_log_and_loses_nothing<B: Backend>(s: Arc<B>) {
    let mut w = watch(s.clone(), "/k/", None).unwrap();
    // Far more than the live buffer holds (4096), written before the watcher reads anything.
    for i in 0..6000 {
        s.create(&format!("/k/{i:05}"), b"v").unwrap();
    }
    for i in 0..6000 {
        assert_eq!(w.next().await.unwrap().kv.key, format!("/k/{i:05}"));
    }
}

/// A watcher of a prefix that is seldom written, lagging again and again behind writes to
/// another: each time it reads the log from where it had seen everything, and it gets its
/// own writes, in order, once.
pub async fn a_watcher_of_a_quiet_prefix_lagging_behind_others_loses_nothing<B: Backend>(s: Arc<B>) {
    let mut w = watch(s.clone(), "/quiet/", None).unwrap();
    for round in 0..3 {
        s.create(&format!("/quiet/{round}"), b"q").unwrap();
        // More than the live buffer holds: the watcher lags past its own write.
        for i in 0..5000 {
            s.create(&format!("/busy/{round}-{i:05}"), b"v").unwrap();
        }
        let e = w.next().await.unwrap();
        assert_eq!(e.kv.key, format!("/quiet/{round}"));
    }
    let last = s.create("/quiet/last", b"q").unwrap();
    assert_eq!(w.next().await.unwrap().revision, last);
}

/// A caller that gives up waiting again and again (a `select!` whose other branch keeps
/// winning) still gets every event: the log read it started goes on and is picked up by its
/// next call, instead of starting over and never finishing.
pub async fn a_watcher_polled_with_short_timeouts_still_catches_up<B: Backend>(s: Arc<B>) {
    use std::time::Duration;
    let start = s.current_revision().unwrap();
    // Batches of 500 events of 64 KiB: no read of one finishes within a millisecond.
    let value = vec![b'v'; 64 << 10];
    for i in 0..600 {
        s.create(&format!("/impatient/{i:05}"), &value).unwrap();
    }
    let mut w = watch(s.clone(), "/impatient/", Some(start)).unwrap();
    let (mut seen, mut tries) = (0, 0);
    while seen < 600 {
        tries += 1;
        assert!(tries < 200, "the watcher made no headway: {seen} of 600 events");
        match tokio::time::timeout(Duration::from_millis(1), w.next()).await {
            Ok(e) => {
                assert_eq!(e.unwrap().kv.key, format!("/impatient/{seen:05}"));
                seen += 1;
                tries = 0;
            }
            // Given up; the read goes on meanwhile.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `reopen` drops the store it is given and opens it again on the same data.
pub async fn compaction_answers_compacted_and_keeps_the_present<B: Backend>(
    s: Arc<B>,
    reopen: impl FnOnce(Arc<B>) -> Arc<B>,
) {
    let first = s.create("/k/a", b"1").unwrap();
    for i in 0..50 {
        s.update("/k/a", format!("{i}").as_bytes(), None).unwrap();
    }
    s.create("/k/gone", b"x").unwrap();
    s.delete("/k/gone", None).unwrap();
    s.create("/k/b", b"b").unwrap();
    let horizon = s.current_revision().unwrap() - 1;
    s.compact(horizon).unwrap();
    assert_eq!(s.compacted_revision().unwrap(), horizon);
    s.compact(horizon - 10).unwrap();
    assert_eq!(s.compacted_revision().unwrap(), horizon, "compacting behind the horizon changes nothing");

    assert!(matches!(watch(s.clone(), "/k/", Some(first)), Err(StoreError::Compacted { .. })));
    let err = s.list("/k/", None, 0, Some(first)).unwrap_err();
    assert!(
        matches!(err, StoreError::Compacted { requested, compacted } if requested == first && compacted == horizon),
        "{err}"
    );
    let err = s.events_since("/k/", horizon - 1, 10).unwrap_err();
    assert!(
        matches!(err, StoreError::Compacted { requested, compacted } if requested == horizon - 1 && compacted == horizon),
        "{err}"
    );
    let after = s.events_since("/k/", horizon, 10).unwrap();
    assert_eq!(
        after.iter().map(|e| e.kv.key.as_str()).collect::<Vec<_>>(),
        ["/k/b"],
        "the log after the horizon is whole"
    );
    let now = s.list("/k/", None, 0, None).unwrap();
    let keys: Vec<_> = now.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/k/a", "/k/b"], "a deleted key stays deleted after compaction");
    assert_eq!(s.get("/k/a").unwrap().unwrap().value, b"49");
    assert_eq!(s.list("/k/", None, 0, Some(horizon)).unwrap().items.len(), 1, "at the horizon, /k/b did not yet exist");

    // Reopened: revisions go on from where they were; the horizon is remembered.
    let current = s.current_revision().unwrap();
    let s = reopen(s);
    assert_eq!(s.current_revision().unwrap(), current);
    assert_eq!(s.compacted_revision().unwrap(), horizon);
    assert!(s.create("/k/c", b"c").unwrap() > current);
}
