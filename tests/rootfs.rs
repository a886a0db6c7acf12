//! The overlay root filesystem API, on layers placed straight into a store (the unpacker
//! has tests of its own): union view, copy-up, many layers, cleanup, garbage collection.

use std::fs;
use std::path::Path;

use nodectl::image::digest::Digest;
use nodectl::image::rootfs::{self, MountApi};
use nodectl::image::{ImageRecord, Store};

/// A store with `n` fake layers; layer i holds `/layer-i` and overrides `/top` with "i".
fn store_with_layers(dir: &Path, n: usize) -> (Store, ImageRecord) {
    let store = Store::open(dir).unwrap();
    let chain: Vec<Digest> = (0..n).map(|i| Digest::of_bytes(format!("layer {i}").as_bytes())).collect();
    for (i, c) in chain.iter().enumerate() {
        let p = store.layer_path(c);
        fs::create_dir_all(p.join("etc")).unwrap();
        fs::write(p.join(format!("layer-{i}")), "x").unwrap();
        fs::write(p.join("top"), i.to_string()).unwrap();
    }
    let record = ImageRecord {
        name: "localhost/fake:latest".into(),
        manifest: Digest::of_bytes(b"m"),
        config: Digest::of_bytes(b"c"),
        layers: chain.clone(),
        chain,
        size: 0,
        created: None,
    };
    (store, record)
}

fn is_mounted(path: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

/// Unmounts whatever a failed assertion left behind.
struct Cleanup<'a>(&'a Store, &'a str);
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = rootfs::remove(self.0, self.1);
    }
}

fn check_union(api: MountApi, layers: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let (store, image) = store_with_layers(tmp.path(), layers);
    let _c = Cleanup(&store, "c1");
    let merged = rootfs::prepare_with(&store, &image, "c1", api).unwrap();
    assert!(is_mounted(&merged));
    for i in 0..layers {
        assert!(merged.join(format!("layer-{i}")).exists(), "layer {i} missing from the union");
    }
    assert_eq!(fs::read_to_string(merged.join("top")).unwrap(), (layers - 1).to_string(), "the top layer wins");
    // Writes land in the container's upper directory, never in a shared layer.
    fs::write(merged.join("top"), "changed").unwrap();
    assert_eq!(
        fs::read_to_string(store.layer_path(image.chain.last().unwrap()).join("top")).unwrap(),
        (layers - 1).to_string()
    );
    assert_eq!(fs::read_to_string(rootfs::dir(&store, "c1").join("upper/top")).unwrap(), "changed");
    rootfs::remove(&store, "c1").unwrap();
    assert!(!is_mounted(&merged));
    assert!(!rootfs::dir(&store, "c1").exists());
}

#[test]
fn union_of_three_layers() {
    check_union(MountApi::Auto, 3);
}

#[test]
fn union_of_three_layers_legacy_mount() {
    check_union(MountApi::Legacy, 3);
}

#[test]
fn five_hundred_layers_mount_through_fsconfig() {
    // 500 full paths are far past mount(2)'s one-page option limit.
    check_union(MountApi::Auto, 500);
}

#[test]
fn legacy_mount_uses_short_links_for_many_layers() {
    check_union(MountApi::Legacy, 60);
}

#[test]
fn legacy_mount_past_a_page_is_a_clear_error_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, image) = store_with_layers(tmp.path(), 500);
    let err = rootfs::prepare_with(&store, &image, "big", MountApi::Legacy).unwrap_err();
    assert!(err.to_string().contains("500 layers"), "{err}");
    assert!(!rootfs::dir(&store, "big").exists());
}

#[test]
fn ids_that_could_escape_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, image) = store_with_layers(tmp.path(), 1);
    for id in ["../escape", "a/b", ""] {
        assert!(rootfs::prepare(&store, &image, id).is_err(), "{id:?}");
    }
    assert!(!tmp.path().join("images/escape").exists());
    assert!(rootfs::prepare(&store, &image, "dup").is_ok());
    let _c = Cleanup(&store, "dup");
    assert!(rootfs::prepare(&store, &image, "dup").unwrap_err().to_string().contains("already exists"));
}

#[test]
fn garbage_collection_keeps_layers_a_container_uses() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, image) = store_with_layers(tmp.path(), 2);
    let _c = Cleanup(&store, "busy");
    rootfs::prepare_with(&store, &image, "busy", MountApi::Legacy).unwrap();
    // No image in the index refers to these layers: only the container holds them.
    store.gc().unwrap();
    for c in &image.chain {
        assert!(store.layer_path(c).is_dir(), "gc removed a layer in use");
    }
    rootfs::remove(&store, "busy").unwrap();
    store.gc().unwrap();
    for c in &image.chain {
        assert!(!store.layer_path(c).exists(), "gc kept an unused layer");
    }
    assert_eq!(fs::read_dir(store.root().join("l")).unwrap().count(), 0, "gc kept dangling short links");
}
