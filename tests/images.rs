//! The test images themselves (rootfs-tools): other tools must read them as real,
//! spec-conformant images, or the import tests prove nothing.

mod common;

use std::process::Command;

use common::images;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running a tool");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn skopeo_reads_every_form() {
    let img = images();
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy.json");
    std::fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    for source in [
        format!("oci:{}:latest", img.join("busybox").display()),
        format!("oci-archive:{}", img.join("busybox.oci.tar").display()),
        format!("docker-archive:{}", img.join("busybox.docker.tar").display()),
        format!("docker-archive:{}", img.join("busybox.docker-legacy.tar").display()),
        format!("docker-archive:{}", img.join("busybox.docker25.tar").display()),
        format!("oci:{}:latest", img.join("busybox-zstd").display()),
        format!("oci:{}:latest", img.join("multilayer").display()),
    ] {
        let out = run(Command::new("skopeo").arg("--policy").arg(&policy).args(["inspect", "--config", &source]));
        let config: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(config["os"], "linux", "{source}");
    }
}

#[test]
fn umoci_unpacks_them_as_we_expect() {
    let img = images();
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("multi");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", img.join("multilayer").display()))
        .arg(&bundle));
    let checker = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rootfs-tools/check_tree.py");
    run(Command::new("python3").arg(&checker).arg(img.join("multilayer.expected.json")).arg(bundle.join("rootfs")));

    let bundle = tmp.path().join("busybox");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", img.join("busybox").display()))
        .arg(&bundle));
    let sh = bundle.join("rootfs/bin/sh");
    assert!(sh.exists(), "busybox applets are linked");
    let passwd = std::fs::read_to_string(bundle.join("rootfs/etc/passwd")).unwrap();
    assert!(passwd.contains("root:x:0:0") && passwd.contains("nobody:x:65534:65534"));
}
