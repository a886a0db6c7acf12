//! Failing commands say what failed once, with each cause once (docs/architecture.md,
//! "Errors"): a message that carries its cause is not followed by the cause again.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

/// The error line, checked: one line, starting with `prefix`, no part said twice.
fn said_once(stderr: &str, prefix: &str) -> String {
    let line =
        stderr.lines().rfind(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} line in {stderr:?}"));
    let parts: Vec<&str> = line.split(": ").map(str::trim).filter(|p| p.len() > 3).collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(!parts[i + 1..].contains(p), "{p:?} is said twice in {line:?}");
    }
    assert!(line.matches("os error").count() <= 1, "a system error is said twice in {line:?}");
    line.to_string()
}

#[test]
fn failing_commands_say_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();

    // A file the import cannot read: the path and the system's reason, once.
    let line = said_once(&common::fails(root, &["image", "import", "/nonexistent/busybox.tar"]), "nodectl:");
    assert!(line.contains("/nonexistent/busybox.tar") && line.contains("No such file or directory"), "{line}");

    // A manifest with an unknown field: the file and the field named.
    let pod = root.join("pod.yaml");
    fs::write(&pod, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containerz: []\n").unwrap();
    let line = said_once(&common::fails(root, &["run", pod.to_str().unwrap()]), "nodectl:");
    assert!(line.contains("pod.yaml") && line.contains("containerz"), "{line}");

    // A missing manifest.
    let line = said_once(&common::fails(root, &["run", "/nonexistent/pod.yaml"]), "nodectl:");
    assert!(line.contains("/nonexistent/pod.yaml"), "{line}");

    // A state root that is not a directory.
    let not_dir = root.join("file");
    fs::write(&not_dir, b"").unwrap();
    fs::set_permissions(&not_dir, fs::Permissions::from_mode(0o644)).unwrap();
    let line = said_once(&common::fails(&not_dir, &["image", "ls"]), "nodectl:");
    assert!(line.contains(not_dir.to_str().unwrap()), "{line}");

    // The runtime CLI: a bundle that is not there.
    let line = said_once(
        &common::fails(root, &["runtime", "create", "--bundle", "/nonexistent/bundle", "c1"]),
        "nodectl-runtime:",
    );
    assert!(line.contains("/nonexistent/bundle"), "{line}");
}
