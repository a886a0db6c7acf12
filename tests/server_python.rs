//! `nodectl server` driven by the official Python client (PyPI `kubernetes`, installed by
//! rootfs-tools/install-deps.sh): tests/python/client.py lists, creates, patches
//! (strategic merge), watches with resume, applies server-side with a conflict and a dry run,
//! makes a CRD and its objects, reads /version and /readyz, creates a Deployment and a Job
//! with kube's defaults and gets a 422 naming each field of a bad one, judges a
//! ServiceAccount's token by RBAC (403, a RoleBinding, 200, SelfSubjectAccessReviews),
//! finds an Event by its object, and deletes through it.

mod common;

use std::process::Command;

use common::server::{Server, free_port};

#[test]
fn the_python_client_lists_creates_patches_watches_and_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client.py");
    let out =
        Command::new("python3").arg(script).arg(s.dir.join("admin.kubeconfig")).output().expect("python3 is installed");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        !stderr.contains("No module named 'kubernetes'"),
        "the Python client is missing: run rootfs-tools/install-deps.sh"
    );
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "client.py failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}
