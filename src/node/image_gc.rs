//! Image garbage collection by disk thresholds, as the kubelet's image GC manager does it
//! (imageGCHighThresholdPercent, imageGCLowThresholdPercent, imageMinimumGCAge): when the
//! filesystem holding the image store is fuller than the high threshold, images no pod of
//! this daemon uses are removed, least recently used first and none younger than the
//! minimum age, until enough is freed to be under the low threshold; then the store's own
//! garbage collection removes the blobs and layers no image references.
//!
//! [`plan`] decides, purely, from numbers; [`collect`] gathers them from the store and the
//! daemon's pods and carries the decision out under the store's exclusive lock.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::daemon::Daemon;
use crate::image::digest::Digest;
use crate::image::store::{ImageRecord, Store, StoreError};

/// When images are collected. `high` 100 turns collection off, as in the kubelet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub high_percent: u8,
    pub low_percent: u8,
    /// Images imported more recently than this are never removed.
    pub min_age: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("--image-gc-{which}-threshold: {value} is not a percentage (0 to 100)")]
    Range { which: &'static str, value: u8 },
    #[error("--image-gc-low-threshold ({low}) must be below --image-gc-high-threshold ({high})")]
    LowNotBelowHigh { low: u8, high: u8 },
}

impl Policy {
    /// The kubelet's defaults: 85 %, 80 %, 2 minutes.
    pub const DEFAULT: Policy = Policy { high_percent: 85, low_percent: 80, min_age: Duration::from_secs(120) };

    /// Checked as the kubelet checks its configuration.
    pub fn new(high_percent: u8, low_percent: u8, min_age: Duration) -> Result<Policy, PolicyError> {
        for (which, value) in [("high", high_percent), ("low", low_percent)] {
            if value > 100 {
                return Err(PolicyError::Range { which, value });
            }
        }
        if low_percent >= high_percent {
            return Err(PolicyError::LowNotBelowHigh { low: low_percent, high: high_percent });
        }
        Ok(Policy { high_percent, low_percent, min_age })
    }

    pub fn enabled(&self) -> bool {
        self.high_percent < 100
    }
}

/// The filesystem's size and what is free to unprivileged writers (statvfs f_bavail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskUsage {
    pub capacity: u64,
    pub available: u64,
}

impl DiskUsage {
    /// Percent used, rounded as the kubelet rounds it (`100 - available*100/capacity`).
    pub fn percent_used(&self) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        let free = u128::from(self.available) * 100 / u128::from(self.capacity);
        100u64.saturating_sub(u64::try_from(free).unwrap_or(100))
    }
}

/// One image (an image ID, with every tag it has) as the decision sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub names: Vec<String>,
    /// What it keeps on disk (blobs, unpacked layers), by a key other images may share,
    /// with the bytes each takes: removing the image frees a part no other image keeps.
    pub parts: BTreeMap<String, u64>,
    pub imported: SystemTime,
    pub last_used: Option<SystemTime>,
    /// A pod of this daemon names it (in any state), or a container's rootfs holds it.
    pub in_use: bool,
}

/// An image to remove and what that frees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    pub id: String,
    pub names: Vec<String>,
    pub freed: u64,
}

/// What to do when the disk is over the high threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Bytes to free to be under the low threshold.
    pub to_free: u64,
    /// Least recently used first.
    pub removals: Vec<Removal>,
}

impl Plan {
    pub fn freed(&self) -> u64 {
        self.removals.iter().map(|r| r.freed).sum()
    }
}

/// Which images to remove: None while the disk is under the high threshold (or
/// collection is off). Candidates are the images not in use and at least `min_age` old,
/// by last use (an image never used by its import time), oldest first; they are taken
/// until what they free reaches the amount that brings usage under the low threshold.
/// The plan may fall short of it; then it holds every candidate.
pub fn plan(policy: &Policy, usage: DiskUsage, images: &[Image], now: SystemTime) -> Option<Plan> {
    if !policy.enabled() || usage.percent_used() < u64::from(policy.high_percent) {
        return None;
    }
    let keep_free = u128::from(usage.capacity) * u128::from(100 - policy.low_percent.min(100)) / 100;
    let to_free = u64::try_from(keep_free.saturating_sub(u128::from(usage.available))).unwrap_or(u64::MAX);
    // How many images keep each part; a part is freed when the last goes.
    let mut holders: BTreeMap<&str, usize> = BTreeMap::new();
    for image in images {
        for part in image.parts.keys() {
            *holders.entry(part).or_default() += 1;
        }
    }
    let old_enough = |i: &Image| now.duration_since(i.imported).is_ok_and(|age| age >= policy.min_age);
    let mut candidates: Vec<&Image> = images.iter().filter(|i| !i.in_use && old_enough(i)).collect();
    candidates
        .sort_by(|a, b| (a.last_used.unwrap_or(a.imported), &a.id).cmp(&(b.last_used.unwrap_or(b.imported), &b.id)));
    let mut removals = Vec::new();
    let mut freed = 0u64;
    for image in candidates {
        if freed >= to_free {
            break;
        }
        let mut frees = 0u64;
        for (part, bytes) in &image.parts {
            if let Some(n) = holders.get_mut(part.as_str()) {
                *n -= 1;
                if *n == 0 {
                    frees += bytes;
                }
            }
        }
        freed = freed.saturating_add(frees);
        removals.push(Removal { id: image.id.clone(), names: image.names.clone(), freed: frees });
    }
    Some(Plan { to_free, removals })
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("statvfs {path}: {source}")]
    Statvfs { path: String, source: std::io::Error },
    #[error("image store: {0}")]
    Store(#[from] StoreError),
}

/// The size and free space of the filesystem holding `path`.
pub fn disk_usage(path: &Path) -> Result<DiskUsage, GcError> {
    let err = |source| GcError::Statvfs { path: path.display().to_string(), source };
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| err(std::io::Error::from(e)))?;
    let frsize = st.fragment_size();
    Ok(DiskUsage {
        capacity: st.blocks().saturating_mul(frsize),
        available: st.blocks_available().saturating_mul(frsize),
    })
}

/// The images the daemon's pods name, whatever state they are in (being made included:
/// the daemon lists a pod before it resolves the pod's images).
fn images_of_pods(daemon: &Daemon) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in daemon.list() {
        let Some(spec) = entry.pod.spec.as_ref() else { continue };
        let containers = spec.containers.iter().chain(spec.init_containers.iter().flatten());
        names.extend(containers.filter_map(|c| c.image.clone()));
        names.extend(spec.ephemeral_containers.iter().flatten().filter_map(|c| c.image.clone()));
    }
    names
}

/// The images of the store as [`plan`] sees them.
fn images_of_store(
    store: &Store,
    records: &[ImageRecord],
    pod_images: &BTreeSet<String>,
    mounted: &BTreeSet<Digest>,
) -> Vec<Image> {
    let used_ids: BTreeSet<Digest> =
        pod_images.iter().filter_map(|name| store.resolve(name).ok()).map(|r| r.config).collect();
    let mut layer_bytes: BTreeMap<&Digest, u64> = BTreeMap::new();
    let mut by_id: BTreeMap<&Digest, Image> = BTreeMap::new();
    for r in records {
        let imported = store.imported_at(r).unwrap_or(SystemTime::UNIX_EPOCH);
        let image = by_id.entry(r.id()).or_insert_with(|| Image {
            id: r.id().to_string(),
            names: Vec::new(),
            parts: BTreeMap::new(),
            imported,
            last_used: store.last_used(r.id()),
            in_use: used_ids.contains(r.id()),
        });
        image.names.push(r.name.clone());
        image.imported = image.imported.min(imported);
        // A container's root filesystem holds the image's whole chain.
        image.in_use |= r.chain.last().is_some_and(|top| mounted.contains(top));
        for blob in r.layers.iter().chain([&r.manifest, &r.config]) {
            image.parts.entry(format!("blob {blob}")).or_insert_with(|| store.blob_disk_bytes(blob));
        }
        for chain_id in &r.chain {
            let bytes = *layer_bytes.entry(chain_id).or_insert_with(|| store.layer_disk_bytes(chain_id));
            image.parts.insert(format!("layer {chain_id}"), bytes);
        }
    }
    by_id.into_values().collect()
}

/// Collects images now if the disk is over the high threshold; returns what was removed.
/// The decision and the removal happen under the store's exclusive lock.
pub fn collect(daemon: &Daemon, policy: &Policy) -> Result<Vec<Removal>, GcError> {
    let store = Store::open(&daemon.opts.root)?;
    let usage = disk_usage(store.root())?;
    if plan(policy, usage, &[], SystemTime::now()).is_none() {
        return Ok(Vec::new());
    }
    let mut decided = None;
    store.remove_chosen(|records, mounted| {
        // Measured again: what waited for the lock may have changed it.
        let Ok(usage) = disk_usage(store.root()) else { return Vec::new() };
        let images = images_of_store(&store, records, &images_of_pods(daemon), mounted);
        let Some(plan) = plan(policy, usage, &images, SystemTime::now()) else { return Vec::new() };
        let names = plan.removals.iter().flat_map(|r| r.names.clone()).collect();
        decided = Some((usage, plan));
        names
    })?;
    let Some((before, plan)) = decided else { return Ok(Vec::new()) };
    // At warn, the daemon's default level: the disk is over its high threshold.
    for r in &plan.removals {
        tracing::warn!(image = %r.id, bytes = r.freed, "freed {} bytes, removed {}", r.freed, r.names.join(", "));
    }
    let after = disk_usage(store.root()).map(|u| u.percent_used()).unwrap_or_default();
    if plan.freed() < plan.to_free {
        tracing::warn!(
            "image garbage collection: the disk was {}% full; {} bytes were to be freed but only {} could be (images in use or younger than {:?} stay); now {}% full",
            before.percent_used(),
            plan.to_free,
            plan.freed(),
            policy.min_age,
            after
        );
    } else {
        tracing::info!("image garbage collection: the disk was {}% full, now {}%", before.percent_used(), after);
    }
    Ok(plan.removals)
}

/// Collects once, logging a failure (the daemon carries on whatever happens here).
fn collect_logged(daemon: &Daemon, policy: &Policy) {
    if let Err(e) = collect(daemon, policy) {
        tracing::warn!("image garbage collection: {e}");
    }
}

/// Before a pod is made: frees space if the disk is over the high threshold.
pub fn before_pod(daemon: &Daemon) {
    if let Some(policy) = daemon.image_gc.get() {
        collect_logged(daemon, policy);
    }
}

/// Marks the images the daemon's pods name as used now: as the kubelet's image manager
/// refreshes lastUsed each period, an image a long-running pod holds counts as used until
/// the pod goes, not only when the pod was made.
fn mark_in_use(daemon: &Daemon) {
    let Ok(store) = Store::open(&daemon.opts.root) else { return };
    for name in images_of_pods(daemon) {
        if let Ok(record) = store.resolve(&name) {
            let _ = store.mark_used(record.id());
        }
    }
}

/// Turns collection on for `daemon`: every `period`, and before each pod is made.
pub fn start(daemon: &Arc<Daemon>, policy: Policy, period: Duration) -> std::io::Result<()> {
    if !policy.enabled() || daemon.image_gc.set(policy).is_err() {
        return Ok(());
    }
    let daemon = daemon.clone();
    std::thread::Builder::new().name("image gc".into()).spawn(move || {
        loop {
            std::thread::sleep(period);
            mark_in_use(&daemon);
            collect_logged(&daemon, &policy);
        }
    })?;
    Ok(())
}

/// A duration as the kubelet's flags take one: `2m`, `1m30s`, `90s`, `500ms`, `1h`; a
/// bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(number * scale).ok()?;
    }
    (!text.is_empty()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn image(id: &str, parts: &[(&str, u64)], imported: u64, last_used: Option<u64>) -> Image {
        Image {
            id: id.into(),
            names: vec![format!("{id}:latest")],
            parts: parts.iter().map(|(k, b)| (k.to_string(), *b)).collect(),
            imported: at(imported),
            last_used: last_used.map(at),
            in_use: false,
        }
    }

    fn policy() -> Policy {
        Policy::new(85, 80, Duration::from_secs(120)).unwrap()
    }

    /// 100 MB, `used` of it taken.
    fn disk(used: u64) -> DiskUsage {
        DiskUsage { capacity: 100 * MB, available: (100 - used) * MB }
    }

    fn removed(plan: &Plan) -> Vec<&str> {
        plan.removals.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn nothing_is_collected_under_the_high_threshold_or_when_it_is_100() {
        let images = [image("a", &[("a", 50 * MB)], 0, None)];
        assert_eq!(plan(&policy(), disk(84), &images, at(10_000)), None);
        let off = Policy::new(100, 80, Duration::ZERO).unwrap();
        assert_eq!(plan(&off, disk(100), &images, at(10_000)), None);
        assert!(plan(&policy(), disk(85), &images, at(10_000)).is_some());
    }

    #[test]
    fn the_least_recently_used_go_first_until_usage_is_under_the_low_threshold() {
        // 90 % full: 10 MB to free to reach 80 %.
        let images = [
            image("recent", &[("r", 6 * MB)], 0, Some(5_000)),
            image("never-used-old", &[("n", 6 * MB)], 100, None),
            image("used-long-ago", &[("u", 6 * MB)], 0, Some(1_000)),
        ];
        let p = plan(&policy(), disk(90), &images, at(10_000)).unwrap();
        assert_eq!(p.to_free, 10 * MB);
        assert_eq!(removed(&p), ["never-used-old", "used-long-ago"]);
        assert_eq!(p.freed(), 12 * MB);
    }

    #[test]
    fn images_in_use_or_younger_than_the_minimum_age_stay_even_if_that_is_not_enough() {
        let mut busy = image("busy", &[("b", 30 * MB)], 0, Some(0));
        busy.in_use = true;
        let young = image("young", &[("y", 30 * MB)], 9_950, None);
        let old = image("old", &[("o", MB)], 0, None);
        let p = plan(&policy(), disk(99), &[busy, young, old], at(10_000)).unwrap();
        assert_eq!(removed(&p), ["old"]);
        assert!(p.freed() < p.to_free);
    }

    #[test]
    fn a_part_shared_with_a_kept_image_frees_nothing_and_tags_go_together() {
        let mut busy = image("busy", &[("base", 20 * MB), ("b", MB)], 0, Some(9_000));
        busy.in_use = true;
        let mut tagged = image("tagged", &[("base", 20 * MB), ("t", 2 * MB)], 0, None);
        tagged.names = vec!["x:1".into(), "x:2".into()];
        let alone = image("alone", &[("base2", 20 * MB)], 0, Some(8_000));
        let p = plan(&policy(), disk(90), &[busy, tagged, alone], at(10_000)).unwrap();
        assert_eq!(
            p.removals,
            [
                Removal { id: "tagged".into(), names: vec!["x:1".into(), "x:2".into()], freed: 2 * MB },
                Removal { id: "alone".into(), names: vec!["alone:latest".into()], freed: 20 * MB },
            ]
        );
    }

    #[test]
    fn the_thresholds_are_checked_as_the_kubelet_checks_them() {
        assert_eq!(Policy::new(85, 80, Duration::ZERO).map(|p| p.enabled()), Ok(true));
        assert_eq!(Policy::new(80, 80, Duration::ZERO), Err(PolicyError::LowNotBelowHigh { low: 80, high: 80 }));
        assert_eq!(Policy::new(101, 80, Duration::ZERO), Err(PolicyError::Range { which: "high", value: 101 }));
        assert_eq!(Policy::new(100, 99, Duration::ZERO).map(|p| p.enabled()), Ok(false));
    }

    #[test]
    fn durations_read_as_the_kubelet_writes_them() {
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m0s"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2 weeks"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("-1"), None);
    }
}
