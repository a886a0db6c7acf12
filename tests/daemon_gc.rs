//! `nodectl daemon` on a small disk, for real, as root: image garbage collection by disk
//! thresholds, and a full disk that ends as a pod's status rather than a crash. Each test
//! mounts a tmpfs of its own as the state root and unmounts it at the end, even on failure.

mod common;

use common::daemon::Node;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The size and free bytes of the filesystem holding `path`.
fn statvfs(path: &Path) -> (u64, u64) {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    (st.blocks() * st.fragment_size(), st.blocks_available() * st.fragment_size())
}

/// A daemon whose state root is a small tmpfs of its own.
fn node(size: &str) -> Node {
    Node::on_tmpfs(size, "ndg", 200)
}

/// Writes zeros to `path` until the disk is full.
fn fill(path: &Path) {
    let mut f = fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    loop {
        match f.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    f.sync_all().unwrap();
}

fn pod_yaml(name: &str, image: &str, command: &str, restart: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: {image}, imagePullPolicy: Never, command: [sh, -c, '{command}']}}\n"
    )
}

#[test]
fn a_full_disk_ends_as_a_pod_status_naming_it_and_the_daemon_carries_on() {
    let mut node = node("24M");
    node.import("busybox", "busybox:latest");
    // Collection off: here the disk stays full.
    node.start(&["--image-gc-high-threshold", "100"]);
    let filler = node.root().join("filler");
    fill(&filler);

    let out = node.nodectl(&["run", "--detach", &node.file(&pod_yaml("full", "busybox", "sleep 100", "Always"))]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let failed = node.wait_for("full", |p| p["status"]["phase"] == "Failed");
    let message = failed["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("No space left on device"), "{failed:#}");
    assert_eq!(failed["status"]["reason"], "OutOfDisk", "{failed:#}");
    assert_eq!(failed["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "OutOfDisk", "{failed:#}");
    let table = node.ok(&["get", "pods"]);
    assert!(table.lines().any(|l| l.starts_with("full") && l.contains("OutOfDisk")), "{table}");
    let described = node.ok(&["describe", "pod", "full"]);
    assert!(described.contains("No space left on device"), "{described}");

    // The daemon still answers, and deleting the pod leaves nothing.
    node.ok(&["delete", "pod", "full"]);
    assert!(String::from_utf8_lossy(&node.nodectl(&["get", "pod", "full"]).stderr).contains("not found"));
    node.assert_clean();

    // With room again, a new pod runs.
    fs::remove_file(&filler).unwrap();
    node.ok(&["run", "--detach", &node.file(&pod_yaml("after", "busybox", "echo ran; sleep 100", "Always"))]);
    node.wait_for("after", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    node.ok(&["delete", "pod", "after", "--grace-period", "0"]);
    node.assert_clean();
    assert!(node.daemon_alive(), "the daemon died: {}", node.log());
}

/// Writes `bytes` under `dir/blobs/sha256`; returns its digest.
fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let hex = hex::encode(sha2::Sha256::digest(bytes));
    fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

/// An OCI layout of busybox with one more layer of its own: a file of `bytes` bytes
/// named after `label`. Each such image has a distinct ID and bytes only it keeps.
fn busybox_plus(parent: &Path, label: &str, bytes: usize) -> PathBuf {
    let busybox = common::images().join("busybox");
    let dir = parent.join(format!("image-{label}"));
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let blob = |d: &str| fs::read(busybox.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let index: Value = serde_json::from_slice(&fs::read(busybox.join("index.json")).unwrap()).unwrap();
    let mut manifest: Value = serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let mut config: Value = serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        put_blob(&dir, &blob(layer["digest"].as_str().unwrap()));
    }
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    // Not zeros: the unpacker leaves holes for those, and the layer would take no room.
    tar.append_data(&mut header, format!("data-{label}"), &vec![b'x'; bytes][..]).unwrap();
    let layer = tar.into_inner().unwrap();
    let layer_digest = put_blob(&dir, &layer);
    config["rootfs"]["diff_ids"].as_array_mut().unwrap().push(layer_digest.clone().into());
    let config = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = put_blob(&dir, &config).into();
    manifest["config"]["size"] = config.len().into();
    manifest["layers"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()
    }));
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put_blob(&dir, &manifest), "size": manifest.len()
    }]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion": "1.0.0"}"#).unwrap();
    dir
}

#[test]
fn over_the_high_threshold_unused_old_images_go_least_recently_used_first_until_under_the_low_one() {
    const MIN_AGE: u64 = 15;
    const MB: usize = 1 << 20;
    let mut node = node("48M");
    let layout = |label: &str| busybox_plus(node.scratch(), label, MB).to_string_lossy().into_owned();
    let (a, b, c) = (layout("a"), layout("b"), layout("c"));
    node.import("busybox", "busybox:latest");
    node.ok(&["image", "import", &a, "--name", "old:a"]);
    node.ok(&["image", "import", &a, "--name", "old:a2"]);
    node.ok(&["image", "import", &b, "--name", "old:b"]);
    let old_imported = Instant::now();
    let (low, high) = (50u64, 55u64);
    node.start(&[
        "--image-gc-high-threshold",
        &high.to_string(),
        "--image-gc-low-threshold",
        &low.to_string(),
        "--image-minimum-gc-age",
        &format!("{MIN_AGE}s"),
        "--image-gc-period",
        "500ms",
    ]);
    let bad = node.nodectl(&["daemon", "--image-gc-high-threshold", "80", "--image-gc-low-threshold", "80"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must be below"), "{bad:?}");
    std::thread::sleep(Duration::from_secs(MIN_AGE + 1).saturating_sub(old_imported.elapsed()));

    // young:c is imported now and never used: the least recently used after old:a.
    node.ok(&["image", "import", &c, "--name", "young:c"]);
    // old:b is used after that; busybox:latest is in use while collection runs.
    node.ok(&["run", "--detach", &node.file(&pod_yaml("once", "old:b", "exit 0", "Never"))]);
    node.wait_for("once", |p| p["status"]["phase"] == "Succeeded");
    node.ok(&["delete", "pod", "once"]);
    node.ok(&["run", "--detach", &node.file(&pod_yaml("user", "busybox", "sleep 100", "Always"))]);
    node.wait_for("user", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    assert_eq!(node.images().len(), 5, "collected too early: {}", node.log());

    // Filled so that 3 MB must go to be under the low threshold: more than old:a's own
    // 2 MB (its layer, packed and unpacked), less than old:a's and old:b's. young:c, next
    // by last use, is too young: old:b goes instead.
    let (capacity, available) = statvfs(node.root());
    let target = capacity * (100 - low) / 100 - 3 * MB as u64;
    assert!(available > target, "the images take more of the disk than the test expects");
    // At once (one fallocate), so that collection sees the disk as full as it will be.
    let filler = fs::File::create(node.root().join("filler")).unwrap();
    nix::fcntl::fallocate(&filler, nix::fcntl::FallocateFlags::empty(), 0, (available - target) as i64).unwrap();
    assert!(100 - statvfs(node.root()).1 * 100 / capacity >= high);

    let end = Instant::now() + Duration::from_secs(60);
    while node.images().iter().any(|i| i.contains("old")) {
        assert!(Instant::now() < end, "not collected: {:?}\n{}", node.images(), node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut left = node.images();
    left.sort();
    assert_eq!(left, ["docker.io/library/busybox:latest", "docker.io/library/young:c"], "{}", node.log());
    let after = statvfs(node.root()).1;
    assert!(
        after >= capacity * (100 - low) / 100,
        "still over the low threshold: {after} of {capacity} free, {available} before the fill\n{}",
        node.log()
    );
    let log = node.log();
    let a_line = log.find("removed docker.io/library/old:a, docker.io/library/old:a2");
    let b_line = log.find("removed docker.io/library/old:b");
    assert!(a_line.is_some() && b_line.is_some() && a_line < b_line, "{log}");
    assert!(log.contains("freed "), "{log}");

    // The pod using its image was never disturbed.
    assert_eq!(node.pod("user")["status"]["containerStatuses"][0]["restartCount"], 0);
    node.ok(&["delete", "pod", "user", "--grace-period", "0"]);
    node.assert_clean();
}
