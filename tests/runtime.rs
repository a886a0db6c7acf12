//! The OCI runtime CLI on real bundles built from the busybox image, as root: the
//! lifecycle verbs, namespaces, mounts, devices, the process's identity and limits,
//! cgroups, and the errors a bad bundle gets. Each test has its own state root and its
//! own parent cgroup, removed at the end.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

static N: AtomicUsize = AtomicUsize::new(0);

/// One test's runtime: state root, bundle directory and parent cgroup.
struct Rt {
    dir: tempfile::TempDir,
    cgroup_parent: String,
}

impl Rt {
    fn new() -> Rt {
        let n = N.fetch_add(1, Ordering::SeqCst);
        Rt { dir: tempfile::tempdir().unwrap(), cgroup_parent: format!("nodectl-rt-{}-{n}", std::process::id()) }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Where `nodectl --root ROOT runtime` keeps its containers: ROOT/runtime.
    fn containers(&self) -> PathBuf {
        self.root().join("runtime")
    }

    fn bundle(&self, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
        common::bundle(&self.dir.path().join(name), edit)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nodectl"));
        c.arg("--root").arg(self.root()).arg("runtime").arg("--cgroup-parent").arg(&self.cgroup_parent).args(args);
        c.stdin(Stdio::null());
        c
    }

    fn out(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.out(args);
        assert!(o.status.success(), "runtime {args:?}: {}\n{}", o.status, String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.out(args);
        assert!(!o.status.success(), "runtime {args:?} should fail; printed {}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8(o.stderr).unwrap()
    }

    /// `run` in the foreground: (exit code, stdout, stderr).
    fn run(&self, bundle: &Path, id: &str) -> (i32, String, String) {
        let o = self.out(&["run", "--bundle", bundle.to_str().unwrap(), id]);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// Runs `script` with sh in a bundle made by `edit`; insists on exit 0; stdout.
    fn sh(&self, name: &str, script: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let b = self.bundle(name, |s| {
            s["process"]["args"] = json!(["sh", "-c", script]);
            edit(s);
        });
        let (code, out, err) = self.run(&b, name);
        assert_eq!(code, 0, "{script}: {err}\n{out}");
        out
    }

    /// create with stdio to files (a created container holds its stdio open).
    fn create(&self, bundle: &Path, id: &str) {
        // Files, not pipes: the container keeps its stdio, and a pipe would never close.
        let log = fs::File::create(self.dir.path().join(format!("{id}.out"))).unwrap();
        let err_path = self.dir.path().join(format!("{id}.err"));
        let err = fs::File::create(&err_path).unwrap();
        let status =
            self.cmd(&["create", "--bundle", bundle.to_str().unwrap(), id]).stdout(log).stderr(err).status().unwrap();
        assert!(status.success(), "create {id}: {}", fs::read_to_string(&err_path).unwrap());
    }

    fn container_out(&self, id: &str) -> String {
        fs::read_to_string(self.dir.path().join(format!("{id}.out"))).unwrap_or_default()
    }

    fn state(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    fn wait_status(&self, id: &str, want: &str) {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if self.state(id)["status"] == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{id} never became {want}: {}", self.state(id));
    }

    /// The container's cgroup directory on one v1 controller (or v2).
    fn cgroup_dir(&self, controller: &str, id: &str) -> PathBuf {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, cs, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
            if cs.split(',').any(|c| c == controller) {
                return Path::new("/sys/fs/cgroup")
                    .join(controller)
                    .join(path.trim_start_matches('/'))
                    .join(&self.cgroup_parent)
                    .join(id);
            }
        }
        panic!("no {controller} controller");
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Ok(ids) = fs::read_dir(self.containers()) {
            for id in ids.flatten() {
                let _ = self.out(&["delete", "--force", &id.file_name().to_string_lossy()]);
            }
        }
        let _ = nodectl::runtime::cgroups::remove_parent(&self.cgroup_parent);
    }
}

#[test]
fn run_gives_the_exit_code_and_output() {
    let rt = Rt::new();
    let b = rt.bundle("exit", |s| s["process"]["args"] = json!(["sh", "-c", "echo out; echo err >&2; exit 7"]));
    let (code, out, err) = rt.run(&b, "exit");
    assert_eq!(code, 7, "{err}");
    assert_eq!(out, "out\n");
    assert!(err.contains("err"), "{err}");
    // run deletes what it made.
    assert!(!rt.containers().join("exit").exists());
    assert!(!rt.cgroup_dir("memory", "exit").exists());

    // Outside a pid namespace of its own (PID 1 of one ignores even SIGKILL sent from
    // inside), a signal that ends the process shows as 128+n.
    let b = rt.bundle("killed", |s| {
        s["process"]["args"] = json!(["sh", "-c", "kill -9 $$"]);
        s["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != "pid");
    });
    assert_eq!(rt.run(&b, "killed").0, 137);
}

#[test]
fn lifecycle_create_start_state_kill_delete() {
    let rt = Rt::new();
    let b = rt.bundle("life", |s| s["process"]["args"] = json!(["sh", "-c", "echo started; exec sleep 1000"]));
    rt.create(&b, "life");
    let st = rt.state("life");
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], "life");
    assert_eq!(st["bundle"], b.canonicalize().unwrap().to_str().unwrap());
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 1);
    assert_eq!(rt.container_out("life"), "", "the process must not run before start");
    // The init sits in the container's cgroup already.
    let procs = fs::read_to_string(rt.cgroup_dir("memory", "life").join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    assert!(rt.fails(&["create", "--bundle", b.to_str().unwrap(), "life"]).contains("already exists"));
    assert!(rt.fails(&["delete", "nope"]).contains("does not exist"));

    rt.ok(&["start", "life"]);
    assert_eq!(rt.state("life")["status"], "running");
    assert!(rt.fails(&["start", "life"]).contains("is running"));
    let end = Instant::now() + Duration::from_secs(10);
    while rt.container_out("life") != "started\n" && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(rt.container_out("life"), "started\n");
    let listed = rt.ok(&["list", "--format", "json"]);
    assert!(listed.contains("\"life\""), "{listed}");
    // runc's keys in runc's order (list.bats matches the line as text), with the owner.
    let at = |k: &str| listed.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("no {k}: {listed}"));
    let order = ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"].map(at);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{listed}");
    assert!(listed.contains("\"owner\":\"root\""), "{listed}");
    let pids: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", "life"])).unwrap();
    assert_eq!(pids, [pid as i32]);
    assert!(rt.fails(&["delete", "life"]).contains("running"));

    rt.ok(&["pause", "life"]);
    assert_eq!(rt.state("life")["status"], "paused");
    rt.ok(&["resume", "life"]);
    assert_eq!(rt.state("life")["status"], "running");

    // PID 1 of a pid namespace ignores TERM without a handler; KILL ends it.
    rt.ok(&["kill", "life", "KILL"]);
    rt.wait_status("life", "stopped");
    assert_eq!(rt.state("life")["pid"], 0);
    assert!(rt.fails(&["kill", "life", "TERM"]).contains("stopped"));
    rt.ok(&["delete", "life"]);
    assert!(!rt.containers().join("life").exists());
    assert!(!rt.cgroup_dir("memory", "life").exists());
    assert!(!rt.cgroup_dir("pids", "life").exists());
}

#[test]
fn a_created_container_is_deleted_as_runc_deletes_it_and_a_running_one_needs_force() {
    let rt = Rt::new();
    let b = rt.bundle("del", |s| s["process"]["args"] = json!(["sleep", "1000"]));
    rt.create(&b, "del");
    let pid = rt.state("del")["pid"].as_i64().unwrap();
    // Created: killed and deleted without --force, as runc does (containerd's shim relies
    // on it).
    rt.ok(&["delete", "del"]);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || fs::read_to_string(format!("/proc/{pid}/stat")).unwrap().contains(") Z")
    );
    assert!(!rt.containers().join("del").exists());
    assert!(!rt.cgroup_dir("pids", "del").exists());

    // Running: an error that changes nothing, unless forced.
    rt.create(&b, "del2");
    rt.ok(&["start", "del2"]);
    assert!(rt.fails(&["delete", "del2"]).contains("is running"));
    assert_eq!(rt.state("del2")["status"], "running");
    rt.ok(&["delete", "--force", "del2"]);
    assert!(!rt.containers().join("del2").exists());
    assert!(!rt.cgroup_dir("pids", "del2").exists());
}

#[test]
fn namespaces_hostname_and_pid_one() {
    let rt = Rt::new();
    let out = rt
        .sh("ns", "hostname; echo pid=$$; ls /sys/class/net; cat /proc/self/uid_map", |s| s["hostname"] = "box".into());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "box");
    assert_eq!(lines[1], "pid=1");
    assert_eq!(lines[2], "lo", "a new network namespace holds only lo: {out}");
    for kind in ["mnt", "pid", "net", "ipc", "uts"] {
        // Everything the default spec lists is new: not the host's.
        let host = fs::read_link(format!("/proc/self/ns/{kind}")).unwrap();
        let out = rt.sh(&format!("ns-{kind}"), &format!("readlink /proc/self/ns/{kind}"), |_| {});
        assert_ne!(out.trim(), host.to_str().unwrap(), "{kind}");
    }
}

#[test]
fn without_a_mount_namespace_the_root_is_chrooted_and_nothing_mounted() {
    // The spec: a namespace left out is inherited. Like runc, the container then shares
    // our mount namespace, is chrooted into its root, and nothing is mounted on the host.
    let rt = Rt::new();
    let host_mnt = fs::read_link("/proc/self/ns/mnt").unwrap();
    let no_mount_ns = |s: &mut serde_json::Value| {
        s["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != "mount");
        s["root"]["readonly"] = false.into();
        s["linux"]
            .as_object_mut()
            .unwrap()
            .retain(|k, _| !["maskedPaths", "readonlyPaths", "devices"].contains(&k.as_str()));
    };
    let b = rt.bundle("nomnt", |s| {
        no_mount_ns(s);
        s["process"]["args"] = json!(["sh", "-c", "readlink /proc/self/ns/mnt 2>&1; cat /in-the-root"]);
    });
    fs::write(b.join("rootfs/in-the-root"), "bundle root\n").unwrap();
    let (code, out, err) = rt.run(&b, "nomnt");
    assert_eq!(code, 0, "{err}");
    // The root is the bundle's, and bare: /proc was not mounted, so readlink fails.
    assert!(out.ends_with("bundle root\n") && !out.contains("mnt:["), "{out}");
    let pid_probe = rt.bundle("nomnt-ns", |s| {
        no_mount_ns(s);
        s["process"]["args"] = json!(["sleep", "1000"]);
    });
    rt.create(&pid_probe, "nomnt-ns");
    let pid = rt.state("nomnt-ns")["pid"].as_i64().unwrap();
    assert_eq!(fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap(), host_mnt);
    assert_eq!(fs::read_link(format!("/proc/{pid}/root")).unwrap(), pid_probe.join("rootfs"));
    rt.ok(&["delete", "--force", "nomnt-ns"]);
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let under = rt.dir.path().to_str().unwrap();
    assert!(!mountinfo.contains(under), "something was mounted on the host under {under}:\n{mountinfo}");
    // What would need a mount is refused, by name.
    let b = rt.bundle("nomnt-masked", |s| {
        s["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != "mount");
    });
    let err = rt.fails(&["create", "--bundle", b.to_str().unwrap(), "nomnt-masked"]);
    assert!(err.contains("linux.maskedPaths") && err.contains("mount namespace"), "{err}");
}

#[test]
fn joins_another_containers_network_namespace_by_path() {
    let rt = Rt::new();
    let a = rt.bundle("holder", |s| s["process"]["args"] = json!(["sleep", "1000"]));
    rt.create(&a, "holder");
    let pid = rt.state("holder")["pid"].as_i64().unwrap();
    let ns = format!("/proc/{pid}/ns/net");
    let want = fs::read_link(&ns).unwrap();
    let out = rt.sh("joiner", "readlink /proc/self/ns/net", |s| {
        let list = s["linux"]["namespaces"].as_array_mut().unwrap();
        for n in list.iter_mut() {
            if n["type"] == "network" {
                n["path"] = ns.clone().into();
            }
        }
    });
    assert_eq!(out.trim(), want.to_str().unwrap());
    // A hostname is set in a uts namespace joined by path, where the holder sees it.
    let uts = format!("/proc/{pid}/ns/uts");
    rt.sh("uts-joiner", "true", |s| {
        s["hostname"] = "joined".into();
        for n in s["linux"]["namespaces"].as_array_mut().unwrap().iter_mut() {
            if n["type"] == "uts" {
                n["path"] = uts.clone().into();
            }
        }
    });
    let seen = Command::new("nsenter").arg(format!("--uts={uts}")).arg("hostname").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&seen.stdout).trim(), "joined");
    rt.ok(&["delete", "--force", "holder"]);
}

#[test]
fn user_namespace_maps_root_to_an_unprivileged_range() {
    let rt = Rt::new();
    let out = rt.sh("userns", "id -u; cat /proc/self/uid_map /proc/self/gid_map; ls -ln /bin/busybox", |s| {
        s["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
        s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
        s["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
        // sysfs cannot be mounted in a user namespace without its own network; the
        // default spec has one, so the only change is the mappings.
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["0", "200000", "65536"]);
    assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["0", "200000", "65536"]);
    // Host root's files show as the overflow id inside.
    assert!(lines[3].contains("65534"), "{out}");
}

#[test]
fn mounts_devices_masked_and_readonly_paths() {
    let rt = Rt::new();
    let host_dir = rt.dir.path().join("shared");
    fs::create_dir(&host_dir).unwrap();
    fs::write(host_dir.join("from-host"), "hello").unwrap();
    let script = "set -e
        test -c /dev/null && test -c /dev/zero && test -c /dev/urandom && test -c /dev/tty
        ls -l /dev/null | cut -c1-10
        test -L /dev/ptmx && test -L /dev/fd
        cat /mnt/rw/from-host; echo; echo written > /mnt/rw/from-container
        cat /mnt/ro/from-host; echo
        if echo x > /mnt/ro/nope 2>/dev/null; then echo ro-writable; fi
        if touch /rootfile 2>/dev/null; then echo root-writable; fi
        echo tmp > /scratch/file && cat /scratch/file
        if echo 1 > /proc/sys/kernel/domainname 2>/dev/null; then echo procsys-writable; fi
        wc -c < /proc/keys
        ls /sys/firmware | wc -l
        grep -c ' /scratch ' /proc/self/mounts";
    let out = rt.sh("mounts", script, |s| {
        let m = s["mounts"].as_array_mut().unwrap();
        m.push(json!({"destination": "/mnt/rw", "type": "bind", "source": host_dir, "options": ["rbind", "rw"]}));
        m.push(json!({"destination": "/mnt/ro", "type": "bind", "source": host_dir, "options": ["rbind", "ro"]}));
        m.push(
            json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=1m"]}),
        );
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["crw-rw-rw-", "hello", "hello", "tmp", "0", "0", "1"], "{out}");
    assert_eq!(fs::read_to_string(host_dir.join("from-container")).unwrap(), "written\n");
    assert!(!host_dir.join("nope").exists());
}

#[test]
fn the_root_gets_the_propagation_asked_for() {
    let rt = Rt::new();
    let host_root = fs::read_to_string("/proc/self/mountinfo").unwrap();
    for (prop, want, unwanted) in
        [("rshared", "shared:", "unbindable"), ("runbindable", "unbindable", "shared:"), ("rprivate", "", "shared:")]
    {
        let out = rt.sh(&format!("prop-{prop}"), "awk '$5 == \"/\"' /proc/self/mountinfo", |s| {
            s["linux"]["rootfsPropagation"] = prop.into()
        });
        assert!(out.contains(want) && !out.contains(unwanted), "{prop}: {out}");
    }
    // None of it reached the host's mounts: no mount of the containers' (a shared root
    // whose setup ran shared would have put them all there), no new unbindable one.
    let after = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let under = rt.dir.path().to_str().unwrap();
    assert!(!after.contains(under), "container mounts reached the host:\n{after}");
    assert_eq!(
        after.lines().filter(|l| l.contains("unbindable")).count(),
        host_root.lines().filter(|l| l.contains("unbindable")).count()
    );
}

#[test]
fn a_symlinked_mount_target_stays_inside_the_root() {
    let rt = Rt::new();
    let outside = rt.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let b = rt.bundle("symlink", |s| {
        s["process"]["args"] = json!([
            "sh",
            "-c",
            "grep -c ' /escape/sub ' /proc/self/mounts || true; grep -c tmpfs /proc/self/mountinfo"
        ]);
        s["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/escape/sub", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}));
    });
    // An absolute symlink in the image, aimed at a host directory.
    std::os::unix::fs::symlink(&outside, b.join("rootfs/escape")).unwrap();
    // Resolved in the root, it points at rootfs/<outside>, which does not exist: create
    // fails rather than following the link out.
    let (code, _, err) = rt.run(&b, "symlink");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/escape"), "{err}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

    // With rootfs/<outside> present, the mount lands there, inside the root.
    let inside = b.join("rootfs").join(outside.strip_prefix("/").unwrap());
    fs::create_dir_all(&inside).unwrap();
    let (code, _, err) = rt.run(&b, "symlink2");
    assert_eq!(code, 0, "{err}");
    assert!(inside.join("sub").is_dir());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "nothing was created on the host side");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(outside.to_str().unwrap()));
}

#[test]
fn process_identity_limits_and_capabilities() {
    let rt = Rt::new();
    let script = "id -u; id -g; id -G; umask; pwd; echo $GREETING; ulimit -n; grep -E '^(CapEff|CapBnd|CapInh|CapAmb|NoNewPrivs)' /proc/self/status; cat /proc/self/oom_score_adj";
    let out = rt.sh("ident", script, |s| {
        s["process"]["user"] = json!({"uid": 1000, "gid": 1001, "additionalGids": [1002, 1003], "umask": 63});
        // Missing in the image: made, as runc makes it.
        s["process"]["cwd"] = "/work/here".into();
        s["process"]["env"] = json!(["PATH=/bin:/usr/bin", "GREETING=hi"]);
        s["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]);
        s["process"]["noNewPrivileges"] = true.into();
        s["process"]["oomScoreAdj"] = 123.into();
        s["process"]["capabilities"] = json!({
            "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "effective": ["CAP_KILL"],
            "permitted": ["CAP_KILL"],
        });
    });
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "1001");
    assert_eq!(lines[2], "1001 1002 1003");
    assert_eq!(lines[3], "0077");
    assert_eq!(lines[4], "/work/here");
    assert_eq!(lines[5], "hi");
    assert_eq!(lines[6], "256");
    let status: Vec<String> = lines[7..12].iter().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    // CAP_KILL is bit 5, CAP_NET_BIND_SERVICE bit 10.
    assert_eq!(
        status,
        [
            "CapInh: 0000000000000000",
            "CapEff: 0000000000000000",
            "CapBnd: 0000000000000420",
            "CapAmb: 0000000000000000",
            "NoNewPrivs: 1"
        ],
        "{out}"
    );
    assert_eq!(lines[12], "123");

    // As root with the spec's sets, effective holds exactly them.
    let out = rt.sh("rootcaps", "grep CapEff /proc/self/status", |_| {});
    assert!(out.contains("0000000020000420"), "{out}");
}

#[test]
fn cgroup_limits_apply_and_oom_kills_show_as_137() {
    let rt = Rt::new();
    let b = rt.bundle("oom", |s| {
        s["process"]["args"] = json!(["sh", "-c", "a=$(yes | head -c 67108864); echo survived"]);
        s["linux"]["resources"] = json!({"memory": {"limit": 20971520, "swap": 20971520}, "pids": {"limit": 64}, "cpu": {"quota": 50000, "period": 100000, "shares": 512}});
    });
    let (code, out, err) = rt.run(&b, "oom");
    assert_eq!(code, 137, "{out}{err}");
    assert!(err.contains("killed by the OOM killer"), "{err}");

    let b = rt.bundle("limits", |s| {
        s["process"]["args"] = json!(["sleep", "1000"]);
        s["linux"]["resources"] = json!({
            "memory": {"limit": 33554432, "reservation": 16777216, "swappiness": 7, "disableOOMKiller": true, "kernelTCP": 8388608},
            "pids": {"limit": 10},
            "cpu": {"quota": 20000, "period": 100000, "shares": 256}
        });
    });
    rt.create(&b, "limits");
    let read = |c: &str, f: &str| fs::read_to_string(rt.cgroup_dir(c, "limits").join(f)).unwrap().trim().to_string();
    assert_eq!(read("memory", "memory.limit_in_bytes"), "33554432");
    assert_eq!(read("pids", "pids.max"), "10");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "20000");
    assert_eq!(read("cpu", "cpu.shares"), "256");
    // Docker's --memory-reservation, --memory-swappiness, --oom-kill-disable.
    assert_eq!(read("memory", "memory.soft_limit_in_bytes"), "16777216");
    assert_eq!(read("memory", "memory.swappiness"), "7");
    assert!(read("memory", "memory.oom_control").contains("oom_kill_disable 1"));
    assert_eq!(read("memory", "memory.kmem.tcp.limit_in_bytes"), "8388608");
    let stats: serde_json::Value = serde_json::from_str(&rt.ok(&["events", "--stats", "limits"])).unwrap();
    assert_eq!(stats["data"]["pids"]["current"], 1, "{stats}");
    assert_eq!(stats["data"]["memory"]["usage"]["limit"], 33554432, "{stats}");
    // runc's keys only: an extra "oom_kills" made runc's events.bats, which waits for
    // `grep oom` in the stream, take the first stats line for the OOM event.
    assert!(!rt.ok(&["events", "--stats", "limits"]).contains("oom"), "{stats}");
    let res = rt.dir.path().join("res.json");
    fs::write(&res, r#"{"memory": {"limit": 67108864}, "pids": {"limit": 20}}"#).unwrap();
    rt.ok(&["update", "--resources", res.to_str().unwrap(), "limits"]);
    assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
    assert_eq!(read("pids", "pids.max"), "20");
    rt.ok(&["delete", "--force", "limits"]);

    // The forks happen in a subshell, whose failure ends only it: a pipeline here would
    // race the outer shell's own forks against the loop's and could end the script.
    let out = rt.sh("forkbomb", "(for i in 1 2 3 4 5 6 7 8; do sleep 5 & done) 2>&1; echo done", |s| {
        s["linux"]["resources"] = json!({"pids": {"limit": 4}});
    });
    assert!(out.contains("can't fork") || out.contains("Resource temporarily unavailable"), "{out}");
}

#[test]
fn an_absolute_cgroups_path_is_taken_from_the_hierarchy_root() {
    // The runtime spec: an absolute cgroupsPath is relative to the cgroup mount point, not
    // to any parent of ours. To stay inside our own subtree in every hierarchy, the path
    // starts at the deepest of our own cgroups (on a hybrid host, memory's), which every
    // other controller's own cgroup must be an ancestor of.
    let rt = Rt::new();
    let own: Vec<(String, String)> = fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, cs, path) = (p.next(), p.next().unwrap(), p.next().unwrap());
            (cs.to_string(), path.to_string())
        })
        .collect();
    let deepest =
        own.iter().map(|(_, p)| p.as_str()).max_by_key(|p| p.len()).unwrap().trim_end_matches('/').to_string();
    for (cs, p) in &own {
        assert!(deepest.starts_with(p.trim_end_matches('/')), "{cs}'s own cgroup {p} is not an ancestor of {deepest}");
    }
    let path = format!("{deepest}/{}/abs", rt.cgroup_parent);
    // In hierarchies where our own cgroup is higher up (cpu, pids, … on a hybrid host),
    // the runtime makes the directories down to `deepest` too; they are ours to remove.
    // On a hybrid host that includes the cgroup2 hierarchy, which every container joins.
    let mut made = Vec::new();
    for (cs, _) in &own {
        let Some(mut dir) = hierarchy_mount(cs) else { continue };
        for part in format!("{deepest}/{}", rt.cgroup_parent).split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if !dir.exists() {
                made.push(dir.clone());
            }
        }
    }
    let b = rt.bundle("abs", |s| {
        s["process"]["args"] = json!(["sleep", "1000"]);
        s["linux"]["cgroupsPath"] = path.clone().into();
        s["linux"]["resources"] = json!({"pids": {"limit": 7}});
    });
    rt.create(&b, "abs");
    let pid = rt.state("abs")["pid"].as_i64().unwrap();
    let theirs = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for controller in ["memory", "pids", "cpu"] {
        let line = theirs.lines().find(|l| l.split(':').nth(1).unwrap().split(',').any(|c| c == controller)).unwrap();
        assert!(line.ends_with(&format!(":{path}")), "{controller}: {line}");
    }
    assert_eq!(fs::read_to_string(format!("/sys/fs/cgroup/pids{path}/pids.max")).unwrap().trim(), "7");
    rt.ok(&["delete", "--force", "abs"]);
    for (cs, _) in &own {
        let Some(mount) = hierarchy_mount(cs) else { continue };
        let dir = mount.join(format!("{deepest}/{}", rt.cgroup_parent).trim_start_matches('/'));
        assert!(!dir.join("abs").exists(), "{cs:?}: delete left {}", dir.join("abs").display());
    }
    // Deepest first, so each directory is empty when its turn comes.
    made.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in made.iter().filter(|d| d.exists()) {
        fs::remove_dir(dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
    }
}

/// Where the hierarchy of a /proc/self/cgroup line's controllers is mounted: cgroup2's
/// (no controllers) at /sys/fs/cgroup/unified on a hybrid host; None for named ones.
fn hierarchy_mount(controllers: &str) -> Option<PathBuf> {
    if controllers.starts_with("name=") {
        return None;
    }
    if !controllers.is_empty() {
        return Some(Path::new("/sys/fs/cgroup").join(controllers));
    }
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"].iter().map(PathBuf::from).find(|d| d.join("cgroup.procs").exists())
}

/// The names of x86_64's syscalls numbered up to prlimit64 (302), all busybox's sh needs,
/// but mkdir and mkdirat: an allow list with a low highest number (setns, 308, is above).
fn x86_64_syscalls_up_to_prlimit64_but_mkdir() -> Vec<String> {
    use libseccomp::{ScmpArch, ScmpSyscall};
    let names: Vec<String> = (0..=302)
        .filter_map(|n| ScmpSyscall::from(n).get_name_by_arch(ScmpArch::X8664).ok())
        .filter(|n| n != "mkdir" && n != "mkdirat")
        .collect();
    assert!(names.iter().any(|n| n == "prlimit64") && !names.iter().any(|n| n == "setns"));
    names
}

#[test]
fn seccomp_syscalls_above_the_profiles_highest_get_enosys_as_with_runc() {
    // runc's patchbpf: a syscall numbered above every one the profile names is "not
    // implemented" (so libc falls back), not the default action. The profile allows every
    // x86_64 syscall up to prlimit64 (302) but mkdir and mkdirat: mkdir, below the highest,
    // gets the default EPERM; setns (308, nsenter), above it, ENOSYS.
    if libseccomp::ScmpArch::native() != libseccomp::ScmpArch::X8664 {
        return;
    }
    let names = x86_64_syscalls_up_to_prlimit64_but_mkdir();
    let rt = Rt::new();
    let out = rt.sh("enosys", "mkdir /tmp/x 2>&1; nsenter -t 1 -u true 2>&1; echo end", |s| {
        s["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}],
        });
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].contains("Operation not permitted"), "{out}");
    assert!(lines[1].contains("Function not implemented"), "{out}");
    assert_eq!(lines[2], "end");
}

#[test]
fn seccomp_profile_denies_with_the_errno_asked_for() {
    let rt = Rt::new();
    let out = rt.sh("seccomp", "mkdir /tmp/x 2>&1; echo rc=$?; kill -USR1 $$ 2>&1; echo rc=$?; kill -0 $$; echo rc=$?", |s| {
        s["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                // kill(pid, SIGUSR1) only: the argument comparison decides.
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]},
                {"names": ["no_such_syscall_anywhere"], "action": "SCMP_ACT_KILL"}
            ]
        });
    });
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("Permission denied"), "{out}");
    assert_eq!(lines[1], "rc=1");
    assert!(lines[2].contains("Operation not permitted"), "{out}");
    assert_eq!(lines[3], "rc=1");
    assert_eq!(lines[4], "rc=0");

    // Without no_new_privileges the filter is loaded before we change user, so nothing
    // we do after it may need what it refuses: here getcwd, which the cwd check uses.
    let out = rt.sh("seccomp-early", "grep Seccomp: /proc/self/status", |s| {
        s["process"]["noNewPrivileges"] = false.into();
        s["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        s["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
    });
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["Seccomp:", "2"], "the filter is on: {out}");
}

#[test]
fn inherited_fds_are_closed_and_preserved_ones_kept() {
    use std::os::fd::AsRawFd;
    let rt = Rt::new();
    let b =
        rt.bundle("fds", |s| s["process"]["args"] = json!(["sh", "-c", "ls /proc/self/fd | sort -n | tr '\\n' ' '"]));
    // An fd without CLOEXEC, as a careless caller would leak it.
    let leaked = fs::File::open("/etc/hostname").unwrap();
    let fd = leaked.as_raw_fd();
    let out = {
        let mut c = rt.cmd(&["run", "--bundle", b.to_str().unwrap(), "fds"]);
        // SAFETY: the closure only calls fcntl, which is async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            c.pre_exec(move || {
                libc::fcntl(fd, libc::F_SETFD, 0);
                libc::dup2(fd, 3);
                Ok(())
            });
        }
        c.output().unwrap()
    };
    // 0 1 2 and the fd ls itself opens for the directory.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0 1 2 3", "{}", String::from_utf8_lossy(&out.stderr));
    let listing = {
        let b2 = rt.bundle("fds2", |s| {
            s["process"]["args"] = json!(["sh", "-c", "readlink /proc/self/fd/3; ls /proc/self/fd | wc -l"])
        });
        let mut c = rt.cmd(&["run", "--preserve-fds", "1", "--bundle", b2.to_str().unwrap(), "fds2"]);
        // SAFETY: as above.
        unsafe {
            use std::os::unix::process::CommandExt;
            c.pre_exec(move || {
                libc::dup2(fd, 3);
                libc::fcntl(3, libc::F_SETFD, 0);
                Ok(())
            });
        }
        c.output().unwrap()
    };
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(
        text.starts_with("/etc/hostname") || text.contains("hostname"),
        "{text} {}",
        String::from_utf8_lossy(&listing.stderr)
    );
    drop(leaked);
}

#[test]
fn bad_bundles_fail_create_and_leave_nothing() {
    let rt = Rt::new();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("noargs", Box::new(|s| s["process"]["args"] = json!([])), "process.args"),
        ("badmount", Box::new(|s| s["mounts"][0]["destination"] = "proc".into()), "mounts[0].destination"),
        ("nocmd", Box::new(|s| s["process"]["args"] = json!(["no-such-program"])), "executable file not found"),
        (
            "badns",
            Box::new(|s| {
                s["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "network", "path": "/nonexistent/ns"}])
            }),
            "/nonexistent/ns",
        ),
        (
            "badcap",
            Box::new(|s| s["process"]["capabilities"]["bounding"] = json!(["CAP_BOGUS"])),
            "process.capabilities.bounding",
        ),
        ("badjson", Box::new(|s| s["process"]["user"]["uid"] = "root".into()), "process.user.uid"),
        ("badcwd", Box::new(|s| s["process"]["cwd"] = "relative/dir".into()), "process.cwd"),
        (
            "hugesize",
            Box::new(|s| s["linux"]["resources"]["hugepageLimits"] = json!([{"pageSize": "2 MB", "limit": 0}])),
            "linux.resources.hugepageLimits[0].pageSize",
        ),
        (
            "hugeneg",
            Box::new(|s| s["linux"]["resources"]["hugepageLimits"] = json!([{"pageSize": "2MB", "limit": -1}])),
            "linux.resources.hugepageLimits[0].limit",
        ),
        (
            "unifiedout",
            Box::new(|s| s["linux"]["resources"]["unified"] = json!({"../memory.max": "1"})),
            "linux.resources.unified.../memory.max",
        ),
        // The kernel's refusal names the file: a throttle for a device that does not exist.
        (
            "nodevice",
            Box::new(|s| {
                s["linux"]["resources"]["blockIO"] =
                    json!({"throttleReadBpsDevice": [{"major": 7, "minor": 1048575, "rate": 1}]})
            }),
            "blkio.throttle.read_bps_device",
        ),
    ];
    for (id, edit, want) in cases {
        let b = rt.bundle(id, |s| edit(s));
        let err = rt.fails(&["create", "--bundle", b.to_str().unwrap(), id]);
        assert!(err.contains(want), "{id}: {err}");
        assert!(!rt.root().join(id).exists(), "{id} left state");
        assert!(!rt.cgroup_dir("memory", id).exists(), "{id} left a cgroup");
    }
    fs::write(rt.dir.path().join("noargs/config.json"), "{ not json").unwrap();
    let err = rt.fails(&["create", "--bundle", rt.dir.path().join("noargs").to_str().unwrap(), "x"]);
    assert!(err.contains("config.json"), "{err}");
    assert!(rt.fails(&["create", "--bundle", "/nonexistent", "x"]).contains("/nonexistent/config.json"));
    assert!(rt.fails(&["create", "--bundle", "/tmp", "../escape"]).contains("invalid"));
}

#[test]
fn hooks_run_with_the_state_on_stdin() {
    let rt = Rt::new();
    let log = rt.dir.path().join("hooks.log");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} $(cat) >> {}", log.display())]});
    let b = rt.bundle("hooks", |s| {
        s["process"]["args"] = json!(["true"]);
        // A failing poststart or poststop hook is only a warning: the next ones still run.
        let fails = json!({"path": "/bin/false"});
        s["hooks"] = json!({"prestart": [hook("prestart")], "createRuntime": [hook("createRuntime")], "poststart": [fails, hook("poststart")], "poststop": [fails, hook("poststop")]});
    });
    let (code, _, err) = rt.run(&b, "hooks");
    assert_eq!(code, 0, "{err}");
    let text = fs::read_to_string(&log).unwrap();
    let names: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(names, ["prestart", "createRuntime", "poststart", "poststop"], "{text}");
    let state: serde_json::Value =
        serde_json::from_str(text.lines().next().unwrap().split_once(' ').unwrap().1).unwrap();
    assert_eq!(state["id"], "hooks");
    assert_eq!(state["status"], "created", "prestart hooks come after the environment is made");
    assert!(state["pid"].as_i64().unwrap() > 0);

    // A failing createRuntime hook fails create and leaves nothing.
    let b = rt.bundle("badhook", |s| s["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]}));
    let err = rt.fails(&["create", "--bundle", b.to_str().unwrap(), "badhook"]);
    assert!(err.contains("hook /bin/false"), "{err}");
    assert!(!rt.containers().join("badhook").exists());
    // The hook's failure is what is said, and nothing before it.
    let b = rt.bundle("badprestart", |s| s["hooks"] = json!({"prestart": [{"path": "/bin/false"}]}));
    let err = rt.fails(&["create", "--bundle", b.to_str().unwrap(), "badprestart"]);
    assert!(err.trim_start().starts_with("nodectl-runtime:") && err.contains("hook /bin/false"), "{err}");
    assert!(!err.contains("went away"), "{err}");
    assert!(!rt.containers().join("badprestart").exists());
}

/// runc's hooks.bats: createContainer hooks run in the root filesystem's directory (runc's
/// prepareRootfs chdirs there before them; the test's hook touches "./lib/…"), the
/// runtime's prestart and createRuntime hooks in the bundle (runc's create chdirs there).
#[test]
fn hooks_run_in_the_directories_runc_gives_them() {
    let rt = Rt::new();
    let log = rt.dir.path().join("cwd.log");
    let b = rt.bundle("hook-cwd", |s| {
        s["root"]["readonly"] = false.into();
        s["process"]["args"] = json!(["cat", "/from-hook"]);
        let runtime_side = json!({"path": "/bin/sh", "args": ["sh", "-c", format!("pwd >> {}", log.display())]});
        s["hooks"] = json!({
            "prestart": [runtime_side.clone()],
            "createRuntime": [runtime_side],
            "createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "pwd > ./from-hook"]}]
        });
    });
    let (code, out, err) = rt.run(&b, "hook-cwd");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), b.join("rootfs").to_str().unwrap(), "createContainer's cwd");
    let bundle = b.to_str().unwrap();
    assert_eq!(fs::read_to_string(&log).unwrap().lines().collect::<Vec<_>>(), [bundle, bundle], "runtime hooks' cwd");
}

/// runc's mounts.bats "ro /dev mount": a read-only /dev or tmpfs is made read-only after
/// what goes inside it (device nodes, /dev/pts, a tmpfs mounted below), as runc's
/// finalizeRootfs does; the mounts below keep their own options.
#[test]
fn read_only_dev_and_tmpfs_get_their_submounts_first() {
    let rt = Rt::new();
    let script = "grep -E '^tmpfs /dev |^devpts /dev/pts |^tmpfs /mnt/t |^tmpfs /mnt/t/sub ' /proc/mounts | cut -d' ' -f2,4 | cut -d, -f1; echo x > /dev/null && echo null-ok";
    let out = rt.sh("ro-dev", script, |s| {
        let mounts = s["mounts"].as_array_mut().unwrap();
        for m in mounts.iter_mut() {
            if m["destination"] == "/dev" {
                m["options"].as_array_mut().unwrap().push("ro".into());
            }
        }
        mounts.push(json!({"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs", "options": ["ro"]}));
        mounts.push(json!({"destination": "/mnt/t/sub", "type": "tmpfs", "source": "tmpfs", "options": []}));
    });
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["/dev ro", "/dev/pts rw", "/mnt/t ro", "/mnt/t/sub rw", "null-ok"],
        "{out}"
    );
}

#[test]
fn sysctl_writes_refuse_a_fake_proc() {
    let rt = Rt::new();
    // Set in the container's own network namespace, so the host's value stays put.
    let host_before = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let flipped = if host_before.trim() == "1" { "0" } else { "1" };
    let out = rt.sh("sysctl", "cat /proc/sys/net/ipv4/ip_forward", |s| {
        s["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": flipped})
    });
    assert_eq!(out.trim(), flipped);
    assert_eq!(fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(), host_before);

    // A sysctl of no namespace of the container's is the host's: refused, host unchanged.
    let printk = fs::read_to_string("/proc/sys/kernel/printk_ratelimit").unwrap();
    let other = if printk.trim() == "7" { "8" } else { "7" };
    let b = rt.bundle("hostsysctl", |s| s["linux"]["sysctl"] = json!({"kernel.printk_ratelimit": other}));
    let err = rt.fails(&["create", "--bundle", b.to_str().unwrap(), "hostsysctl"]);
    assert!(err.contains("linux.sysctl.kernel.printk_ratelimit"), "{err}");
    assert_eq!(fs::read_to_string("/proc/sys/kernel/printk_ratelimit").unwrap(), printk);
    assert!(!rt.containers().join("hostsysctl").exists());

    // A mount namespace whose /proc is a tmpfs with look-alike files, held by a process.
    let mut holder = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs fake /proc && mkdir -p /proc/sys/net/ipv4 && echo 0 > /proc/sys/net/ipv4/ip_forward && echo ready && exec sleep 1000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let mnt = format!("/proc/{}/ns/mnt", holder.id());
    let b = rt.bundle("fakeproc", |s| {
        s["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        for n in s["linux"]["namespaces"].as_array_mut().unwrap() {
            if n["type"] == "mount" {
                n["path"] = mnt.clone().into();
            }
        }
    });
    let err = rt.fails(&["create", "--bundle", b.to_str().unwrap(), "fakeproc"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(err.contains("not procfs"), "{err}");
}

#[test]
fn the_runtime_cli_answers_as_nodectl_runtime_too() {
    let rt = Rt::new();
    let link = rt.dir.path().join("nodectl-runtime");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nodectl"), &link).unwrap();
    let b = rt.bundle("argv0", |s| s["process"]["args"] = json!(["sh", "-c", "echo via-link"]));
    let log = rt.dir.path().join("log.json");
    let o = Command::new(&link)
        .args([
            "--root",
            rt.root().to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "--systemd-cgroup",
            "--cgroup-parent",
            &rt.cgroup_parent,
        ])
        .args(["run", "--bundle", b.to_str().unwrap(), "argv0"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "via-link\n");
    let v = Command::new(&link).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).contains("spec: 1.2.0"));
    let f: serde_json::Value =
        serde_json::from_slice(&Command::new(&link).arg("features").output().unwrap().stdout).unwrap();
    assert!(f["linux"]["namespaces"].as_array().unwrap().contains(&json!("user")));
    // Errors go to the log as logrus-style JSON lines.
    let o = Command::new(&link)
        .args([
            "--root",
            rt.root().to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "state",
            "nope",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let line: serde_json::Value =
        serde_json::from_str(fs::read_to_string(&log).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"].as_str().unwrap().contains("does not exist"));
}

#[test]
fn a_created_container_outlives_create_every_time() {
    // `create` exits as soon as the init says Ready. The init, forked straight into its
    // pid namespace, is armed to die with `create` until then; it must be disarmed before
    // it says Ready, or it may die with `create` (once seen under runtime-tools; the window
    // is narrow, so this loop guards the property, it does not reproduce the race at will).
    let rt = Rt::new();
    let b = rt.bundle("parked", |s| s["process"]["args"] = json!(["true"]));
    for i in 0..100 {
        let id = format!("parked-{i}");
        rt.create(&b, &id);
        assert_eq!(rt.state(&id)["status"], "created", "{id}");
        rt.ok(&["delete", "--force", &id]);
    }
}

#[test]
fn exit_status_is_collected_every_time() {
    let rt = Rt::new();
    let b = rt.bundle("many", |s| s["process"]["args"] = json!(["sh", "-c", "exit 3"]));
    let runs = std::env::var("NODECTL_RUNTIME_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let mut hangs = 0;
    for i in 0..runs {
        let id = format!("many{i}");
        let mut child = rt
            .cmd(&["run", "--bundle", b.to_str().unwrap(), &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > end {
                break None;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        match status {
            Some(s) => assert_eq!(s.code(), Some(3), "run {i}"),
            None => {
                hangs += 1;
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    assert_eq!(hangs, 0, "{hangs} of {runs} runs hung");
}

/// CVE-2019-5736: the parked init of a created container is our binary. Another
/// container that sees it keeps a handle on /proc/PID/exe and, once no process runs the
/// binary any more (so "text file busy" no longer protects it), reopens it for writing.
/// That must fail: the runtime runs from a private read-only mount of itself.
#[test]
fn a_container_cannot_write_the_runtime_binary() {
    use sha2::Digest;
    let rt = Rt::new();
    // A copy that only this test runs, so other tests' processes do not keep it busy.
    let binary = rt.dir.path().join("nodectl-copy");
    fs::copy(env!("CARGO_BIN_EXE_nodectl"), &binary).unwrap();
    let before = sha2::Sha256::digest(fs::read(&binary).unwrap());
    let a = rt.bundle("parked", |s| s["process"]["args"] = json!(["true"]));
    let status = Command::new(&binary)
        .args([
            "--root",
            rt.root().to_str().unwrap(),
            "runtime",
            "--cgroup-parent",
            &rt.cgroup_parent,
            "create",
            "--bundle",
            a.to_str().unwrap(),
            "parked",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let pid = rt.state("parked")["pid"].as_i64().unwrap();
    // It runs from a private read-only bind of the binary, which shows as "/".
    assert_ne!(fs::read_link(format!("/proc/{pid}/exe")).unwrap(), binary);

    let shared = rt.dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    let script = format!(
        "exec 3< /proc/{pid}/exe || exit 1; echo ready > /shared/ready
         while [ ! -e /shared/go ]; do sleep 0.05; done
         (echo pwned >> /proc/self/fd/3) 2> /shared/err; echo $? > /shared/rc"
    );
    let b = rt.bundle("attacker", |s| {
        s["process"]["args"] = json!(["sh", "-c", script]);
        // No pid namespace of its own: the parked init is in its /proc.
        s["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != "pid");
        s["process"]["capabilities"] = json!({"bounding": ["CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE"], "effective": ["CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE"], "permitted": ["CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE"]});
        s["mounts"].as_array_mut().unwrap().push(json!({"destination": "/shared", "type": "bind", "source": shared, "options": ["rbind", "rw"]}));
    });
    rt.create(&b, "attacker");
    rt.ok(&["start", "attacker"]);
    let wait_for = |p: &Path| {
        let end = Instant::now() + Duration::from_secs(20);
        while !p.exists() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(p.exists(), "{} never appeared: {}", p.display(), rt.container_out("attacker"));
    };
    wait_for(&shared.join("ready"));
    // The parked init execs `true` and exits: nothing runs the binary any more.
    rt.ok(&["start", "parked"]);
    rt.wait_status("parked", "stopped");
    fs::write(shared.join("go"), "").unwrap();
    wait_for(&shared.join("rc"));
    std::thread::sleep(Duration::from_millis(50));
    let err = fs::read_to_string(shared.join("err")).unwrap();
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(fs::read_to_string(shared.join("rc")).unwrap().trim(), "1");
    assert_eq!(sha2::Sha256::digest(fs::read(&binary).unwrap()), before);
    rt.ok(&["delete", "--force", "attacker"]);
    rt.ok(&["delete", "parked"]);
}

#[test]
fn exec_runs_in_the_containers_namespaces_and_cgroup() {
    let rt = Rt::new();
    let b = rt.bundle("execd", |s| {
        s["process"]["args"] = json!(["sleep", "1000"]);
        s["hostname"] = "execbox".into();
        s["process"]["env"] = json!(["PATH=/bin:/usr/bin", "FROM_SPEC=yes"]);
    });
    rt.create(&b, "execd");
    rt.ok(&["start", "execd"]);
    let out = rt.ok(&[
        "exec",
        "--user",
        "1000:1000",
        "--env",
        "EXTRA=1",
        "execd",
        "sh",
        "-c",
        "echo $$; hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; id -u; echo $FROM_SPEC$EXTRA",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], "1", "{out}");
    assert_eq!(&lines[1..], ["execbox", "sleep 1000 ", "1000", "yes1"], "{out}");
    let o = rt.out(&["exec", "execd", "sh", "-c", "exit 5"]);
    assert_eq!(o.status.code(), Some(5));
    assert!(rt.fails(&["exec", "execd", "no-such-program"]).contains("not found"));

    let process = rt.dir.path().join("process.json");
    fs::write(&process, serde_json::to_vec(&json!({"args": ["sh", "-c", "echo $FOO; readlink /proc/self/ns/cgroup"], "env": ["PATH=/bin", "FOO=bar"], "cwd": "/", "user": {"uid": 0, "gid": 0}})).unwrap()).unwrap();
    let out = rt.ok(&["exec", "--process", process.to_str().unwrap(), "execd"]);
    assert_eq!(out.lines().next(), Some("bar"));
    let init = rt.state("execd")["pid"].as_i64().unwrap();
    let ns = fs::read_link(format!("/proc/{init}/ns/cgroup")).unwrap();
    assert_eq!(out.lines().nth(1), ns.to_str(), "{out}");

    let pid_file = rt.dir.path().join("exec.pid");
    // Not a pipe: the detached process keeps its stdio.
    let status = rt
        .cmd(&["exec", "--detach", "--pid-file", pid_file.to_str().unwrap(), "execd", "sleep", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let pid: i32 = fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let pids: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", "execd"])).unwrap();
    assert!(pids.contains(&pid), "{pids:?} {pid}");
    rt.ok(&["kill", "execd", "KILL"]);
    rt.wait_status("execd", "stopped");
    assert!(rt.fails(&["exec", "execd", "true"]).contains("stopped"));
    rt.ok(&["delete", "execd"]);
}

#[test]
fn exec_of_a_process_that_exits_at_once_is_waited_for_every_time() {
    // The exec'd process can run, say Ready and exit before its intermediate parent has
    // sent its pid; exec must still learn the pid and its exit code (CI once hung here).
    let rt = Rt::new();
    let b = rt.bundle("fast-exec", |s| s["process"]["args"] = json!(["sleep", "1000"]));
    rt.create(&b, "fast-exec");
    rt.ok(&["start", "fast-exec"]);
    for i in 0..200 {
        let mut child = rt
            .cmd(&["exec", "fast-exec", "sh", "-c", "exit 5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A hang is what this looks for: give up on one exec after a minute, whatever the load.
        let end = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > end {
                let _ = child.kill();
                panic!("exec {i} never returned");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        assert_eq!(status.code(), Some(5), "exec {i}");
    }
    rt.ok(&["delete", "--force", "fast-exec"]);
}

#[test]
fn a_terminal_goes_to_the_console_socket() {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::net::UnixListener;
    let rt = Rt::new();
    let sock = rt.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let b = rt.bundle("tty", |s| {
        s["process"]["terminal"] = true.into();
        s["process"]["args"] = json!(["sh", "-c", "tty; test -t 0 && echo stdin-is-a-tty; stty size"]);
        s["process"]["consoleSize"] = json!({"height": 33, "width": 101});
    });
    let mut child = rt
        .cmd(&["run", "--console-socket", sock.to_str().unwrap(), "--bundle", b.to_str().unwrap(), "tty"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 256];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        std::os::fd::AsRawFd::as_raw_fd(&conn),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let mut master = None;
    for c in msg.cmsgs().unwrap() {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the fd just arrived with SCM_RIGHTS and is ours alone.
            master = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        }
    }
    let mut master = fs::File::from(master.expect("a pty master fd"));
    let mut out = Vec::new();
    // Reading a pty master ends with EIO once the last slave fd is closed.
    let _ = master.read_to_end(&mut out);
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{err}");
    let text = String::from_utf8_lossy(&out).replace('\r', "");
    assert_eq!(text.lines().collect::<Vec<_>>(), ["/dev/pts/0", "stdin-is-a-tty", "33 101"], "{text}");
    // terminal without a socket is refused.
    assert!(rt.fails(&["create", "--bundle", b.to_str().unwrap(), "tty2"]).contains("console-socket"));
}

/// `run` with a terminal and no console socket serves the pty itself, as `runc run`
/// does: here under script(1), which gives it a terminal to copy to and from.
#[test]
fn run_with_a_terminal_copies_between_the_pty_and_our_own() {
    use std::io::Write;
    let rt = Rt::new();
    let b = rt.bundle("tty-run", |s| {
        s["process"]["terminal"] = true.into();
        s["process"]["args"] = json!(["sh"]);
    });
    let cmdline = format!(
        "{} --root {} runtime --cgroup-parent {} run --bundle {} tty-run",
        env!("CARGO_BIN_EXE_nodectl"),
        rt.root().display(),
        rt.cgroup_parent,
        b.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"tty; echo sum-$((40+2)); exit 3\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.lines().any(|l| l == "/dev/pts/0"), "{text}");
    assert!(text.lines().any(|l| l == "sum-42"), "{text}");
    assert!(!rt.containers().join("tty-run").exists());
}

/// The default spec denies every device but the defaults; a rule may allow creating a
/// node and still not opening it.
#[test]
fn device_rules_keep_other_devices_out() {
    let rt = Rt::new();
    let out = rt.sh("devices", "head -c 3 /dev/zero | wc -c; mknod /dev/disk b 7 0 && (head -c 1 /dev/disk 2>&1 || true); mknod /dev/mem c 1 1 2>&1 || true", |s| {
        let caps = json!(["CAP_MKNOD", "CAP_DAC_OVERRIDE", "CAP_SYS_RAWIO"]);
        s["process"]["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
        s["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}, {"allow": true, "type": "b", "major": 7, "minor": 0, "access": "m"}]);
    });
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0], "3", "{out}");
    assert!(lines[1].contains("/dev/disk") && lines[1].contains("Operation not permitted"), "{out}");
    assert!(lines[2].contains("/dev/mem") && lines[2].contains("Operation not permitted"), "{out}");
}

/// A seccomp profile older than close_range refuses it: fds are still marked
/// close-on-exec one by one, and the container runs.
#[test]
fn a_profile_without_close_range_still_closes_fds() {
    let rt = Rt::new();
    let out = rt.sh("oldprofile", "ls /proc/self/fd | wc -l", |s| {
        s["process"]["noNewPrivileges"] = false.into();
        s["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["close_range"], "action": "SCMP_ACT_ERRNO"}]});
    });
    // 0, 1, 2 and the directory ls reads.
    assert_eq!(out.trim(), "4");
}

#[test]
fn a_container_sees_its_own_cgroup_and_not_the_hosts() {
    let rt = Rt::new();
    // A sibling cgroup beside the container's: another tenant's, which it must not see.
    let sibling = rt.cgroup_dir("memory", "neighbour-of-view");
    fs::create_dir_all(&sibling).unwrap();
    let out = rt.sh(
        "view",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; ls /sys/fs/cgroup/memory | grep -c neighbour-of-view; \
         grep -c . /sys/fs/cgroup/pids/cgroup.procs",
        |s| s["linux"]["resources"] = json!({"memory": {"limit": 67108864}}),
    );
    fs::remove_dir(&sibling).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    // Its own limit, not the root's "unlimited"; no sibling; only its own processes.
    assert_eq!(lines[0], "67108864", "{out}");
    assert_eq!(lines[1], "0", "{out}");
    let procs: u32 = lines[2].parse().unwrap();
    assert!((1..10).contains(&procs), "{out}");
}

/// Runs a runtime command with stdout and stderr to files, giving up (and failing the
/// test) after `secs` seconds: what these tests look for is a hang. (exit code, stdout,
/// stderr)
fn within(rt: &Rt, args: &[&str], secs: u64) -> (i32, String, String) {
    let n = N.fetch_add(1, Ordering::SeqCst);
    let (out, err) = (rt.dir.path().join(format!("within-{n}.out")), rt.dir.path().join(format!("within-{n}.err")));
    let mut child =
        rt.cmd(args).stdout(fs::File::create(&out).unwrap()).stderr(fs::File::create(&err).unwrap()).spawn().unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("runtime {args:?} still running after {secs}s: {}", fs::read_to_string(&err).unwrap());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.code().unwrap_or(-1), fs::read_to_string(&out).unwrap(), fs::read_to_string(&err).unwrap())
}

/// Thaws a v1 freezer cgroup when dropped (also when a test fails), so nothing stays
/// stopped in it; removes it if `remove`.
struct Thaw {
    dir: PathBuf,
    remove: bool,
}

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("freezer.state"), "THAWED");
        if self.remove {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

/// runc's dev.bats "device cgroup deny": a node listed in linux.devices is made, but opening
/// it is up to linux.resources.devices alone (every listed node once got an allow rule, so a
/// container denied every device could write the host's /dev/kmsg). A spec without device
/// rules gets runc's: every device but the standard nodes denied.
#[test]
fn a_device_listed_in_the_spec_but_denied_in_resources_cannot_be_opened() {
    let rt = Rt::new();
    let kmsg = json!([{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]);
    let caps = json!(["CAP_SYSLOG"]);
    let with_kmsg = |s: &mut serde_json::Value| {
        s["linux"]["devices"] = kmsg.clone();
        s["process"]["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    };
    let script = "ls -l /dev/kmsg | cut -c1; (echo nodectl-test > /dev/kmsg) 2>&1; head -n 1 /dev/kmsg 2>&1 >/dev/null; head -c 1 /dev/zero | wc -c";
    for (name, rules) in [("kmsg-denied", Some(json!([{"allow": false, "access": "rwm"}]))), ("kmsg-no-rules", None)] {
        let out = rt.sh(name, script, |s| {
            with_kmsg(s);
            match &rules {
                Some(r) => s["linux"]["resources"]["devices"] = r.clone(),
                None => s["linux"]["resources"].as_object_mut().unwrap().retain(|k, _| k != "devices"),
            }
        });
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert_eq!(lines[0], "c", "{name}: the node is made: {out}");
        assert!(lines[1].contains("/dev/kmsg") && lines[1].contains("Operation not permitted"), "{name}: {out}");
        assert!(lines[2].contains("/dev/kmsg") && lines[2].contains("Operation not permitted"), "{name}: {out}");
        assert_eq!(lines[3], "1", "{name}: the standard nodes stay usable: {out}");
    }
    // Allowed by a rule of its own, it opens (read-only here: nothing lands in the host's log).
    let out = rt.sh("kmsg-allowed", "head -n 1 /dev/kmsg > /dev/null && echo read", |s| {
        with_kmsg(s);
        s["linux"]["resources"]["devices"] =
            json!([{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "r"}]);
    });
    assert_eq!(out.trim(), "read");
}

/// runc's cgroups.bats "should refuse pre-existing frozen cgroup": a process moved into a
/// frozen cgroup stops there (D state on v1), and `create` once waited for it for ever.
/// Refused with runc's words, naming the cgroup, which is left as it was.
#[test]
fn create_refuses_a_frozen_cgroup_instead_of_hanging() {
    let rt = Rt::new();
    let b = rt.bundle("frozen", |s| s["process"]["args"] = json!(["true"]));
    let dir = rt.cgroup_dir("freezer", "frozen");
    fs::create_dir_all(&dir).unwrap();
    let _thaw = Thaw { dir: dir.clone(), remove: true };
    fs::write(dir.join("freezer.state"), "FROZEN").unwrap();
    let (code, _, err) = within(&rt, &["create", "--bundle", b.to_str().unwrap(), "frozen"], 30);
    assert_ne!(code, 0);
    assert!(err.contains("container's cgroup unexpectedly frozen"), "{err}");
    assert!(err.contains(dir.join("freezer.state").to_str().unwrap()), "{err}");
    assert_eq!(fs::read_to_string(dir.join("freezer.state")).unwrap().trim(), "FROZEN", "left as it was");
    assert!(!rt.containers().join("frozen").exists());

    // A new cgroup below a frozen parent is frozen too: refused as well, and removed.
    let parent = dir.parent().unwrap().to_path_buf();
    let _thaw_parent = Thaw { dir: parent.clone(), remove: false };
    fs::write(parent.join("freezer.state"), "FROZEN").unwrap();
    let (code, _, err) = within(&rt, &["create", "--bundle", b.to_str().unwrap(), "below-frozen"], 30);
    assert_ne!(code, 0);
    assert!(err.contains("container's cgroup unexpectedly frozen"), "{err}");
    assert!(!parent.join("below-frozen").exists(), "the cgroup create made is gone");
}

/// runc's cgroups.bats "exec should refuse a paused container" and "exec --ignore-paused":
/// the exec'd process would stop in the frozen cgroup, so exec refuses (255, runc's exit
/// code for exec's own errors) whether we paused it or someone froze the cgroup; with
/// --ignore-paused it waits and runs once the container is resumed.
#[test]
fn exec_into_a_paused_container_is_refused_unless_ignore_paused() {
    let rt = Rt::new();
    let b = rt.bundle("paused", |s| s["process"]["args"] = json!(["sleep", "1000"]));
    rt.create(&b, "paused");
    rt.ok(&["start", "paused"]);
    let _thaw = Thaw { dir: rt.cgroup_dir("freezer", "paused"), remove: false };
    rt.ok(&["pause", "paused"]);
    let (code, _, err) = within(&rt, &["exec", "paused", "echo", "ok"], 30);
    assert_eq!(code, 255, "{err}");
    assert!(err.contains("cannot exec in a paused container (use --ignore-paused to override)"), "{err}");

    let resume = {
        let cmd = rt.cmd(&["resume", "paused"]);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            let mut cmd = cmd;
            cmd.status().unwrap()
        })
    };
    let (code, out, err) = within(&rt, &["exec", "--ignore-paused", "paused", "echo", "ok"], 60);
    assert!(resume.join().unwrap().success());
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");

    // Frozen behind our back (not `pause`): refused just the same.
    fs::write(rt.cgroup_dir("freezer", "paused").join("freezer.state"), "FROZEN").unwrap();
    let (code, _, err) = within(&rt, &["exec", "paused", "echo", "ok"], 30);
    assert_eq!(code, 255, "{err}");
    assert!(err.contains("paused"), "{err}");
    fs::write(rt.cgroup_dir("freezer", "paused").join("freezer.state"), "THAWED").unwrap();
    rt.ok(&["delete", "--force", "paused"]);
}

/// runc's seccomp.bats "startContainer hook": runc loads the filter before the wait for
/// `start` (with noNewPrivileges just before it; without, earlier still), so
/// startContainer hooks run under it, as the program does. With noNewPrivileges the filter
/// once came after the hooks, and a hook could do what the container may not.
#[test]
fn start_container_hooks_run_under_the_seccomp_filter_as_with_runc() {
    let rt = Rt::new();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
    });
    let hook = json!({"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "mkdir /dev/shm/from-hook"]}]});
    for nnp in [true, false] {
        let name = format!("hook-seccomp-{nnp}");
        let b = rt.bundle(&name, |s| {
            s["process"]["args"] = json!(["true"]);
            s["process"]["noNewPrivileges"] = nnp.into();
            s["linux"]["seccomp"] = profile.clone();
            s["hooks"] = hook.clone();
        });
        let (code, out, err) = rt.run(&b, &name);
        assert_ne!(code, 0, "noNewPrivileges {nnp}: the hook ran unfiltered: {out}");
        assert!(err.contains("hook /bin/sh") && err.contains("Operation not permitted"), "{nnp}: {err}");
    }
    // Without the profile the same hook succeeds: it was the filter that stopped it.
    let b = rt.bundle("hook-no-seccomp", |s| {
        s["process"]["args"] = json!(["ls", "-d", "/dev/shm/from-hook"]);
        s["hooks"] = hook.clone();
    });
    let (code, out, err) = rt.run(&b, "hook-no-seccomp");
    assert_eq!((code, out.trim()), (0, "/dev/shm/from-hook"), "{err}");
}

/// youki's contest: a hook run in the container without an `env` of its own gets the
/// process's environment (Go's exec with a nil Env, as runc runs hooks); one with an `env`
/// gets only that.
#[test]
fn start_container_hooks_without_env_get_the_process_environment() {
    let rt = Rt::new();
    let b = rt.bundle("hook-env", |s| {
        s["process"]["args"] = json!(["cat", "/dev/shm/hook.log"]);
        s["process"]["env"] = json!(["PATH=/bin", "FOO=from-process"]);
        s["hooks"] = json!({"startContainer": [
            {"path": "/bin/sh", "args": ["sh", "-c", "echo A=$FOO >> /dev/shm/hook.log"]},
            {"path": "/bin/sh", "args": ["sh", "-c", "echo B=$FOO$BAR >> /dev/shm/hook.log"], "env": ["BAR=own"]}
        ]});
    });
    let (code, out, err) = rt.run(&b, "hook-env");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["A=from-process", "B=own"], "{out}");
}

/// runc's exec.bats: --env replaces the spec's variable of that name, --additional-gids adds
/// groups, and exec's own failures exit 255 (the process's code is ours otherwise).
#[test]
fn exec_env_additional_gids_and_exit_codes_are_runcs() {
    let rt = Rt::new();
    let b = rt.bundle("exec-flags", |s| {
        s["process"]["args"] = json!(["sleep", "1000"]);
        s["process"]["env"] = json!(["PATH=/bin:/usr/bin", "X=from-spec"]);
    });
    rt.create(&b, "exec-flags");
    rt.ok(&["start", "exec-flags"]);
    let out = rt.ok(&["exec", "--env", "X=from-exec", "exec-flags", "sh", "-c", "echo $X; env | grep -c ^X="]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["from-exec", "1"], "{out}");
    let out =
        rt.ok(&["exec", "--user", "1000:1000", "--additional-gids", "100", "-g", "65534", "exec-flags", "id", "-G"]);
    assert_eq!(out.trim(), "1000 100 65534");
    assert_eq!(rt.out(&["exec", "exec-flags", "false"]).status.code(), Some(1));
    assert_eq!(rt.out(&["exec", "exec-flags", "no-such-program"]).status.code(), Some(255));
    assert_eq!(rt.out(&["exec", "no-such-container", "true"]).status.code(), Some(255));
    rt.ok(&["delete", "--force", "exec-flags"]);
}

/// runc's kill.bats and delete.bats: signal 0 checks the container is there; a stopped
/// container refuses it ("container not running") except with -a; `delete --force` of a
/// container that does not exist succeeds (callers clean up with it), without --force fails.
#[test]
fn kill_zero_and_delete_force_of_a_missing_container_behave_as_in_runc() {
    let rt = Rt::new();
    let b = rt.bundle("killzero", |s| s["process"]["args"] = json!(["sleep", "1000"]));
    rt.create(&b, "killzero");
    rt.ok(&["start", "killzero"]);
    rt.ok(&["kill", "killzero", "0"]);
    rt.ok(&["kill", "-a", "killzero", "0"]);
    rt.ok(&["kill", "killzero", "KILL"]);
    rt.wait_status("killzero", "stopped");
    assert!(rt.fails(&["kill", "killzero", "0"]).contains("container not running"));
    rt.ok(&["kill", "-a", "killzero", "0"]);
    rt.ok(&["delete", "killzero"]);
    rt.ok(&["delete", "--force", "killzero"]);
    assert!(rt.fails(&["delete", "killzero"]).contains("does not exist"));
}

/// Unmounts a host mount a test made when dropped (also when the test fails).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// youki's contest: runc's recursive mount options (rnoexec, rnosuid, rnodev, rnoatime, …)
/// reach every mount below the one asked for, through mount_setattr with AT_RECURSIVE; all
/// but `rro` were taken for filesystem data and silently ignored. A plain option stays the
/// top mount's, as runc's bind remount leaves it.
#[test]
fn recursive_mount_options_reach_the_mounts_below() {
    let rt = Rt::new();
    let src = rt.dir.path().join("rsrc");
    fs::create_dir_all(src.join("sub")).unwrap();
    // A mount below the source, on the host, in the test's own directory.
    nix::mount::mount(Some("tmpfs"), &src.join("sub"), Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=64k"))
        .unwrap();
    let _unmount = Unmount(src.join("sub"));
    let out = rt.sh("rmounts", "awk '$5 ~ /^\\/mnt\\/r/ {print $5, $6}' /proc/self/mountinfo", |s| {
        let mounts = s["mounts"].as_array_mut().unwrap();
        mounts.push(json!({"destination": "/mnt/r", "type": "bind", "source": src, "options": ["rbind", "rnoexec", "rnosuid", "rnodev", "rnoatime", "ro"]}));
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for line in &lines {
        let opts: Vec<&str> = line.split_once(' ').unwrap().1.split(',').collect();
        for want in ["noexec", "nosuid", "nodev", "noatime"] {
            assert!(opts.contains(&want), "{want} missing: {out}");
        }
    }
    assert!(lines[0].starts_with("/mnt/r ro,"), "ro is the top mount's: {out}");
    assert!(lines[1].starts_with("/mnt/r/sub rw,"), "{out}");
}

/// runc's run.bats "run --keep": the stopped container stays, its cgroup too, until
/// `delete`; then runc's "container does not exist". ps.bats: `ps -f json`.
#[test]
fn run_keep_leaves_a_stopped_container_and_ps_takes_f_json() {
    let rt = Rt::new();
    let b = rt.bundle("keep", |s| s["process"]["args"] = json!(["sh", "-c", "exit 3"]));
    let o = rt.out(&["run", "--keep", "--bundle", b.to_str().unwrap(), "keep"]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(rt.state("keep")["status"], "stopped");
    assert!(rt.cgroup_dir("pids", "keep").is_dir());
    rt.ok(&["delete", "keep"]);
    assert!(rt.fails(&["state", "keep"]).contains("container does not exist"));
    assert!(!rt.cgroup_dir("pids", "keep").exists());

    let b = rt.bundle("psf", |s| s["process"]["args"] = json!(["sleep", "1000"]));
    rt.create(&b, "psf");
    rt.ok(&["start", "psf"]);
    let pids: Vec<i64> = serde_json::from_str(&rt.ok(&["ps", "-f", "json", "psf"])).unwrap();
    assert_eq!(pids, [rt.state("psf")["pid"].as_i64().unwrap()]);
    rt.ok(&["delete", "--force", "psf"]);
}

/// runc's create.bats "runc create exec": exec runs in a created container, which stays
/// created until `start`.
#[test]
fn exec_runs_in_a_created_container_before_start() {
    let rt = Rt::new();
    let b = rt.bundle("created-exec", |s| {
        s["process"]["args"] = json!(["sleep", "1000"]);
        s["hostname"] = "made".into();
    });
    rt.create(&b, "created-exec");
    assert_eq!(rt.ok(&["exec", "created-exec", "hostname"]).trim(), "made");
    assert_eq!(rt.state("created-exec")["status"], "created");
    rt.ok(&["start", "created-exec"]);
    assert_eq!(rt.state("created-exec")["status"], "running");
    rt.ok(&["delete", "--force", "created-exec"]);
}

/// runc's delete.bats "delete --force in cgroupv1 with subcgroups": a container may make
/// cgroups below its own and move processes there; `delete --force` removes the whole tree
/// (rmdir of the container's cgroup failed with EBUSY and left the container half-deleted).
#[test]
fn delete_force_removes_the_sub_cgroups_a_container_made() {
    let rt = Rt::new();
    let b = rt.bundle("subcg", |s| s["process"]["args"] = json!(["sleep", "1000"]));
    rt.create(&b, "subcg");
    rt.ok(&["start", "subcg"]);
    let pid_file = rt.dir.path().join("subcg.pid");
    let status = rt
        .cmd(&["exec", "--detach", "--pid-file", pid_file.to_str().unwrap(), "subcg", "sleep", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let pid = fs::read_to_string(&pid_file).unwrap();
    // Made from the host here; in runc's test the container makes them through a writable
    // cgroupfs, which comes to the same directories.
    let subs: Vec<PathBuf> =
        ["pids", "freezer", "memory"].iter().map(|c| rt.cgroup_dir(c, "subcg").join("foo")).collect();
    for sub in &subs {
        fs::create_dir(sub).unwrap();
        fs::write(sub.join("cgroup.procs"), &pid).unwrap();
    }
    rt.ok(&["delete", "--force", "subcg"]);
    for sub in &subs {
        assert!(!sub.parent().unwrap().exists(), "{} is left", sub.display());
    }
    assert!(rt.fails(&["state", "subcg"]).contains("does not exist"));
}

/// runc's update.bats: the flag form and `-r -` write each resource to the container's
/// cgroup (checked against runc 1.1.5 on this host, which writes the same values); 0
/// leaves a setting as it is; a spec device rule with access "rwa" is written as the
/// kernel takes it ("rw"; written raw it was EINVAL); and a parent cgroup made beforehand
/// with an empty cpuset is given its parent's cpus and mems, as runc's cpusetEnsureParent
/// does (else the container cannot join it).
#[test]
fn update_takes_runcs_flags_and_json_and_writes_each_to_the_cgroup() {
    let rt = Rt::new();
    // Pre-made parents, as runc's tests make them: an empty cpuset, and a real-time
    // budget for the container's to come out of (a new cgroup has none).
    let cpuset_parent = rt.cgroup_dir("cpuset", "x").parent().unwrap().to_path_buf();
    let cpu_parent = rt.cgroup_dir("cpu", "x").parent().unwrap().to_path_buf();
    fs::create_dir(&cpuset_parent).unwrap();
    fs::create_dir(&cpu_parent).unwrap();
    assert_eq!(fs::read_to_string(cpuset_parent.join("cpuset.cpus")).unwrap().trim(), "");
    fs::write(cpu_parent.join("cpu.rt_runtime_us"), "20000").unwrap();
    let b = rt.bundle("upd", |s| {
        s["process"]["args"] = json!(["sleep", "1000"]);
        s["linux"]["devices"] = json!([{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]);
        s["linux"]["resources"] = json!({
            "devices": [{"allow": false, "access": "rwm"}, {"allow": false, "type": "c", "major": 1, "minor": 11, "access": "rwa"}],
            "memory": {"limit": 33554432, "reservation": 25165824},
            "cpu": {"shares": 100, "quota": 500000, "period": 1000000}
        });
    });
    rt.create(&b, "upd");
    rt.ok(&["start", "upd"]);
    let read = |c: &str, f: &str| fs::read_to_string(rt.cgroup_dir(c, "upd").join(f)).unwrap().trim().to_string();
    // The node may be made (`m`, as every linux.devices node), never read or written.
    let kmsg_access = || {
        let list = read("devices", "devices.list");
        list.lines().filter(|l| l.starts_with("c 1:11 ")).map(|l| l[7..].to_string()).collect::<String>()
    };
    assert!(!kmsg_access().contains(['r', 'w']), "{}", read("devices", "devices.list"));

    // A blkio weight needs CFQ's or BFQ's file; where the host has neither, runc's
    // `update --blkio-weight` fails on the missing file, and so do we, saying why.
    let weights = rt.cgroup_dir("blkio", "upd");
    if !weights.join("blkio.weight").exists() && !weights.join("blkio.bfq.weight").exists() {
        let err = rt.fails(&["update", "--blkio-weight", "300", "upd"]);
        assert!(err.contains("neither blkio.weight nor blkio.bfq.weight exists"), "{err}");
    }
    let mut args = vec![
        "update",
        "--cpu-period",
        "900000",
        "--cpu-quota",
        "450000",
        "--cpu-share",
        "200",
        "--cpuset-cpus",
        "0",
        "--cpuset-mems",
        "0",
        "--memory",
        "64m",
        "--memory-reservation",
        "32M",
        "--memory-swap",
        "128MiB",
        "--pids-limit",
        "20",
        "--cpu-rt-period",
        "900001",
        "--cpu-rt-runtime",
        "10000",
    ];
    if weights.join("blkio.weight").exists() || weights.join("blkio.bfq.weight").exists() {
        args.extend(["--blkio-weight", "300"]);
    }
    args.push("upd");
    rt.ok(&args);
    let want = [
        ("cpu", "cpu.cfs_period_us", "900000"),
        ("cpu", "cpu.cfs_quota_us", "450000"),
        ("cpu", "cpu.shares", "200"),
        ("cpu", "cpu.rt_period_us", "900001"),
        ("cpu", "cpu.rt_runtime_us", "10000"),
        ("cpuset", "cpuset.cpus", "0"),
        ("cpuset", "cpuset.mems", "0"),
        ("memory", "memory.limit_in_bytes", "67108864"),
        ("memory", "memory.soft_limit_in_bytes", "33554432"),
        ("pids", "pids.max", "20"),
    ];
    for (c, f, v) in want {
        assert_eq!(read(c, f), v, "{f}");
    }
    // Swap and BFQ's weight exist only with swap accounting and BFQ.
    if rt.cgroup_dir("memory", "upd").join("memory.memsw.limit_in_bytes").exists() {
        assert_eq!(read("memory", "memory.memsw.limit_in_bytes"), "134217728");
    }
    if weights.join("blkio.bfq.weight").exists() {
        assert_eq!(read("blkio", "blkio.bfq.weight"), "300");
    } else if weights.join("blkio.weight").exists() {
        assert_eq!(read("blkio", "blkio.weight"), "300");
    }

    // runc's JSON, from stdin; 0 leaves the shares alone.
    let mut child = rt.cmd(&["update", "-r", "-", "upd"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        br#"{"cpu": {"shares": 0, "realtimePeriod": 800001, "realtimeRuntime": 10001}, "pids": {"limit": -1}}"#,
    )
    .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read("cpu", "cpu.shares"), "200");
    assert_eq!(read("cpu", "cpu.rt_period_us"), "800001");
    assert_eq!(read("cpu", "cpu.rt_runtime_us"), "10001");
    assert_eq!(read("pids", "pids.max"), "max");
    // runc's "update cgroup v1/v2 common limits": `--memory -1` removes the limit, and with
    // no swap value the swap limit too (which would otherwise be below it: EINVAL).
    rt.ok(&["update", "--memory", "-1", "upd"]);
    let unlimited = read("memory", "memory.limit_in_bytes");
    assert!(unlimited.parse::<u64>().unwrap() > 1 << 62, "{unlimited}");
    if rt.cgroup_dir("memory", "upd").join("memory.memsw.limit_in_bytes").exists() {
        assert_eq!(read("memory", "memory.memsw.limit_in_bytes"), unlimited);
    }
    // As in runc's "update devices [minimal transition rules]": updates keep the rules.
    rt.ok(&["update", "--pids-limit", "30", "upd"]);
    assert!(!kmsg_access().contains(['r', 'w']), "{}", read("devices", "devices.list"));
    rt.ok(&["delete", "--force", "upd"]);
}

/// runc's events.bats: `events --stats` is one line in runc's format, its keys in runc's
/// order (the test matches the text); `events --interval` streams stats lines until the
/// container is deleted; an OOM kill in the container is an `{"type":"oom","id":…}` line.
#[test]
fn events_stream_stats_and_oom_kills_as_runc_prints_them() {
    let rt = Rt::new();
    let b = rt.bundle("ev", |s| {
        s["process"]["args"] = json!(["sleep", "1000"]);
        s["linux"]["resources"] = json!({"memory": {"limit": 33554432, "swap": 33554432}, "pids": {"limit": 50}});
    });
    rt.create(&b, "ev");
    rt.ok(&["start", "ev"]);

    let once = rt.ok(&["events", "--stats", "ev"]);
    assert_eq!(once.lines().count(), 1, "{once}");
    assert!(once.starts_with(r#"{"type":"stats","id":"ev","data":{"cpu":{"usage":{"#), "{once}");
    let v: serde_json::Value = serde_json::from_str(&once).unwrap();
    let data = &v["data"];
    assert_eq!(data["memory"]["usage"]["limit"], 33554432, "{v}");
    assert_eq!(data["pids"], json!({"current": 1, "limit": 50}), "{v}");
    assert!(data["cpu"]["usage"]["total"].as_u64().unwrap() > 0, "{v}");
    assert!(data["cpuset"]["cpus"].as_array().is_some_and(|c| !c.is_empty()), "{v}");
    for key in ["blkio", "hugetlb", "intel_rdt", "network_interfaces"] {
        assert!(data.get(key).is_some(), "no {key}: {v}");
    }

    let log = rt.dir.path().join("events.log");
    let mut events = rt
        .cmd(&["events", "--interval", "200ms", "ev"])
        .stdout(fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let wait_for = |what: &str, secs: u64| {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            let text = fs::read_to_string(&log).unwrap();
            if text.lines().filter(|l| l.starts_with(what)).count() >= 2
                || (what.contains("oom") && text.contains(what))
            {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no {what} in {}", fs::read_to_string(&log).unwrap());
    };
    // Two stats lines: it streams.
    wait_for(r#"{"type":"stats","id":"ev","data":"#, 10);
    let status = rt
        .cmd(&["exec", "--detach", "ev", "sh", "-c", "a=$(yes | head -c 67108864)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    wait_for(r#"{"type":"oom","id":"ev"}"#, 30);
    rt.ok(&["delete", "--force", "ev"]);
    // It ends once the container is gone.
    let end = Instant::now() + Duration::from_secs(10);
    while events.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = events.kill();
            let _ = events.wait();
            panic!("events still running after the container was deleted");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `nodectl-runtime` (the runc-shaped name) with the test's state root (the one of
/// `nodectl runtime`, so the two see the same containers) and cgroup parent.
fn as_runtime(rt: &Rt, name: &str) -> Command {
    let link = rt.dir.path().join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nodectl"), &link).unwrap();
    }
    let mut c = Command::new(&link);
    c.args(["--root", rt.containers().to_str().unwrap(), "--cgroup-parent", &rt.cgroup_parent]);
    c.stdin(Stdio::null());
    c
}

/// runc's debug.bats: `--debug` logs runc's steps (its nsexec's and init's messages, which
/// the init logs at the same steps) as logrus lines, to stderr or to `--log` in text or
/// JSON; the log file exists even after a clean run, and errors are written to it.
#[test]
fn debug_lines_and_the_log_file_are_written_as_runc_writes_them() {
    let rt = Rt::new();
    let b = rt.bundle("debug", |s| s["process"]["args"] = json!(["/bin/echo", "Hello World"]));
    let runc_steps =
        ["nsexec container setup", "child process in init()", "init: closing the pipe to signal completion"];
    // To stderr, as text.
    let o = as_runtime(&rt, "nodectl-runtime")
        .args(["--debug", "run", "--bundle", b.to_str().unwrap(), "d1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "Hello World\n", "{err}");
    assert!(err.contains("level=debug"), "{err}");
    for step in runc_steps {
        assert!(err.contains(step), "{step}: {err}");
    }
    // To --log, as JSON; nothing of it on stderr.
    let log = rt.dir.path().join("log.out");
    let o = as_runtime(&rt, "nodectl-runtime")
        .args(["--log", log.to_str().unwrap(), "--log-format", "json", "--debug"])
        .args(["run", "--bundle", b.to_str().unwrap(), "d2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("level"), "{err}");
    let text = fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["time"].is_string() && v["msg"].is_string(), "{line}");
    }
    assert!(text.contains(r#""level":"debug""#), "{text}");
    for step in runc_steps {
        assert!(text.contains(step), "{step}: {text}");
    }
    // exec.bats: exec logs its own steps.
    let b = rt.bundle("debug-exec", |s| s["process"]["args"] = json!(["sleep", "1000"]));
    rt.create(&b, "debug-exec");
    let o = as_runtime(&rt, "nodectl-runtime").args(["--debug", "exec", "debug-exec", "true"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    for step in ["nsexec container setup", "child process in init()", "setns_init: about to exec"] {
        assert!(err.lines().any(|l| l.contains("level=debug") && l.contains(step)), "{step}: {err}");
    }
    rt.ok(&["delete", "--force", "debug-exec"]);
    // Without --debug: the file is made on success, and a failure is written to it.
    let quiet = rt.dir.path().join("quiet.log");
    let o = as_runtime(&rt, "nodectl-runtime").args(["--log", quiet.to_str().unwrap(), "list"]).output().unwrap();
    assert!(o.status.success());
    assert_eq!(fs::read_to_string(&quiet).unwrap(), "");
    let o =
        as_runtime(&rt, "nodectl-runtime").args(["--log", quiet.to_str().unwrap(), "state", "nope"]).output().unwrap();
    assert!(!o.status.success());
    let text = fs::read_to_string(&quiet).unwrap();
    assert!(text.starts_with("time=\"") && text.contains("level=error msg=\"container does not exist"), "{text}");
}

/// runc's help.bats and version.bats: urfave/cli's help on the program and on every
/// command (the NAME line names both nodectl-runtime and runc), `help COMMAND`, "No help
/// topic" with exit code 3, and `-v` as runc's three lines.
#[test]
fn help_and_version_answer_as_runcs_urfave_cli_does() {
    let rt = Rt::new();
    let lines = |args: &[&str]| -> (i32, Vec<String>, String) {
        let o = as_runtime(&rt, "nodectl-runtime").args(args).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect();
        (o.status.code().unwrap_or(-1), out, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    for flag in ["-h", "--help"] {
        let (code, out, err) = lines(&[flag]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out[0], "NAME:");
        assert!(out[1].contains("runc - Open Container Initiative runtime"), "{out:?}");
        assert!(out.iter().any(|l| l.trim_start().starts_with("help, h")), "{out:?}");
    }
    let verbs = ["checkpoint", "create", "delete", "events", "exec", "kill", "list", "pause", "ps", "restore"];
    let more = ["resume", "spec", "start", "run", "state", "update", "features"];
    for verb in verbs.iter().chain(&more) {
        for args in [vec![*verb, "-h"], vec![*verb, "--help"], vec!["help", *verb]] {
            let (code, out, err) = lines(&args);
            assert_eq!(code, 0, "{args:?}: {err}");
            assert_eq!(out[0], "NAME:", "{args:?}");
            assert!(out[1].contains(&format!("runc {verb}")), "{args:?}: {out:?}");
        }
    }
    // -h after the command's first argument is the program's own.
    let (_, out, _) = lines(&["exec", "--cwd", "/", "--help"]);
    assert!(out[1].contains("runc exec"), "{out:?}");
    for args in [&["foo", "-h"][..], &["help", "foo"], &["foo"]] {
        let (code, _, err) = lines(args);
        assert_eq!(code, 3, "{args:?}");
        assert!(err.contains("No help topic for 'foo'"), "{args:?}: {err}");
    }
    for flag in ["-v", "--version"] {
        let (code, out, _) = lines(&[flag]);
        assert_eq!(code, 0);
        // version.bats: lines[0] =~ runc\ version\ [0-9]+\.[0-9]+\.[0-9]+
        let (_, after) = out[0].split_once("runc version ").unwrap_or_else(|| panic!("{out:?}"));
        let version = after.split_whitespace().next().unwrap_or_default();
        assert_eq!(version.split('.').filter(|n| n.parse::<u32>().is_ok()).count(), 3, "{out:?}");
        assert!(out[1].starts_with("commit:") && out[2].starts_with("spec: 1."), "{out:?}");
    }
    // The same binary called runc is the runtime too.
    let o = as_runtime(&rt, "runc").arg("list").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("ID "));
    // checkpoint and restore exist for their help only.
    let o = as_runtime(&rt, "nodectl-runtime").args(["checkpoint", "c1"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("CRIU"));
}

/// runc's tty.bats: the pty is owned by the process's uid, in devpts's tty group (5);
/// `exec -t` without a console socket serves the pty on our stdio (with -d it needs the
/// socket); a process.json without "user" runs as uid 0.
#[test]
fn terminals_belong_to_the_process_user_and_exec_t_needs_no_console_socket() {
    let rt = Rt::new();
    let b = rt.bundle("tty-owner", |s| {
        s["process"]["terminal"] = true.into();
        s["process"]["user"] = json!({"uid": 1000, "gid": 100});
        s["process"]["args"] = json!(["sh", "-c", "stat -c %u:%g $(tty)"]);
    });
    let (code, out, err) = rt.run(&b, "tty-owner");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.replace('\r', "").trim(), "1000:5", "{err}");
    let b = rt.bundle("tty-exec", |s| s["process"]["args"] = json!(["sleep", "1000"]));
    rt.create(&b, "tty-exec");
    rt.ok(&["start", "tty-exec"]);
    let out = rt.ok(&[
        "exec",
        "-t",
        "--user",
        "1000:100",
        "tty-exec",
        "sh",
        "-c",
        "stat -c %u:%g $(tty); test -t 0 && echo tty",
    ]);
    assert_eq!(out.replace('\r', "").lines().collect::<Vec<_>>(), ["1000:5", "tty"], "{out}");
    let out = rt.ok(&["exec", "tty-exec", "sh", "-c", "test -t 0 || echo no-tty"]);
    assert_eq!(out, "no-tty\n");
    assert!(rt.fails(&["exec", "-t", "-d", "tty-exec", "true"]).contains("console-socket"));
    let process = rt.dir.path().join("process.json");
    fs::write(&process, r#"{"args": ["id", "-u"], "cwd": "/", "env": ["PATH=/bin:/usr/bin"]}"#).unwrap();
    assert_eq!(rt.ok(&["exec", "--process", process.to_str().unwrap(), "tty-exec"]), "0\n");
    rt.ok(&["delete", "--force", "tty-exec"]);
}

/// runc 1.1's `exec` has no terminal unless `--tty` asks for one, whatever the container's
/// process.terminal (runc's delete.bats and cgroups.bats exec `-d` without a console
/// socket, and compare `exec`'s output, into a container run with a terminal).
#[test]
fn exec_without_tty_has_no_terminal_in_a_container_with_one() {
    use std::os::unix::net::UnixListener;
    let rt = Rt::new();
    let sock = rt.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let b = rt.bundle("tty-ct", |s| {
        s["process"]["terminal"] = true.into();
        s["process"]["args"] = json!(["sleep", "1000"]);
    });
    let child = rt
        .cmd(&["create", "--console-socket", sock.to_str().unwrap(), "--bundle", b.to_str().unwrap(), "tty-ct"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The pty master arrives on this connection; it stays open until the test ends.
    let (_conn, _) = listener.accept().unwrap();
    let created = child.wait_with_output().unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    rt.ok(&["start", "tty-ct"]);
    // Files, not pipes: the detached sleep keeps its stdio open.
    let err_path = rt.dir.path().join("exec-d.err");
    let status = rt
        .cmd(&["exec", "-d", "tty-ct", "sleep", "1000"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "exec -d: {}", fs::read_to_string(&err_path).unwrap());
    assert_eq!(rt.ok(&["exec", "tty-ct", "sh", "-c", "test -t 0 || echo no-tty"]), "no-tty\n");
    assert!(rt.fails(&["exec", "-t", "-d", "tty-ct", "true"]).contains("console-socket"));
    rt.ok(&["delete", "--force", "tty-ct"]);
}

/// runc's exec.bats "exec --cgroup sub-cgroups [v1]": `exec --cgroup` puts the process in an
/// existing sub-cgroup of the container's, for every controller (PATH) or for the ones
/// named (CONTROLLERS:PATH); a path above the container's, a missing cgroup or an unknown
/// controller is refused in runc's words, before anything runs.
#[test]
fn exec_cgroup_joins_an_existing_sub_cgroup() {
    let rt = Rt::new();
    let b = rt.bundle("exec-cg", |s| s["process"]["args"] = json!(["sleep", "1000"]));
    rt.create(&b, "exec-cg");
    rt.ok(&["start", "exec-cg"]);
    let err = rt.fails(&["exec", "--cgroup", "..", "exec-cg", "true"]);
    assert!(err.contains(" .. is not a sub cgroup path"), "{err}");
    let err = rt.fails(&["exec", "--cgroup", "memory:nonexistent", "exec-cg", "true"]);
    assert!(err.contains(" adding pid ") && err.contains("/nonexistent/cgroup.procs: no such file "), "{err}");
    let err = rt.fails(&["exec", "--cgroup", "whaaat:/", "exec-cg", "true"]);
    assert!(err.contains("unknown controller whaaat"), "{err}");
    let err = rt.fails(&["exec", "--cgroup", "a", "--cgroup", "b", "exec-cg", "true"]);
    assert!(err.contains("missing <controller>: prefix"), "{err}");
    // runc's test makes them from inside, through a writable cgroupfs; here from outside.
    fs::create_dir(rt.cgroup_dir("memory", "exec-cg").join("sub")).unwrap();
    fs::create_dir(rt.cgroup_dir("cpu", "exec-cg").join("sub")).unwrap();
    fs::create_dir_all(rt.cgroup_dir("cpuacct", "exec-cg").join("sub")).unwrap();
    // The controllers (of memory, pids, cpu and cpuacct) whose line of /proc/self/cgroup ends in
    // the sub-cgroup.
    let in_sub = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["exec"];
        all.extend(args);
        all.extend(["exec-cg", "cat", "/proc/self/cgroup"]);
        let out = rt.ok(&all);
        let mut names: Vec<String> = out
            .lines()
            .filter_map(|l| l.split(':').nth(1).zip(Some(l.ends_with("/sub"))))
            .filter(|(_, sub)| *sub)
            .flat_map(|(controllers, _)| controllers.split(',').map(String::from).collect::<Vec<_>>())
            .filter(|c| ["memory", "pids", "cpu", "cpuacct"].contains(&c.as_str()))
            .collect();
        names.sort();
        names
    };
    assert_eq!(in_sub(&["--cgroup", "memory:sub", "--cgroup", "cpu,cpuacct:sub"]), ["cpu", "cpuacct", "memory"]);
    assert!(in_sub(&[]).is_empty());
    assert!(in_sub(&["--cgroup", "/"]).is_empty());
    rt.ok(&["delete", "--force", "exec-cg"]);
}

/// A created container's init, parked until `start`, must not hold the runtime's stderr
/// (the copy it logs through): callers such as containerd's go-runc read the runtime's
/// output to its end, and would wait until `start`. runc closes its log pipe there too.
#[test]
fn a_created_container_does_not_hold_the_runtimes_stderr() {
    use std::io::Read;
    use std::os::unix::net::UnixListener;
    let rt = Rt::new();
    let sock = rt.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let b = rt.bundle("parked", |s| {
        s["process"]["terminal"] = true.into();
        s["process"]["args"] = json!(["true"]);
    });
    let mut child = as_runtime(&rt, "nodectl-runtime")
        .args(["--debug", "create", "--console-socket", sock.to_str().unwrap(), "--bundle", b.to_str().unwrap()])
        .arg("parked")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_conn, _) = listener.accept().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let ended = rx.recv_timeout(Duration::from_secs(10));
    let status = child.wait().unwrap();
    let _ = rt.out(&["delete", "--force", "parked"]);
    let err = ended.expect("the runtime's stderr stayed open after create returned");
    assert!(status.success(), "{err}");
    assert!(err.contains("init: closing the pipe to signal completion"), "{err}");
}

#[test]
fn an_apparmor_profile_is_applied_where_the_host_enforces_apparmor_and_said_to_be_dropped_where_not() {
    let rt = Rt::new();
    let enforced = nodectl::runtime::apparmor::host_enabled();
    let b = rt.bundle("aa", |s| {
        s["process"]["args"] = json!(["sh", "-c", "echo ran"]);
        s["process"]["apparmorProfile"] = json!("nodectl-test-not-loaded");
    });
    let (code, out, err) = rt.run(&b, "aa");
    if enforced {
        // A profile the kernel does not have is create's error, naming it.
        assert_ne!(code, 0, "{out}");
        assert!(err.contains("apparmor profile \"nodectl-test-not-loaded\""), "{err}");
        let out = rt.sh("aa-unconfined", "cat /proc/self/attr/current", |s| {
            s["process"]["apparmorProfile"] = json!("unconfined")
        });
        assert_eq!(out.trim(), "unconfined");
    } else {
        // No AppArmor: the container runs, and the log says the profile was not applied
        // (make vm-test shows a profile applied, on a kernel that has AppArmor).
        assert_eq!((code, out.trim()), (0, "ran"), "{err}");
        assert!(err.contains("AppArmor is not enabled on this host"), "{err}");
        assert!(err.contains("nodectl-test-not-loaded"), "{err}");
    }
}

/// The first block device the host has, as `major:minor`.
fn some_block_device() -> (i64, i64) {
    let mut devs: Vec<_> = fs::read_dir("/sys/block").unwrap().flatten().map(|e| e.path()).collect();
    devs.sort();
    for d in devs {
        if let Some((a, b)) = fs::read_to_string(d.join("dev")).ok().and_then(|s| {
            let (a, b) = s.trim().split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        }) {
            return (a, b);
        }
    }
    panic!("no block device in /sys/block");
}

#[test]
fn on_a_hybrid_host_the_container_joins_the_cgroup2_hierarchy_at_the_same_path() {
    // runc's v1 manager joins the unified hierarchy too, with no limit asking for it, so
    // that /proc/PID/cgroup's `0::` line names the container (runc's cgroups.bats reads it).
    use nodectl::runtime::cgroups::{self, Hierarchy};
    let Hierarchy::Legacy { hybrid: Some(mount), .. } = cgroups::detect().unwrap() else {
        // Pure v1 has no cgroup2 side; pure v2 is the container's only hierarchy.
        return;
    };
    let rt = Rt::new();
    let b = rt.bundle("joins", |s| s["process"]["args"] = json!(["sleep", "1000"]));
    rt.create(&b, "joins");
    let pid = rt.state("joins")["pid"].as_i64().unwrap();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap().trim_end_matches('/').to_string();
    let want = format!("{own}/{}/joins", rt.cgroup_parent);
    let unified_line = |text: &str| text.lines().find_map(|l| l.strip_prefix("0::")).unwrap().to_string();
    assert_eq!(unified_line(&fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap()), want);
    // An exec'd process goes there too.
    assert_eq!(unified_line(&rt.ok(&["exec", "joins", "cat", "/proc/self/cgroup"])), want);
    let dir = mount.join(want.trim_start_matches('/'));
    assert!(dir.is_dir(), "{} missing", dir.display());
    rt.ok(&["delete", "--force", "joins"]);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn block_io_hugetlb_network_rdma_and_unified_limits_apply_where_the_host_has_the_controller() {
    use nodectl::runtime::cgroups::{self, Hierarchy};
    let Hierarchy::Legacy { mounts, hybrid } = cgroups::detect().unwrap() else {
        // make vm-test covers a pure cgroup2 host.
        return;
    };
    let rt = Rt::new();
    let (major, minor) = some_block_device();
    let dev = format!("{major}:{minor}");
    let two_mb = Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists();
    let b = rt.bundle("limits", |s| {
        s["process"]["args"] = json!(["sh", "-c", "cat /proc/self/cgroup; exec sleep 100"]);
        let r = &mut s["linux"]["resources"];
        r["blockIO"] = json!({
            "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
            "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}],
        });
        if two_mb {
            r["hugepageLimits"] = json!([{"pageSize": "2MB", "limit": 4194304}]);
        }
        if hybrid.is_some() {
            r["unified"] = json!({"cgroup.max.descendants": "3"});
        }
    });
    rt.create(&b, "limits");
    let blkio = rt.cgroup_dir("blkio", "limits");
    assert_eq!(
        fs::read_to_string(blkio.join("blkio.throttle.read_bps_device")).unwrap().trim(),
        format!("{dev} 1048576")
    );
    assert_eq!(
        fs::read_to_string(blkio.join("blkio.throttle.write_iops_device")).unwrap().trim(),
        format!("{dev} 100")
    );

    // hugetlb from the v1 hierarchy where the host mounts one, else from the hybrid host's
    // cgroup2 one (this build machine's case), which the container's processes then join.
    let v1_hugetlb = mounts.iter().any(|(c, _)| c == "hugetlb");
    let v2_dir = hybrid.as_ref().map(|mount| {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap().trim_start_matches('/').to_string();
        mount.join(own).join(&rt.cgroup_parent).join("limits")
    });
    if two_mb {
        let value = |dir: &Path, file: &str| fs::read_to_string(dir.join(file)).unwrap().trim().to_string();
        if v1_hugetlb {
            assert_eq!(value(&rt.cgroup_dir("hugetlb", "limits"), "hugetlb.2MB.limit_in_bytes"), "4194304");
        } else if let Some(dir) = &v2_dir {
            assert_eq!(value(dir, "hugetlb.2MB.max"), "4194304");
        }
        let r = rt.dir.path().join("huge.json");
        fs::write(&r, json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 2097152}]}).to_string()).unwrap();
        rt.ok(&["update", "--resources", r.to_str().unwrap(), "limits"]);
        if v1_hugetlb {
            assert_eq!(value(&rt.cgroup_dir("hugetlb", "limits"), "hugetlb.2MB.limit_in_bytes"), "2097152");
        } else if let Some(dir) = &v2_dir {
            assert_eq!(value(dir, "hugetlb.2MB.max"), "2097152");
        }
    }
    if let Some(dir) = &v2_dir {
        assert_eq!(fs::read_to_string(dir.join("cgroup.max.descendants")).unwrap().trim(), "3");
        let pid = rt.state("limits")["pid"].as_i64().unwrap();
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(procs.lines().any(|l| l.trim() == pid.to_string()), "{pid} not in {}: {procs}", dir.display());
    }
    rt.ok(&["delete", "--force", "limits"]);
    if let Some(dir) = &v2_dir {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    // net_cls, net_prio and rdma where the host mounts them; refused by name where not.
    let cases = [
        ("netcls", "net_cls", json!({"network": {"classID": 1048577}}), "net_cls.classid", "1048577"),
        (
            "netprio",
            "net_prio",
            json!({"network": {"priorities": [{"name": "lo", "priority": 5}]}}),
            "net_prio.ifpriomap",
            "lo 5",
        ),
        ("rdma", "rdma", json!({"rdma": {"nodectl_test0": {"hcaHandles": 1}}}), "rdma.max", "nodectl_test0"),
    ];
    for (id, controller, resources, file, want) in cases {
        let b = rt.bundle(id, |s| {
            s["process"]["args"] = json!(["true"]);
            s["linux"]["resources"] = resources;
        });
        if mounts.iter().any(|(c, _)| c == controller) && controller != "rdma" {
            rt.create(&b, id);
            let text = fs::read_to_string(rt.cgroup_dir(controller, id).join(file)).unwrap();
            assert!(text.contains(want), "{id}: {text}");
            rt.ok(&["delete", "--force", id]);
        } else {
            // No such hierarchy, or (rdma) no such device: create's error names the file
            // or the controller, and nothing is left.
            let err = rt.fails(&["create", "--bundle", b.to_str().unwrap(), id]);
            assert!(err.contains(controller), "{id}: {err}");
            assert!(!rt.cgroup_dir("memory", id).exists(), "{id} left a cgroup");
        }
    }
}

/// A seccomp agent, as runc's tests/cmd/seccompagent is: for each connection to the
/// socket at `path` it takes the container process state and the listener, and answers
/// every notified syscall with ENOMEDIUM ("No medium found", which nothing else here
/// returns) until the filter's last user is gone. With `close_at_once` it closes each
/// listener as soon as it has it (an agent that died). The states arrive on the channel.
fn seccomp_agent(path: &Path, close_at_once: bool) -> std::sync::mpsc::Receiver<serde_json::Value> {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // The accepting thread ends with the test binary; each connection's with its filter.
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || serve_listener(conn, close_at_once, tx));
        }
    });
    rx
}

fn serve_listener(
    conn: std::os::unix::net::UnixStream,
    close_at_once: bool,
    tx: std::sync::mpsc::Sender<serde_json::Value>,
) {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: received with SCM_RIGHTS, owned by nothing else.
            fd = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        }
    }
    let n = msg.bytes;
    let state: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
    let fd = fd.expect("the listener came with the state");
    if close_at_once {
        drop(fd);
        let _ = tx.send(state);
        return;
    }
    let _ = tx.send(state);
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        let mut p = [nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN)];
        if nix::poll::poll(&mut p, 100u16).unwrap_or(0) == 0 {
            continue;
        }
        let revents = p[0].revents().unwrap_or(nix::poll::PollFlags::POLLHUP);
        if revents.contains(nix::poll::PollFlags::POLLIN) {
            if let Ok(req) = libseccomp::ScmpNotifReq::receive(fd.as_raw_fd()) {
                let resp = libseccomp::ScmpNotifResp::new_error(
                    req.id,
                    -libc::ENOMEDIUM,
                    libseccomp::ScmpNotifRespFlags::empty(),
                );
                let _ = resp.respond(fd.as_raw_fd());
            }
        } else if revents.contains(nix::poll::PollFlags::POLLHUP) {
            return;
        }
    }
}

fn notify_profile(listener: &Path, names: &[&str]) -> serde_json::Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": listener,
        "listenerMetadata": "from-the-spec",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_NOTIFY"}]
    })
}

/// runc's seccomp-notify.bats: with SCMP_ACT_NOTIFY rules the runtime takes the filter's
/// listener and sends it to the agent at listenerPath with the container process state
/// (runc's SendFds: one message, SCM_RIGHTS); the agent then answers the container's
/// syscalls, for the init (with and without noNewPrivileges) and for exec. Once the agent
/// has closed its copy, the syscalls fail with ENOSYS: nobody else kept one. No agent,
/// no listenerPath, or NOTIFY on write are refused, in runc's words.
#[test]
fn seccomp_notify_hands_the_listener_to_the_agent_as_runc_does() {
    let rt = Rt::new();
    let sock = |name: &str| rt.dir.path().join(format!("{name}.sock"));
    let agent = seccomp_agent(&sock("agent"), false);
    let got = || agent.recv_timeout(Duration::from_secs(20)).expect("the agent got the listener");
    for nnp in [false, true] {
        let name = format!("notify-{nnp}");
        let b = rt.bundle(&name, |s| {
            s["process"]["args"] = json!(["sh", "-c", "mkdir /tmp/by-agent"]);
            s["process"]["noNewPrivileges"] = nnp.into();
            s["linux"]["seccomp"] = notify_profile(&sock("agent"), &["mkdir", "mkdirat"]);
        });
        let (code, out, err) = rt.run(&b, &name);
        assert_ne!(code, 0, "noNewPrivileges {nnp}: mkdir was not handed to the agent: {out}");
        assert!(err.contains("No medium found"), "noNewPrivileges {nnp}: {err}");
        let state = got();
        assert_eq!(state["fds"], json!(["seccompFd"]), "{state}");
        assert_eq!(state["metadata"], "from-the-spec", "{state}");
        assert_eq!(state["state"]["id"], name.as_str(), "{state}");
        assert_eq!(state["state"]["status"], "creating", "{state}");
        assert!(state["pid"].as_i64().unwrap() > 0 && state["pid"] == state["state"]["pid"], "{state}");
    }

    // A profile that gets runc's -ENOSYS stub (a default that is not "allow") is loaded by
    // nodectl, not libseccomp: the listener comes from that load.
    if libseccomp::ScmpArch::native() == libseccomp::ScmpArch::X8664 {
        let b = rt.bundle("notify-stub", |s| {
            s["process"]["args"] = json!(["sh", "-c", "mkdir /tmp/by-agent"]);
            let mut p = notify_profile(&sock("agent"), &["mkdir", "mkdirat"]);
            p["defaultAction"] = "SCMP_ACT_ERRNO".into();
            let allow = json!({"names": x86_64_syscalls_up_to_prlimit64_but_mkdir(), "action": "SCMP_ACT_ALLOW"});
            p["syscalls"].as_array_mut().unwrap().push(allow);
            s["linux"]["seccomp"] = p;
        });
        let (code, _, err) = rt.run(&b, "notify-stub");
        assert_ne!(code, 0, "mkdir was not handed to the agent");
        assert!(err.contains("No medium found"), "{err}");
        assert_eq!(got()["state"]["id"], "notify-stub");
    }

    // exec: the exec'd process gets a filter and listener of its own; the agent is sent
    // its pid and the container's state as running.
    let b = rt.bundle("notify-exec", |s| {
        s["process"]["args"] = json!(["sleep", "1000"]);
        s["linux"]["seccomp"] = notify_profile(&sock("agent"), &["mkdir", "mkdirat"]);
    });
    rt.create(&b, "notify-exec");
    assert_eq!(got()["state"]["status"], "creating");
    rt.ok(&["start", "notify-exec"]);
    let state = rt.state("notify-exec");
    let o = rt.out(&["exec", "notify-exec", "mkdir", "/tmp/by-exec"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("No medium found"), "{o:?}");
    let sent = got();
    assert_eq!(sent["state"]["status"], "running", "{sent}");
    assert_eq!(sent["state"]["pid"], state["pid"], "{sent}");
    assert_ne!(sent["pid"], state["pid"], "the exec'd process's pid, not the init's: {sent}");

    // An agent that closed the listener: ENOSYS, not a hang.
    let gone = seccomp_agent(&sock("gone"), true);
    let b = rt.bundle("notify-gone", |s| {
        s["process"]["args"] = json!(["sh", "-c", "mkdir /tmp/nobody-answers"]);
        s["linux"]["seccomp"] = notify_profile(&sock("gone"), &["mkdir", "mkdirat"]);
    });
    let (code, _, err) = rt.run(&b, "notify-gone");
    gone.recv_timeout(Duration::from_secs(20)).expect("the agent got the listener");
    assert_ne!(code, 0);
    assert!(err.contains("Function not implemented"), "{err}");

    // A startContainer hook gets stdio and nothing else: not the listener, nor what the
    // runtime's caller left open (fd 10 here), as runc's hooks (seccomp-notify.bats).
    let b = rt.bundle("notify-hook", |s| {
        s["process"]["args"] = json!(["true"]);
        s["linux"]["seccomp"] = notify_profile(&sock("agent"), &["mkdir", "mkdirat"]);
        s["hooks"] = json!({"startContainer": [{"path": "/bin/sh",
            "args": ["sh", "-c", "ls /proc/self/fd >&2; [ $(ls /proc/self/fd | wc -l) -eq 4 ]"]}]});
    });
    let mut cmd = rt.cmd(&["run", "--bundle", b.to_str().unwrap(), "notify-hook"]);
    // SAFETY: dup2 is async-signal-safe; the copy of stderr at 10 is left open on purpose.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::dup2(2, 10) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    got();

    // What runc refuses.
    for (name, edit, want) in [
        ("no-agent", json!({}), "failed to connect with seccomp agent"),
        ("no-path", json!({"listenerPath": ""}), "listenerPath"),
        ("on-write", json!({"syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]}), "write syscall"),
    ] {
        let b = rt.bundle(name, |s| {
            s["process"]["args"] = json!(["true"]);
            let mut p = notify_profile(&sock(name), &["mkdir"]);
            for (k, v) in edit.as_object().unwrap() {
                p[k] = v.clone();
            }
            s["linux"]["seccomp"] = p;
        });
        let (code, _, err) = rt.run(&b, name);
        assert_ne!(code, 0, "{name}");
        assert!(err.contains(want), "{name}: {err}");
    }
}

/// runc's seccomp.bats (its seccomp_syscall_test1 profile: "Multiple arguments with OR
/// rules"): several comparisons of the same argument in one entry each match on their own,
/// as runc makes each a rule of its own; ANDed, pid 1111 and 2222 never matched at all.
#[test]
fn seccomp_conditions_on_one_argument_are_ored_as_in_runc() {
    let rt = Rt::new();
    let out = rt.sh("seccomp-or", "for p in 1111 2222 3333; do kill -0 $p 2>&1; done; true", |s| {
        s["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
            "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                "args": [{"index": 0, "value": 1111, "op": "SCMP_CMP_EQ"},
                         {"index": 0, "value": 2222, "op": "SCMP_CMP_EQ"}]}]
        });
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].contains("1111") && lines[0].contains("Operation not permitted"), "{out}");
    assert!(lines[1].contains("2222") && lines[1].contains("Operation not permitted"), "{out}");
    // No rule for 3333: the kernel's answer, no such process in the container's pid namespace.
    assert!(lines[2].contains("3333") && lines[2].contains("No such process"), "{out}");
}

/// runc's userns.bats: with a user namespace, bind sources under a 0700 directory of host
/// root's (which the container's root, an unprivileged uid on the host, cannot search) are
/// opened by the runtime and bound from the descriptor, as runc's nsexec passes them; the
/// mounts then serve `run` and `exec` alike. A bind just before /sys/fs/cgroup, without a
/// cgroup namespace, leaves a real cgroupfs there.
#[test]
fn bind_sources_under_0700_directories_are_opened_before_the_user_namespace() {
    use std::os::unix::fs::PermissionsExt;
    let rt = Rt::new();
    let userns = |s: &mut serde_json::Value| {
        s["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
        s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65534}]);
        s["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65534}]);
    };
    // The bundle's own directories are searchable (as runc's tests chmod a+x them); the
    // sources below are not.
    fs::set_permissions(rt.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let b = rt.bundle("userns-binds", |s| {
        s["process"]["args"] = json!(["sleep", "1000"]);
        userns(s);
        s["mounts"].as_array_mut().unwrap().extend([
            json!({"source": "closed-1/dir", "destination": "/tmp/mount-1", "options": ["bind"]}),
            json!({"source": "closed-2/dir", "destination": "/tmp/mount-2", "options": ["bind"]}),
        ]);
    });
    for d in ["closed-1", "closed-2"] {
        fs::create_dir_all(b.join(d).join("dir")).unwrap();
        fs::write(b.join(d).join("dir/foo.txt"), d).unwrap();
        fs::set_permissions(b.join(d), fs::Permissions::from_mode(0o700)).unwrap();
    }
    rt.create(&b, "userns-binds");
    rt.ok(&["start", "userns-binds"]);
    let out = rt.ok(&["exec", "userns-binds", "cat", "/tmp/mount-1/foo.txt", "/tmp/mount-2/foo.txt"]);
    assert_eq!(out, "closed-1closed-2");

    // runc's "userns with bind mount before a cgroupfs mount" (v1, no cgroup namespace):
    // `tasks` files, which only cgroupfs has.
    let b = rt.bundle("userns-cgroupfs", |s| {
        s["process"]["args"] = json!(["sh", "-c", "cat /tmp/mount-1/foo.txt; cat /sys/fs/cgroup/pids/tasks /sys/fs/cgroup/memory/tasks >/dev/null && echo cgroupfs"]);
        userns(s);
        s["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != "cgroup");
        let mounts = s["mounts"].as_array_mut().unwrap();
        let at = mounts.iter().position(|m| m["destination"] == "/sys/fs/cgroup").unwrap();
        mounts.insert(at, json!({"source": "closed-1/dir", "destination": "/tmp/mount-1", "options": ["bind"]}));
    });
    fs::create_dir_all(b.join("closed-1/dir")).unwrap();
    fs::write(b.join("closed-1/dir/foo.txt"), "before-cgroupfs\n").unwrap();
    fs::set_permissions(b.join("closed-1"), fs::Permissions::from_mode(0o700)).unwrap();
    let (code, out, err) = rt.run(&b, "userns-cgroupfs");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["before-cgroupfs", "cgroupfs"], "{out}");
}
