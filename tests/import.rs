//! `nodectl image import / ls / inspect / rm` on the images rootfs-tools builds: every
//! archive form, shared layers, platform selection, corrupt input leaving the store as it
//! was, and two importers at once.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{copy_dir, fails, images, nodectl, ok, run_in_image, tree};
use nodectl::image::{Store, rootfs};

const BUSYBOX: &str = "docker.io/library/busybox:latest";

fn layer_count(root: &Path) -> usize {
    fs::read_dir(root.join("images/layers")).unwrap().count()
}

#[test]
fn every_archive_form_imports_to_a_working_image() {
    let img = images();
    for form in [
        "busybox",
        "busybox.oci.tar",
        "busybox.docker.tar",
        "busybox.docker-legacy.tar",
        "busybox.docker25.tar",
        "busybox-zstd",
        "busybox-index",
    ] {
        let root = tempfile::tempdir().unwrap();
        let out = ok(root.path(), &["image", "import", img.join(form).to_str().unwrap(), "--name", "busybox"]);
        assert!(out.starts_with(BUSYBOX), "{form}: {out}");
        let ls = ok(root.path(), &["image", "ls"]);
        assert!(ls.contains(BUSYBOX), "{form}: ls shows {ls}");
        let config: serde_json::Value =
            serde_json::from_str(&ok(root.path(), &["image", "inspect", "busybox"])).unwrap();
        assert_eq!(config["config"]["Cmd"][0], "sh", "{form}: {config}");
        assert_eq!(config["architecture"], "amd64", "{form}");
        let echoed = run_in_image(root.path(), "busybox", &["/bin/sh", "-c", "echo hello from $(id -un)"]);
        assert_eq!(echoed.trim(), "hello from root", "{form}");
    }
}

#[test]
fn archives_carry_their_own_names() {
    let img = images();
    for form in ["busybox.docker.tar", "busybox.docker-legacy.tar", "busybox.docker25.tar"] {
        let root = tempfile::tempdir().unwrap();
        let out = ok(root.path(), &["image", "import", img.join(form).to_str().unwrap()]);
        assert!(out.starts_with(BUSYBOX), "{form}: {out}");
    }
}

#[test]
fn one_layer_is_unpacked_once_for_every_image_that_shares_it() {
    let img = images();
    let root = tempfile::tempdir().unwrap();
    // The OCI layout and its archive are the same image; the docker forms carry the same
    // layer uncompressed, so the same diff_id and ChainID.
    for (form, name) in
        [("busybox", "a:1"), ("busybox.oci.tar", "b:1"), ("busybox.docker.tar", "c:1"), ("busybox.docker25.tar", "d:1")]
    {
        ok(root.path(), &["image", "import", img.join(form).to_str().unwrap(), "--name", name]);
    }
    assert_eq!(layer_count(root.path()), 1);
    assert_eq!(ok(root.path(), &["image", "ls", "-q"]).lines().count(), 4);
}

#[test]
fn rm_keeps_layers_another_image_still_uses() {
    let img = images();
    let root = tempfile::tempdir().unwrap();
    let layout = img.join("busybox");
    ok(root.path(), &["image", "import", layout.to_str().unwrap(), "--name", "one"]);
    ok(root.path(), &["image", "import", layout.to_str().unwrap(), "--name", "two"]);
    ok(root.path(), &["image", "import", img.join("multilayer").to_str().unwrap(), "--name", "multi"]);
    let all_layers = layer_count(root.path());
    assert!(all_layers >= 3);

    let out = ok(root.path(), &["image", "rm", "multi"]);
    assert!(out.contains("docker.io/library/multi:latest"), "{out}");
    assert_eq!(layer_count(root.path()), 1, "multilayer's layers go, busybox's stays");

    ok(root.path(), &["image", "rm", "one"]);
    assert_eq!(layer_count(root.path()), 1, "two still uses the busybox layer");
    run_in_image(root.path(), "two", &["/bin/true"]);

    ok(root.path(), &["image", "rm", "two"]);
    assert_eq!(layer_count(root.path()), 0);
    assert_eq!(fs::read_dir(root.path().join("images/blobs/sha256")).unwrap().count(), 0);
    assert!(fails(root.path(), &["image", "rm", "two"]).contains("no image matches"));
}

#[test]
fn rm_by_id_removes_every_tag() {
    let img = images();
    let root = tempfile::tempdir().unwrap();
    let layout = img.join("busybox");
    let out = ok(root.path(), &["image", "import", layout.to_str().unwrap(), "--name", "one"]);
    ok(root.path(), &["image", "import", layout.to_str().unwrap(), "--name", "two"]);
    let id = out.split_whitespace().nth(1).unwrap().trim_start_matches("sha256:")[..12].to_string();
    let removed = ok(root.path(), &["image", "rm", &id]);
    assert_eq!(removed.lines().count(), 2, "{removed}");
    assert_eq!(ok(root.path(), &["image", "ls", "-q"]), "");
}

#[test]
fn index_picks_linux_amd64() {
    let img = images();
    let root = tempfile::tempdir().unwrap();
    ok(root.path(), &["image", "import", img.join("busybox-index").to_str().unwrap(), "--name", "multiarch"]);
    let config: serde_json::Value = serde_json::from_str(&ok(root.path(), &["image", "inspect", "multiarch"])).unwrap();
    assert_eq!(config["architecture"], "amd64");
    run_in_image(root.path(), "multiarch", &["/bin/true"]);
}

#[test]
fn multilayer_image_merges_as_the_spec_says() {
    let img = images();
    let root = tempfile::tempdir().unwrap();
    ok(root.path(), &["image", "import", img.join("multilayer").to_str().unwrap(), "--name", "multi"]);
    let store = Store::open(root.path()).unwrap();
    let rec = store.resolve("multi").unwrap();
    let merged = rootfs::prepare(&store, &rec, "multi-check").unwrap();
    let checker = Path::new(env!("CARGO_MANIFEST_DIR")).join("rootfs-tools/check_tree.py");
    let out = Command::new("python3").arg(checker).arg(img.join("multilayer.expected.json")).arg(&merged).output();
    rootfs::remove(&store, "multi-check").unwrap();
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "merged rootfs differs from multilayer.expected.json:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Imports `path` into a store that already holds another image, expects failure with
/// `needle` in the message, and checks the store did not change. (Had the store held the
/// same blobs already, the source's copies would never be read: content addressing.)
fn refused_and_store_unchanged(path: &Path, needle: &str) {
    let root = tempfile::tempdir().unwrap();
    ok(root.path(), &["image", "import", images().join("multilayer").to_str().unwrap(), "--name", "keep"]);
    let before = tree(root.path());
    let err = fails(root.path(), &["image", "import", path.to_str().unwrap(), "--name", "bad"]);
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert_eq!(tree(root.path()), before, "a failed import changed the store");
    assert!(!ok(root.path(), &["image", "ls"]).contains("bad"));
}

/// The layout's blob files, biggest (the layer) first.
fn blobs_by_size(layout: &Path) -> Vec<std::path::PathBuf> {
    let mut blobs: Vec<_> = fs::read_dir(layout.join("blobs/sha256")).unwrap().map(|e| e.unwrap().path()).collect();
    blobs.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    blobs
}

#[test]
fn a_corrupt_layer_blob_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("corrupt");
    copy_dir(&images().join("busybox"), &layout);
    let layer = &blobs_by_size(&layout)[0];
    let mut data = fs::read(layer).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    fs::write(layer, data).unwrap();
    refused_and_store_unchanged(&layout, "hashes to");
}

#[test]
fn a_missing_blob_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("missing");
    copy_dir(&images().join("busybox"), &layout);
    fs::remove_file(&blobs_by_size(&layout)[0]).unwrap();
    refused_and_store_unchanged(&layout, "missing");
}

#[test]
fn a_truncated_archive_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for form in ["busybox.oci.tar", "busybox.docker.tar"] {
        let data = fs::read(images().join(form)).unwrap();
        let cut = tmp.path().join(format!("cut-{form}"));
        fs::write(&cut, &data[..data.len() / 2]).unwrap();
        refused_and_store_unchanged(&cut, "truncated");
    }
}

#[test]
fn a_layer_whose_content_disagrees_with_the_config_is_refused() {
    // Swap in the zstd variant's layer under the gzip layer's name: the blob digest then
    // fails. Instead, point the manifest at a config whose diff_id is wrong, re-hashing the
    // config and manifest so only the diff_id check can catch it.
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("bad-diffid");
    copy_dir(&images().join("busybox"), &layout);
    let blobs = layout.join("blobs/sha256");
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_hex = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blobs.join(&manifest_hex)).unwrap()).unwrap();
    let config_hex = manifest["config"]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let mut config: serde_json::Value = serde_json::from_slice(&fs::read(blobs.join(&config_hex)).unwrap()).unwrap();
    config["rootfs"]["diff_ids"][0] = serde_json::Value::String(format!("sha256:{}", "0".repeat(64)));
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = nodectl::image::digest::Digest::of_bytes(&config_bytes);
    fs::write(blobs.join(config_digest.hex()), &config_bytes).unwrap();
    manifest["config"]["digest"] = config_digest.to_string().into();
    manifest["config"]["size"] = config_bytes.len().into();
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = nodectl::image::digest::Digest::of_bytes(&manifest_bytes);
    fs::write(blobs.join(manifest_digest.hex()), &manifest_bytes).unwrap();
    let mut index = index;
    index["manifests"][0]["digest"] = manifest_digest.to_string().into();
    index["manifests"][0]["size"] = manifest_bytes.len().into();
    fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    refused_and_store_unchanged(&layout, "diff_id");
}

#[test]
fn not_an_image_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.tar");
    fs::write(&junk, b"this is not a tar archive at all").unwrap();
    let root = tempfile::tempdir().unwrap();
    let err = fails(root.path(), &["image", "import", junk.to_str().unwrap()]);
    assert!(err.contains("junk.tar"), "{err}");
    let err = fails(root.path(), &["image", "import", "/nonexistent/image"]);
    assert!(err.contains("/nonexistent/image"), "{err}");
    let err =
        fails(root.path(), &["image", "import", images().join("busybox").to_str().unwrap(), "--name", "Bad Name"]);
    assert!(err.contains("invalid"), "{err}");
    let err = fails(root.path(), &["image", "inspect", "nothing-here"]);
    assert!(err.contains("no image matches"), "{err}");
}

#[test]
fn two_processes_import_at_once() {
    let img = images();
    for round in 0..3 {
        let root = tempfile::tempdir().unwrap();
        let spawn = |form: &str, name: &str| {
            Command::new(env!("CARGO_BIN_EXE_nodectl"))
                .arg("--root")
                .arg(root.path())
                .args(["image", "import", img.join(form).to_str().unwrap(), "--name", name])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let a = spawn("busybox", "a");
        let b = spawn(if round == 1 { "busybox.oci.tar" } else { "busybox.docker.tar" }, "b");
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert_eq!(layer_count(root.path()), 1, "round {round}");
        assert_eq!(ok(root.path(), &["image", "ls", "-q"]).lines().count(), 2, "round {round}");
        assert_eq!(
            fs::read_dir(root.path().join("images/tmp")).unwrap().count(),
            0,
            "round {round}: staging left behind"
        );
        run_in_image(root.path(), "b", &["/bin/true"]);
        let _ = nodectl(root.path(), &["image", "rm", "a", "b"]);
    }
}

/// Unmounts a test's tmpfs on drop.
struct Tmpfs(std::path::PathBuf);
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("small");
    fs::create_dir(&root).unwrap();
    // Room for the multilayer image, not for busybox's 2 MB layer as well.
    nix::mount::mount(Some("tmpfs"), &root, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=1200k")).unwrap();
    let _m = Tmpfs(root.clone());
    ok(&root, &["image", "import", images().join("multilayer").to_str().unwrap(), "--name", "keep"]);
    let before = tree(&root);
    for form in ["busybox", "busybox.docker.tar"] {
        let err = fails(&root, &["image", "import", images().join(form).to_str().unwrap(), "--name", "big"]);
        assert!(err.contains("No space left on device"), "{form}: {err}");
        assert_eq!(tree(&root), before, "{form}: a failed import changed the store");
    }
    assert!(ok(&root, &["image", "ls"]).contains("docker.io/library/keep:latest"));
}

#[test]
fn an_oversized_json_document_is_refused_by_its_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("huge-index");
    copy_dir(&images().join("busybox"), &layout);
    let mut index = fs::read(layout.join("index.json")).unwrap();
    // Valid JSON still: whitespace. Only the size is wrong.
    index.extend(std::iter::repeat_n(b' ', 17 << 20));
    fs::write(layout.join("index.json"), index).unwrap();
    refused_and_store_unchanged(&layout, "16 MiB limit");
}

/// An unpacked docker-archive directory, beside a directory `outside` of the test's.
fn docker_dir(tmp: &Path) -> std::path::PathBuf {
    let dir = tmp.join("docker");
    fs::create_dir(&dir).unwrap();
    let st = Command::new("tar").arg("xf").arg(images().join("busybox.docker.tar")).arg("-C").arg(&dir).status();
    assert!(st.unwrap().success());
    dir
}

fn manifest_with(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut m[0]);
    fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
}

#[test]
fn a_docker_archive_directory_cannot_name_files_outside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = docker_dir(tmp.path());
    // The real config and layer, moved out of the directory: were names followed out of
    // it, the import would succeed.
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let (config, layer) =
        (m[0]["Config"].as_str().unwrap().to_string(), m[0]["Layers"][0].as_str().unwrap().to_string());
    fs::rename(dir.join(&config), outside.join(&config)).unwrap();
    fs::copy(dir.join(&layer), outside.join(&layer)).unwrap();

    let absolute = outside.join(&config).to_str().unwrap().to_string();
    manifest_with(&dir, |e| e["Config"] = absolute.clone().into());
    refused_and_store_unchanged(&dir, "missing");

    manifest_with(&dir, |e| e["Config"] = format!("../outside/{config}").into());
    refused_and_store_unchanged(&dir, "missing");

    // A symlink inside the directory that points out of it is resolved inside it too.
    std::os::unix::fs::symlink(outside.join(&config), dir.join("link.json")).unwrap();
    manifest_with(&dir, |e| e["Config"] = "link.json".into());
    refused_and_store_unchanged(&dir, "missing");
}

#[test]
fn a_layout_blob_that_is_a_device_or_a_fifo_is_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, make) in ["zero", "fifo"].into_iter().enumerate() {
        let layout = tmp.path().join(format!("layout-{i}"));
        copy_dir(&images().join("busybox"), &layout);
        let layer = blobs_by_size(&layout)[0].clone();
        fs::remove_file(&layer).unwrap();
        match make {
            // Followed, /dev/zero would fill the disk; inside the root it is not there.
            "zero" => std::os::unix::fs::symlink("/dev/zero", &layer).unwrap(),
            // Opened for reading, a FIFO would wait for a writer for ever.
            _ => nix::unistd::mkfifo(&layer, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap(),
        }
        refused_and_store_unchanged(&layout, if make == "fifo" { "not a regular file" } else { "missing" });
    }
}

#[test]
fn a_layer_over_the_configured_size_limit_is_refused_and_the_store_kept() {
    let root = tempfile::tempdir().unwrap();
    ok(root.path(), &["image", "import", images().join("multilayer").to_str().unwrap(), "--name", "keep"]);
    let before = tree(root.path());
    let out = Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .arg("--root")
        .arg(root.path())
        .args(["image", "import", images().join("busybox").to_str().unwrap(), "--name", "big"])
        .env("NODECTL_MAX_LAYER_SIZE", "64Ki")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("65536 bytes, the limit"), "{err}");
    assert_eq!(tree(root.path()), before, "a refused layer changed the store");
}
