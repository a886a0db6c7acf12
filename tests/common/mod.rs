//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cgroups;
pub mod daemon;
pub mod etcd;
pub mod lan;
pub mod portforward;
pub mod server;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory `make test` builds the test images into (rootfs-tools/build-images.sh).
pub fn images() -> PathBuf {
    let dir = std::env::var_os("NODECTL_TEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/images"));
    assert!(
        dir.join("busybox/index.json").exists(),
        "test images missing in {}: run `make images` (rootfs-tools/build-images.sh)",
        dir.display()
    );
    dir
}

pub fn nodectl(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodectl")).arg("--root").arg(root).args(args).output().expect("running nodectl")
}

/// Runs nodectl and insists it succeeds; returns stdout.
pub fn ok(root: &Path, args: &[&str]) -> String {
    let out = nodectl(root, args);
    assert!(out.status.success(), "nodectl {args:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs nodectl and insists it fails; returns stderr.
pub fn fails(root: &Path, args: &[&str]) -> String {
    let out = nodectl(root, args);
    assert!(
        !out.status.success(),
        "nodectl {args:?} should have failed but printed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Every path under `dir` with its kind, size and mode: equal snapshots mean nothing changed.
/// Lock files are left out: taking a lock creates them.
pub fn tree(dir: &Path) -> BTreeMap<String, (u32, u64)> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, u64)>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if rel.ends_with("lock") {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            out.insert(rel, (m.mode(), if m.is_dir() { 0 } else { m.size() }));
            if m.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// Copies a directory tree (test images are small).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Mounts `image`'s root filesystem, runs `cmd` in it with chroot, unmounts; returns stdout.
pub fn run_in_image(root: &Path, image: &str, cmd: &[&str]) -> String {
    use nodectl::image::{Store, rootfs};
    let store = Store::open(root).unwrap();
    let rec = store.resolve(image).unwrap();
    let id = format!("t{}-{}", std::process::id(), COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let merged = rootfs::prepare(&store, &rec, &id).unwrap();
    let out = Command::new("chroot").arg(&merged).args(cmd).output();
    rootfs::remove(&store, &id).unwrap();
    let out = out.unwrap();
    assert!(out.status.success(), "{cmd:?} in {image}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// An OCI bundle in `dir`: the busybox image's layer unpacked as `rootfs`, and the
/// default config.json (`nodectl runtime spec`) changed by `edit`.
pub fn bundle(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let img = images().join("busybox");
    let index: serde_json::Value = serde_json::from_slice(&fs::read(img.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| img.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap()).unwrap();
    let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    let bundle = dir.to_path_buf();
    fs::create_dir_all(&bundle).unwrap();
    fs::create_dir_all(bundle.join("rootfs")).unwrap();
    nodectl::image::store::unpack_blob(&layer, &bundle.join("rootfs")).unwrap();
    let mut spec = nodectl::runtime::spec::default_spec();
    spec["process"]["terminal"] = false.into();
    edit(&mut spec);
    fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    bundle
}

/// Writes a changed config.json into an existing bundle.
pub fn edit_config(bundle: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut spec);
    fs::write(path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
}
