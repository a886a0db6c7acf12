//! `make bench`: `podman run --rm busybox true` with crun (podman's default), runc and
//! nodectl-runtime as podman's OCI runtime, runs alternating; prints the medians and
//! nodectl's ratios. This measures what a user of podman sees: podman, conmon and the
//! runtime together.
//!
//! One private podman store (vfs, in a temp dir) with the busybox test image loaded from
//! its docker-archive; cgroupfs manager, cgroups beneath our own. Like the runtime bench,
//! it runs in a private mount namespace without the (empty) cgroup2 mount, as crun
//! refuses hybrid cgroups.
//!
//! Not a test: it asserts nothing about time.

#[path = "../common/cgroups.rs"]
mod cgroups;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 15;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!("podman is not installed (rootfs-tools/install-deps.sh installs it): skipped");
        return;
    }
    // SAFETY: plain syscalls on our own process, before any thread exists.
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare: {}", std::io::Error::last_os_error());
        libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
        libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH);
    }
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let link = d.join("nodectl-runtime");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nodectl"), &link).unwrap();
    fs::write(
        d.join("storage.conf"),
        format!("[storage]\ndriver = \"vfs\"\nrunroot = \"{0}/runroot\"\ngraphroot = \"{0}/root\"\n", d.display()),
    )
    .unwrap();
    let parent = cgroups::parent_beneath_ours("bench-podman");
    // crun and runc make the path on every hierarchy, named ones too (where our own
    // cgroup may be the root): note which directories are missing now, to remove them all.
    let mut created = Vec::new();
    for mount in fs::read_dir("/sys/fs/cgroup").unwrap().flatten().map(|e| e.path()) {
        let mut p = mount.clone();
        for part in parent.trim_start_matches('/').split('/') {
            p.push(part);
            if !p.exists() {
                created.push(p.clone());
            }
        }
    }
    // podman passes its runtimes no --root: their state roots are their defaults.
    let state_roots = ["/run/nodectl-runtime", "/run/crun", "/run/runc"];
    let existed: Vec<bool> = state_roots.iter().map(|d| Path::new(d).exists()).collect();
    let podman = |runtime: &Path, args: &[&str]| {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .arg("--runtime")
            .arg(runtime)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "podman {args:?} ({}): {}",
            runtime.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let images = std::env::var_os("NODECTL_TEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/images"));
    podman(&link, &["load", "-q", "-i", images.join("busybox.docker.tar").to_str().unwrap()]);

    let mut runtimes = Vec::new();
    for (name, bin) in
        [("nodectl", link.clone()), ("crun", PathBuf::from("/usr/bin/crun")), ("runc", PathBuf::from("/usr/sbin/runc"))]
    {
        if bin.exists() {
            runtimes.push((name, bin));
        } else {
            eprintln!("{name}: {} missing, skipped", bin.display());
        }
    }
    let run = |bin: &Path| {
        let t = Instant::now();
        podman(
            bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
                "--cgroup-parent",
                &parent,
                "busybox",
                "true",
            ],
        );
        t.elapsed()
    };
    for (_, bin) in &runtimes {
        run(bin);
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); runtimes.len()];
    for _ in 0..ROUNDS {
        for (i, (_, bin)) in runtimes.iter().enumerate() {
            times[i].push(run(bin));
        }
    }
    let medians: Vec<Duration> = times
        .into_iter()
        .map(|mut v| {
            v.sort();
            v[v.len() / 2]
        })
        .collect();
    println!("podman run --rm busybox true ({ROUNDS} rounds, alternating), median:");
    for (i, (name, _)) in runtimes.iter().enumerate() {
        println!("  {:<8} {:>8.1} ms", name, medians[i].as_secs_f64() * 1000.0);
    }
    if runtimes[0].0 == "nodectl" {
        for (i, (name, _)) in runtimes.iter().enumerate().skip(1) {
            println!("  nodectl / {:<5} time {:.2}x", name, medians[0].as_secs_f64() / medians[i].as_secs_f64());
        }
    }
    podman(&link, &["rmi", "-a", "-f"]);
    // Our cgroup parent on every hierarchy, children (conmon's, the containers') first,
    // then the ancestors that runtimes made.
    cgroups::remove_everywhere(&parent);
    for (d, existed) in state_roots.iter().zip(existed) {
        if !existed {
            let _ = fs::remove_dir(d);
        }
    }
    created.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in created {
        let _ = fs::remove_dir(&p);
    }
}
