//! `make bench`: create, start, wait for and delete a container running `true` from one
//! busybox bundle, with nodectl-runtime, crun and runc (Debian's), runs alternating, and
//! print the medians and ratios; then the resident memory of a container parked in
//! `created`.
//!
//! All three get the same command lines (`--root R create --bundle B --pid-file P ID`,
//! `start ID`, `delete ID`). We wait as a subreaper: the container's init becomes our child
//! when its `create` exits, so waitpid sees it end, whatever the runtime. The whole
//! benchmark runs in a private mount namespace without the (empty) cgroup2 mount, as crun
//! refuses hybrid cgroups; cgroups go below our own.
//!
//! Not a test: it asserts nothing about time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 40;

struct Runtime {
    name: &'static str,
    bin: PathBuf,
    root: PathBuf,
    bundle: PathBuf,
}

fn cmd(rt: &Runtime, args: &[&str]) {
    // stderr to a file, not a pipe: a created container keeps it open.
    let log = rt.root.join("stderr");
    let status = Command::new(&rt.bin)
        .arg("--root")
        .arg(&rt.root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "{} {args:?}: {}", rt.name, fs::read_to_string(&log).unwrap_or_default());
}

fn create(rt: &Runtime, id: &str) -> i32 {
    let pid_file = rt.root.join(format!("{id}.pid"));
    cmd(rt, &["create", "--bundle", rt.bundle.to_str().unwrap(), "--pid-file", pid_file.to_str().unwrap(), id]);
    fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap()
}

/// One create, start, wait, delete; its wall time.
fn cycle(rt: &Runtime, id: &str) -> Duration {
    let t = Instant::now();
    let pid = create(rt, id);
    cmd(rt, &["start", id]);
    let mut status = 0;
    // SAFETY: waitpid writes one int; we are the init's parent (a subreaper) by now.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "{}: waitpid: {}", rt.name, std::io::Error::last_os_error());
    cmd(rt, &["delete", id]);
    t.elapsed()
}

fn rss_kb(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The busybox image's layer unpacked as a bundle's rootfs, with `true` as the process.
fn make_bundle(dir: &Path, cgroups_path: Option<&str>) -> PathBuf {
    let images = std::env::var_os("NODECTL_TEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/images"));
    let img = images.join("busybox");
    let read = |p: PathBuf| -> serde_json::Value { serde_json::from_slice(&fs::read(p).unwrap()).unwrap() };
    let blob = |d: &str| img.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let index = read(img.join("index.json"));
    let manifest = read(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    fs::create_dir_all(dir.join("rootfs")).unwrap();
    nodectl::image::store::unpack_blob(&layer, &dir.join("rootfs")).unwrap();
    let mut spec = nodectl::runtime::spec::default_spec();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["true"]);
    if let Some(p) = cgroups_path {
        spec["linux"]["cgroupsPath"] = p.into();
    }
    fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    dir.to_path_buf()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
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
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let work = tempfile::tempdir().unwrap();
    let link = work.path().join("nodectl-runtime");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nodectl"), &link).unwrap();
    let parent = format!("nodectl-bench-{}", std::process::id());
    // runc and crun get an absolute cgroupsPath below our own memory cgroup (the one
    // controller here whose own cgroup is not the root); they create the directories on
    // every hierarchy, so note which exist now, to remove only what they add.
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let base = own
        .lines()
        .find(|l| l.contains(":memory:"))
        .and_then(|l| l.splitn(3, ':').nth(2))
        .unwrap_or("/")
        .trim_end_matches('/')
        .to_string();
    let created_dirs = CgroupDirs::before(&format!("{base}/{parent}"));
    // SAFETY: setting our own environment before any thread exists.
    unsafe { std::env::set_var("NODECTL_CGROUP_PARENT", &parent) };
    let mut runtimes = Vec::new();
    for (name, bin) in
        [("nodectl", link.clone()), ("crun", PathBuf::from("/usr/bin/crun")), ("runc", PathBuf::from("/usr/sbin/runc"))]
    {
        if !bin.exists() {
            eprintln!("{name}: {} missing, skipped", bin.display());
            continue;
        }
        let cg = (name != "nodectl").then(|| format!("{base}/{parent}/{name}"));
        let bundle = make_bundle(&work.path().join(format!("bundle-{name}")), cg.as_deref());
        let root = work.path().join(format!("root-{name}"));
        fs::create_dir_all(&root).unwrap();
        runtimes.push(Runtime { name, bin, root, bundle });
    }
    // Warm the page cache and each runtime once.
    for rt in &runtimes {
        cycle(rt, "warm");
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); runtimes.len()];
    for round in 0..ROUNDS {
        for (i, rt) in runtimes.iter().enumerate() {
            times[i].push(cycle(rt, &format!("c{round}")));
        }
    }
    let mut rss = Vec::new();
    for rt in &runtimes {
        let pid = create(rt, "parked");
        std::thread::sleep(Duration::from_millis(100));
        rss.push(rss_kb(pid));
        cmd(rt, &["delete", "--force", "parked"]);
        // SAFETY: reaping our (adopted) child; status is a valid out-pointer.
        unsafe { libc::waitpid(pid, &mut 0, 0) };
    }
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    println!("create + start + wait + delete of `true` ({ROUNDS} rounds, alternating), median:");
    for (i, rt) in runtimes.iter().enumerate() {
        println!(
            "  {:<8} {:>8.1} ms   parked in `created`: {:>6.1} MB resident",
            rt.name,
            medians[i].as_secs_f64() * 1000.0,
            rss[i] as f64 / 1024.0
        );
    }
    if runtimes[0].name == "nodectl" {
        for (i, rt) in runtimes.iter().enumerate().skip(1) {
            println!(
                "  nodectl / {:<5} time {:.2}x, parked memory {:.2}x",
                rt.name,
                medians[0].as_secs_f64() / medians[i].as_secs_f64(),
                rss[0] as f64 / rss[i].max(1) as f64
            );
        }
    }
    let _ = nodectl::runtime::cgroups::remove_parent(&parent);
    created_dirs.remove();
}

/// The directories of one cgroup path on every v1 hierarchy that did not exist before.
struct CgroupDirs(Vec<PathBuf>);

impl CgroupDirs {
    fn before(path: &str) -> CgroupDirs {
        let mut missing = Vec::new();
        for mount in fs::read_dir("/sys/fs/cgroup").unwrap().flatten().map(|e| e.path()) {
            let mut p = mount.clone();
            for part in path.trim_start_matches('/').split('/') {
                p.push(part);
                if !p.exists() {
                    missing.push(p.clone());
                }
            }
        }
        CgroupDirs(missing)
    }

    /// Deepest first; each must be empty by now.
    fn remove(mut self) {
        self.0.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in self.0 {
            let _ = fs::remove_dir(&p);
        }
    }
}
