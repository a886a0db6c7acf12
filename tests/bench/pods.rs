//! `make bench`: 100 pods started one after another with `nodectl run` from the local
//! busybox image, each on its own network (bridge, veth, address), printing a line the
//! moment its process runs; p50 and p99 of the time from `nodectl run` to that line, and
//! of the whole run (start to exit, teardown included). Then one pod's network set-up on
//! its own (address, veth, routes; the bridge exists), p50 and p99 over 100.
//!
//! For scale, `crun run` of one container from the same rootfs, without a pod network:
//! the floor a pod's extra work (sandbox, network, overlay, manifest) sits on.
//!
//! Not a test: it asserts nothing about time.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PODS: usize = 100;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let images = std::env::var_os("NODECTL_TEST_IMAGES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/images"));
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let bin = env!("CARGO_BIN_EXE_nodectl");
    let bridge = format!("ndbench{}", std::process::id() % 10_000);
    let cidr = "10.199.0.0/16";
    let ok = Command::new(bin)
        .arg("--root")
        .arg(&root)
        .args(["image", "import"])
        .arg(images.join("busybox"))
        .args(["--name", "busybox:latest"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let manifest = work.path().join("pod.yaml");
    fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bench}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [echo, running]}\n",
    )
    .unwrap();

    let run_once = || -> (Duration, Duration) {
        let t = Instant::now();
        let mut child = Command::new(bin)
            .arg("--root")
            .arg(&root)
            .arg("run")
            .arg(&manifest)
            .env("NODECTL_BRIDGE", &bridge)
            .env("NODECTL_POD_CIDR", cidr)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let started = t.elapsed();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success() && line == "running\n", "{line:?} {}", String::from_utf8_lossy(&out.stderr));
        (started, t.elapsed())
    };
    run_once(); // the bridge is made once, as on any node
    let (mut starts, mut totals): (Vec<Duration>, Vec<Duration>) = (0..PODS).map(|_| run_once()).unzip();

    // One pod's network on its own.
    let cfg = nodectl::network::NetConfig::new(&bridge, cidr, work.path().join("net-state")).unwrap();
    let ns = work.path().join("netns");
    let mut nets = Vec::new();
    for i in 0..PODS {
        nodectl::network::create_netns(&ns).unwrap();
        let key = format!("bench-{i}");
        let t = Instant::now();
        nodectl::network::setup(&cfg, &key, &ns, &[]).unwrap();
        nets.push(t.elapsed());
        nodectl::network::teardown(&cfg, &key).unwrap();
        nodectl::network::remove_netns(&ns).unwrap();
    }
    nodectl::network::remove_bridge(&cfg).unwrap();

    // crun run of one container from the same layer, for scale.
    let crun = crun_run_times(work.path(), &images);

    println!("nodectl run, {PODS} pods one after another (busybox, own network each):");
    println!(
        "  until the container's process runs   p50 {:7.2} ms   p99 {:7.2} ms   (aim: p50 under 30 ms)",
        ms(pct(&mut starts, 0.5)),
        ms(pct(&mut starts, 0.99))
    );
    println!(
        "  whole run, teardown included         p50 {:7.2} ms   p99 {:7.2} ms",
        ms(pct(&mut totals, 0.5)),
        ms(pct(&mut totals, 0.99))
    );
    println!(
        "one pod's network set-up (address, veth, routes)  p50 {:7.3} ms   p99 {:7.3} ms   (aim: under 3 ms)",
        ms(pct(&mut nets, 0.5)),
        ms(pct(&mut nets, 0.99))
    );
    if let Some(mut c) = crun {
        let (p50, run50) = (pct(&mut c, 0.5), pct(&mut totals, 0.5));
        println!(
            "crun run of one container, no pod network, for scale: p50 {:7.2} ms; nodectl run's whole pod / crun run = {:.2}",
            ms(p50),
            run50.as_secs_f64() / p50.as_secs_f64()
        );
    }
}

/// `crun run` of `echo` from the busybox layer, 20 times, in a private mount namespace
/// without the cgroup2 mount (crun 1.8 refuses hybrid cgroup hosts). None without crun.
fn crun_run_times(work: &Path, images: &Path) -> Option<Vec<Duration>> {
    if !Path::new("/usr/bin/crun").exists() {
        return None;
    }
    let bundle = work.join("crun-bundle");
    let img = images.join("busybox");
    let read = |p: std::path::PathBuf| -> serde_json::Value { serde_json::from_slice(&fs::read(p).unwrap()).unwrap() };
    let blob = |d: &str| img.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let index = read(img.join("index.json"));
    let manifest = read(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    fs::create_dir_all(bundle.join("rootfs")).unwrap();
    nodectl::image::store::unpack_blob(
        &blob(manifest["layers"][0]["digest"].as_str().unwrap()),
        &bundle.join("rootfs"),
    )
    .unwrap();
    let mut spec = nodectl::runtime::spec::default_spec();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["echo", "running"]);
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let base = own
        .lines()
        .find(|l| l.contains(":memory:"))
        .and_then(|l| l.splitn(3, ':').nth(2))
        .unwrap_or("/")
        .trim_end_matches('/')
        .to_string();
    let cg = format!("{base}/nodectl-bench-crun-{}", std::process::id());
    spec["linux"]["cgroupsPath"] = cg.clone().into();
    fs::write(bundle.join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    // crun makes the path's directories on every hierarchy; note which are new, to remove
    // them (deepest first) afterwards.
    let mut made = Vec::new();
    for h in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let mut d = h.path();
        for part in cg.split('/').filter(|p| !p.is_empty()) {
            d.push(part);
            if !d.exists() {
                made.push(d.clone());
            }
        }
    }
    let state = work.join("crun-state");
    let script = format!(
        "umount /sys/fs/cgroup/unified 2>/dev/null; for i in $(seq 20); do s=$(date +%s%N); crun --root {st} run --bundle {b} c$i >/dev/null || exit 1; e=$(date +%s%N); echo $((e-s)); done",
        st = state.display(),
        b = bundle.display()
    );
    let out = Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    made.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in made {
        let _ = fs::remove_dir(&d);
    }
    if !out.status.success() {
        eprintln!("crun run failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .map(Duration::from_nanos)
            .collect(),
    )
}
