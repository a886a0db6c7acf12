//! `nodectl daemon` and its local clients (`run --detach`, `apply`, `get pods`, `logs`,
//! `delete pod`), for real, as root: each test with its own state root, socket, bridge and
//! pod CIDR, each checking that what it made is gone.

mod common;

use common::daemon::Node;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A daemon on a state root of its own with the busybox image, serving /metrics over TCP
/// too, on a port the kernel picks (see [`metrics_port`]).
fn node() -> Node {
    let mut node = Node::new("ndd", 10).with_busybox();
    // A port of our choosing could be one that a connection elsewhere on the machine took
    // while the daemon was down between a kill and its restart.
    node.start(&["--metrics-address", "127.0.0.1:0", "--log-level", "info"]);
    node
}

/// The port of the daemon's last start, from its log line "serving metrics address=…".
fn metrics_port(node: &Node) -> u16 {
    let log = node.log();
    let line = log.lines().rfind(|l| l.contains("serving metrics")).unwrap_or_else(|| panic!("no metrics in {log}"));
    let address = line.rsplit_once("address=").map(|(_, a)| a.trim()).unwrap_or_else(|| panic!("{line}"));
    address.parse::<std::net::SocketAddr>().unwrap_or_else(|e| panic!("{address}: {e}")).port()
}

const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'trap \"echo bye; exit 0\" TERM; echo hello; while :; do sleep 0.1; done']}\n";

#[test]
fn the_daemon_keeps_restarts_lists_logs_and_deletes_pods() {
    let node = node();
    let socket = fs::metadata(node.socket()).unwrap();
    assert_eq!(socket.permissions().mode() & 0o777, 0o600, "the socket is root's only");

    assert_eq!(node.ok(&["run", "--detach", &node.file(WEB)]), "pod/web created\n");
    let crash = "apiVersion: v1\nkind: Pod\nmetadata: {name: crash, namespace: team}\nspec:\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'echo run $(cat /proc/uptime); exit 2']}\n";
    node.ok(&["run", "-d", &node.file(crash)]);
    // Names are unique per namespace.
    let again = node.nodectl(&["run", "--detach", &node.file(WEB)]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("pods \"web\" already exists"));

    let web = node.wait_for("web", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    assert_eq!(web["kind"], "Pod");
    assert_eq!(web["status"]["phase"], "Running");
    assert!(web["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    let ip = web["status"]["podIP"].as_str().unwrap();
    assert!(ip.starts_with(node.cidr.rsplit_once('.').unwrap().0), "{ip}");
    assert!(web["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());
    let conditions: Vec<(&str, &str)> = web["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        conditions,
        [("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", "True"), ("Ready", "True")]
    );
    assert_eq!(web["status"]["qosClass"], "BestEffort");

    let crash = serde_json::from_str::<Value>(&node.ok(&["get", "pod", "crash", "-n", "team", "-o", "json"])).unwrap();
    assert_eq!(crash["metadata"]["namespace"], "team");
    let end = Instant::now() + Duration::from_secs(60);
    let crash = loop {
        let p: Value = serde_json::from_str(&node.ok(&["get", "pod", "crash", "-n", "team", "-o", "json"])).unwrap();
        if p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 2
            && p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        {
            break p;
        }
        assert!(Instant::now() < end, "never crash-looping: {p:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let last = &crash["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!((last["exitCode"].as_i64(), last["reason"].as_str()), (Some(2), Some("Error")), "{crash:#}");

    // kubectl's table, over every namespace.
    let table = node.ok(&["get", "pods", "-A"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE   NAME    READY   STATUS"), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("default") && l.contains("web") && l.contains("1/1") && l.contains("Running")),
        "{table}"
    );
    assert!(lines.iter().any(|l| l.starts_with("team") && l.contains("crash") && l.contains("0/1")), "{table}");
    assert!(node.ok(&["get", "pods", "-o", "wide"]).contains(ip));

    // Logs: the current run, the previous run, the tail, with times.
    assert_eq!(node.log_of(&["web"], 1), "hello\n");
    let previous = node.ok(&["logs", "crash", "-n", "team", "--previous"]);
    let current = node.ok(&["logs", "crash", "-n", "team"]);
    assert!(previous.starts_with("run ") && current.starts_with("run ") && previous != current, "{previous} {current}");
    let stamped = node.ok(&["logs", "web", "--timestamps", "--tail", "1"]);
    assert!(stamped.ends_with("Z hello\n") && stamped.starts_with("20"), "{stamped}");

    // apply: the same spec changes nothing; another replaces the pod.
    let web_file = node.file(WEB);
    assert_eq!(node.ok(&["apply", "-f", &web_file]), "pod/web unchanged\n");
    let changed = node.file(&WEB.replace("echo hello", "echo hello again"));
    assert_eq!(node.ok(&["apply", "-f", &changed]), "pod/web configured\n");
    let replaced = node.wait_for("web", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    assert_ne!(replaced["metadata"]["uid"], web["metadata"]["uid"]);
    assert_eq!(node.log_of(&["web"], 1), "hello again\n");

    // Delete: SIGTERM (the trap answers), the pod is gone when the command returns.
    assert_eq!(node.ok(&["delete", "pod", "web"]), "pod \"web\" deleted\n");
    node.ok(&["delete", "pod", "crash", "-n", "team", "--grace-period", "0"]);
    let gone = node.nodectl(&["get", "pod", "web"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("pods \"web\" not found"));
    assert_eq!(
        String::from_utf8_lossy(&node.nodectl(&["get", "pods"]).stderr),
        "No resources found in default namespace.\n"
    );
    node.assert_clean();
}

#[test]
fn a_bad_manifest_is_refused_naming_the_field_and_a_second_daemon_is_refused() {
    let node = node();
    let bad = node.file("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containerz: []\n");
    let out = node.nodectl(&["run", "--detach", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("containerz"));
    // The daemon itself checks what it is sent, with the same errors.
    let body = "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  restartPolicy: Sometimes\n  containers: [{name: c, image: busybox}]\n";
    let out = Command::new("curl")
        .args(["-s", "--unix-socket", node.socket().to_str().unwrap(), "-X", "POST", "--data-binary", body])
        .arg("http://nodectl/api/v1/pods")
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["code"], 422, "{status}");
    assert!(
        status["message"].as_str().unwrap().contains("spec.restartPolicy: Unsupported value: \"Sometimes\""),
        "{status}"
    );
    assert!(node.ok(&["get", "pods", "-A", "-o", "name"]).is_empty());

    let second = Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .arg("--root")
        .arg(node.root())
        .args(["daemon", "--socket"])
        .arg(node.root().join("other.sock"))
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("another nodectl daemon holds"), "{second:?}");

    // A missing image is a pod waiting with the kubelet's reason, not a daemon error; it
    // starts once the image is there.
    let missing = node.file("apiVersion: v1\nkind: Pod\nmetadata: {name: m}\nspec:\n  containers: [{name: c, image: 'not-here:v1', imagePullPolicy: Never, command: [sleep, '60']}]\n");
    node.ok(&["run", "--detach", &missing]);
    let p = node
        .wait_for("m", |p| p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImageNeverPull");
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        "Container image \"not-here:v1\" is not present with pull policy of Never"
    );
    assert!(node.ok(&["get", "pods"]).contains("ErrImageNeverPull"));
    node.ok(&["image", "import", common::images().join("busybox").to_str().unwrap(), "--name", "not-here:v1"]);
    node.wait_for("m", |p| p["status"]["phase"] == "Running");
    node.ok(&["delete", "pod", "m", "--grace-period", "0"]);
    // Deleted while it waits: nothing is left either.
    let never = node.file("apiVersion: v1\nkind: Pod\nmetadata: {name: n}\nspec:\n  containers: [{name: c, image: 'not-here:v2', imagePullPolicy: Never}]\n");
    node.ok(&["run", "--detach", &never]);
    node.wait_for("n", |p| p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImageNeverPull");
    node.ok(&["delete", "pod", "n"]);
    node.assert_clean();
}

#[test]
fn pods_that_cannot_start_wait_with_the_kubelets_reasons_and_events() {
    let node = node();
    // A registry that is not there (nothing listens on loopback port 1): Pulling, then
    // ErrImagePull and ImagePullBackOff, tried again; nothing else is made.
    let unpullable = node.file("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: '127.0.0.1:1/nothing:v1', imagePullPolicy: IfNotPresent}]\n");
    node.ok(&["run", "--detach", &unpullable]);
    let p =
        node.wait_for("p", |p| p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff");
    assert_eq!(p["status"]["phase"], "Pending");
    let described = node.ok(&["describe", "pod", "p"]);
    for want in ["Pulling image \"127.0.0.1:1/nothing:v1\"", "ErrImagePull", "Back-off pulling image"] {
        assert!(described.contains(want), "{want:?} not in {described}");
    }

    // runAsNonRoot with an image that runs as root: the container is never made; it waits
    // with CreateContainerConfigError whatever its restart policy, no restart is counted.
    let non_root = node.file("apiVersion: v1\nkind: Pod\nmetadata: {name: r}\nspec:\n  restartPolicy: Never\n  containers: [{name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '60'], securityContext: {runAsNonRoot: true}}]\n");
    node.ok(&["run", "--detach", &non_root]);
    let p = node.wait_for("r", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    let c = &p["status"]["containerStatuses"][0];
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(c["restartCount"], 0);
    assert_eq!(c["ready"], false);
    let message = c["state"]["waiting"]["message"].as_str().unwrap();
    assert!(message.contains("container has runAsNonRoot and image will run as root"), "{message}");
    assert!(node.ok(&["get", "pods"]).contains("CreateContainerConfigError"));
    // Tried again: the same event, counted.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let described = node.ok(&["describe", "pod", "r"]);
        if described.contains("x2 over") || described.contains("(x") {
            assert!(described.contains("Error: spec.containers[0].securityContext.runAsNonRoot"), "{described}");
            break;
        }
        assert!(Instant::now() < end, "the config error was not tried again: {described}");
        std::thread::sleep(Duration::from_millis(100));
    }
    node.ok(&["delete", "pod", "p", "--grace-period", "0"]);
    node.ok(&["delete", "pod", "r"]);
    let end = Instant::now() + Duration::from_secs(30);
    while !node.ok(&["get", "pods", "-o", "name"]).is_empty() {
        assert!(Instant::now() < end, "pods not deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
    node.assert_clean();
}

#[test]
fn the_daemon_logs_json_lines_with_log_format_json_and_text_otherwise() {
    use std::io::{BufRead, BufReader};
    for (format, json) in [("json", true), ("text", false)] {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = Command::new(env!("CARGO_BIN_EXE_nodectl"))
            .arg("--root")
            .arg(dir.path())
            .args(["--log-level", "info", "daemon", "--log-format", format])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(daemon.stderr.take().unwrap()).read_line(&mut first).unwrap();
        let _ = daemon.kill();
        let _ = daemon.wait();
        let parsed = serde_json::from_str::<Value>(&first);
        if json {
            let line = parsed.unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
            assert_eq!(line["level"], "INFO", "{line}");
            assert_eq!(line["fields"]["message"], "serving", "{line}");
            assert!(line["fields"]["socket"].as_str().unwrap().ends_with("nodectl.sock"), "{line}");
        } else {
            assert!(parsed.is_err() && first.contains("INFO") && first.contains("serving"), "{first}");
            // Not a terminal: no colour codes.
            assert!(!first.contains('\u{1b}'), "{first:?}");
        }
    }
}

#[test]
fn a_vanished_network_namespace_or_cgroup_ends_as_a_status_with_a_reason_not_a_daemon_crash() {
    let node = node();
    let crashing = node.file("apiVersion: v1\nkind: Pod\nmetadata: {name: crashing}\nspec:\n  containers: [{name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'sleep 0.2; exit 1']}]\n");
    node.ok(&["run", "--detach", &crashing]);
    let p = node.wait_for("crashing", |p| p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1));
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let record = json_file(&pod_dir(&node, &uid).join("pod.json"));

    // The pod's cgroup goes while its container waits to restart (a cgroup with processes
    // cannot be removed): the next run makes it again.
    let parent = record["cgroupParent"].as_str().unwrap().to_string();
    let removed = remove_cgroup_when_empty(&parent);
    assert!(removed > 0, "no cgroup of {parent} was found to remove");
    let before = node.pod("crashing")["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap();
    node.wait_for("crashing", |p| p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(before + 2));

    // Its network namespace goes: the containers cannot join it, and say so.
    let netns = pod_dir(&node, &uid).join("ns/net");
    let out = Command::new("umount").arg("-l").arg(&netns).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    fs::remove_file(&netns).unwrap();
    let p = node.wait_for("crashing", |p| {
        p["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"] == "ContainerCannotRun"
    });
    let message = p["status"]["containerStatuses"][0]["lastState"]["terminated"]["message"].as_str().unwrap();
    assert!(message.contains("ns/net"), "{message}");
    assert!(node.ok(&["describe", "pod", "crashing"]).contains("ns/net"));
    // The daemon goes on, and the pod's removal leaves nothing.
    node.ok(&["delete", "pod", "crashing", "--grace-period", "0"]);
    let end = Instant::now() + Duration::from_secs(30);
    while !node.ok(&["get", "pods", "-o", "name"]).is_empty() {
        assert!(Instant::now() < end, "pod not deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
    node.assert_clean();
    assert!(cgroups_named(&parent).is_empty());
}

/// Removes the cgroup `relative` (below ours) in every hierarchy, retrying until each is
/// empty at the moment we try; how many were removed.
fn remove_cgroup_when_empty(relative: &str) -> usize {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut dirs = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mount = match controllers {
            "" => "unified".to_string(),
            c => c.strip_prefix("name=").unwrap_or(c).to_string(),
        };
        let dir = PathBuf::from("/sys/fs/cgroup").join(mount).join(path.trim_start_matches('/')).join(relative);
        if dir.is_dir() {
            dirs.push(dir);
        }
    }
    let end = Instant::now() + Duration::from_secs(30);
    let mut removed = 0;
    for dir in dirs {
        // Deepest first; a container cgroup inside means it runs now: try again.
        while dir.exists() {
            let mut all = vec![dir.clone()];
            let mut i = 0;
            while i < all.len() {
                for e in fs::read_dir(&all[i]).into_iter().flatten().flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        all.push(e.path());
                    }
                }
                i += 1;
            }
            for d in all.iter().rev() {
                let _ = fs::remove_dir(d);
            }
            if !dir.exists() {
                removed += 1;
                break;
            }
            assert!(Instant::now() < end, "{} never emptied", dir.display());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    removed
}

fn pod_dir(node: &Node, uid: &str) -> PathBuf {
    node.root().join("pods").join(uid)
}

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

fn alive(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

/// kill -9 of the daemon touches no container; the next daemon takes every pod over where it
/// was (same containers, restart counts kept) and goes on restarting. A pod's monitor that
/// dies is replaced, and its containers restarted as their policy says.
#[test]
fn a_killed_daemon_touches_no_container_and_the_next_one_carries_on() {
    let mut node = node();
    node.ok(&["run", "--detach", &node.file(WEB)]);
    let flaky = "apiVersion: v1\nkind: Pod\nmetadata: {name: flaky}\nspec:\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'sleep 0.3; exit 1']}\n";
    node.ok(&["run", "--detach", &node.file(flaky)]);
    let web = node.wait_for("web", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    let uid = web["metadata"]["uid"].as_str().unwrap().to_string();
    let record = json_file(&pod_dir(&node, &uid).join("containers/c.json"));
    let pid = record["pid"].as_i64().unwrap();
    let started = web["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].clone();
    let before = node.wait_for("flaky", |p| p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(2));
    let restarts = before["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap();

    node.kill_daemon();
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(pid), "the container lives on without the daemon");

    node.restart();
    let web = node.wait_for("web", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    assert_eq!(web["metadata"]["uid"], uid.as_str(), "the same pod");
    assert_eq!(web["status"]["containerStatuses"][0]["state"]["running"]["startedAt"], started);
    assert_eq!(web["status"]["containerStatuses"][0]["restartCount"], 0);
    assert!(alive(pid), "the same container");
    node.wait_for("flaky", |p| p["status"]["containerStatuses"][0]["restartCount"].as_i64() > Some(restarts + 1));
    assert_eq!(node.log_of(&["web"], 1), "hello\n");

    // The monitor of web dies: its container is killed and started again (restartPolicy Always).
    let monitor = json_file(&pod_dir(&node, &uid).join("monitor.json"))["pid"].as_i64().unwrap();
    // SAFETY: kill(2) of a process of our test's own pod.
    unsafe { libc::kill(monitor as i32, libc::SIGKILL) };
    let web = node.wait_for("web", |p| {
        let c = &p["status"]["containerStatuses"][0];
        c["restartCount"] == 1 && c["ready"] == true
    });
    let last = &web["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["reason"], "ContainerStatusUnknown", "{web:#}");
    assert!(!alive(pid), "the old container was killed");
    assert_ne!(json_file(&pod_dir(&node, &uid).join("monitor.json"))["pid"].as_i64().unwrap(), monitor);

    node.ok(&["delete", "pod", "web", "--grace-period", "0"]);
    node.ok(&["delete", "pod", "flaky"]);
    node.assert_clean();
}

#[test]
fn logs_follow_a_running_container_to_its_end_and_describe_shows_states_and_events() {
    let node = node();
    let talk = "apiVersion: v1\nkind: Pod\nmetadata: {name: talk, labels: {app: chat}}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'for i in 1 2 3 4; do echo line $i; sleep 0.3; done; exit 3']}\n";
    node.ok(&["run", "--detach", &node.file(talk)]);
    node.wait_for("talk", |p| p["status"]["containerStatuses"][0]["state"]["running"].is_object());
    assert_eq!(node.ok(&["logs", "-f", "talk"]), "line 1\nline 2\nline 3\nline 4\n");
    let p = node.wait_for("talk", |p| p["status"]["phase"] == "Failed");
    assert_eq!(p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3);

    let text = node.ok(&["describe", "pod", "talk"]);
    for want in [
        "Name:             talk\n",
        "Namespace:        default\n",
        "Labels:           app=chat\n",
        "Status:           Error\n",
        "    State:          Terminated\n",
        "      Reason:       Error\n",
        "      Exit Code:    3\n",
        "    Restart Count:  0\n",
        "  Ready             False\n",
        "QoS Class:        BestEffort\n",
        "Container image \"busybox\" already present on machine",
        "Created container c",
        "Started container c",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    node.ok(&["delete", "pod", "talk"]);
    node.assert_clean();
}

/// The daemon dies while a pod is being made and while one is being deleted: the next
/// daemon finishes both (one runs, once; the other goes), and nothing is left over.
#[test]
fn work_half_done_when_the_daemon_was_killed_is_finished() {
    let mut node = node();
    let slow_stop = "apiVersion: v1\nkind: Pod\nmetadata: {name: stubborn}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'trap \"\" TERM; echo up; while :; do sleep 0.1; done']}\n";
    node.ok(&["run", "--detach", &node.file(slow_stop)]);
    node.wait_for("stubborn", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    // Deleting: SIGTERM is ignored, so the pod waits out its grace period; the daemon dies.
    node.ok(&["delete", "pod", "stubborn", "--wait=false"]);
    // Creating: the daemon answers before the pod is made, and dies at once.
    node.ok(&["run", "--detach", &node.file(WEB)]);
    node.kill_daemon();

    node.restart();
    let web = node.wait_for("web", |p| p["status"]["containerStatuses"][0]["ready"] == true);
    assert_eq!(node.log_of(&["web"], 1), "hello\n", "made once: {web:#}");
    let dirs = fs::read_dir(node.root().join("pods")).unwrap().count();
    let end = Instant::now() + Duration::from_secs(30);
    while node.nodectl(&["get", "pod", "stubborn"]).status.success() {
        assert!(Instant::now() < end, "the delete was not finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dirs <= 2, "{dirs} pod directories");
    node.ok(&["delete", "pod", "web", "--grace-period", "0"]);
    node.assert_clean();
}

#[test]
fn probes_gate_readiness_restart_a_dead_container_and_the_prestop_hook_runs_before_sigterm() {
    let node = node();
    let www = node.root().join("www");
    fs::create_dir(&www).unwrap();
    fs::write(www.join("alive"), "").unwrap();
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: probed}}\nspec:\n  terminationGracePeriodSeconds: 5\n  \
         volumes: [{{name: www, hostPath: {{path: {www}, type: Directory}}}}]\n  containers:\n  - name: web\n    \
         image: busybox\n    imagePullPolicy: Never\n    command: [httpd, -f, -p, '8080', -h, /www]\n    \
         ports: [{{name: http, containerPort: 8080}}]\n    volumeMounts: [{{name: www, mountPath: /www}}]\n    \
         startupProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n    \
         readinessProbe: {{httpGet: {{path: /ready, port: http}}, periodSeconds: 1}}\n    \
         livenessProbe: {{exec: {{command: [test, -f, /www/alive]}}, periodSeconds: 1, failureThreshold: 2}}\n    \
         lifecycle: {{preStop: {{exec: {{command: [sh, -c, 'echo $$ > /www/prestop; cat /proc/1/cmdline > /www/pid1']}}}}}}\n",
        www = www.display()
    );
    node.ok(&["run", "--detach", &node.file(&pod)]);
    let status = |p: &Value, key: &str| p["status"]["containerStatuses"][0][key].clone();
    let events = || node.ok(&["describe", "pod", "probed"]);

    // Started once the port opens; not ready while /ready answers 404.
    let p = node.wait_for("probed", |p| status(p, "started") == true);
    assert_eq!(status(&p, "ready"), false, "{p:#}");
    let end = Instant::now() + Duration::from_secs(30);
    while !events().contains("Readiness probe failed: HTTP probe failed with statuscode: 404") {
        assert!(Instant::now() < end, "{}", events());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(node.pod("probed")["status"]["phase"], "Running");

    // Ready once it answers.
    fs::write(www.join("ready"), "ok").unwrap();
    let p = node.wait_for("probed", |p| status(p, "ready") == true);
    let ready = p["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!(ready["status"], "True");
    assert_eq!(status(&p, "restartCount"), 0);

    // The liveness check fails twice: killed and started again.
    fs::remove_file(www.join("alive")).unwrap();
    let p = node.wait_for("probed", |p| status(p, "restartCount").as_i64() >= Some(1));
    fs::write(www.join("alive"), "").unwrap();
    let described = events();
    assert!(described.contains("Liveness probe failed: command exited with code 1"), "{described}");
    assert!(described.contains("Container web failed liveness probe, will be restarted"), "{described}");
    assert!(p["status"]["containerStatuses"][0]["lastState"]["terminated"].is_object(), "{p:#}");
    node.wait_for("probed", |p| status(p, "ready") == true && status(p, "started") == true);

    // Delete: the hook runs in the container first (pid 1 there is httpd, still running).
    assert!(!www.join("prestop").exists());
    node.ok(&["delete", "pod", "probed"]);
    assert!(www.join("prestop").exists(), "the preStop hook did not run");
    let pid1 = fs::read_to_string(www.join("pid1")).unwrap();
    assert!(pid1.starts_with("httpd"), "{pid1:?}");
    node.assert_clean();
}

/// `nodectl exec` with `input` on its stdin.
fn exec_with(node: &Node, args: &[&str], input: &[u8]) -> Output {
    verb_with(node, "exec", args, input)
}

/// `nodectl VERB ARGS` with `input` on its stdin.
fn verb_with(node: &Node, verb: &str, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .arg("--root")
        .arg(node.root())
        .arg(verb)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn exec_runs_a_command_in_the_container_with_its_streams_a_terminal_and_its_exit_code() {
    let node = node();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: ex}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  \
               - {name: main, image: busybox, imagePullPolicy: Never, command: [sleep, '600'], \
               securityContext: {runAsUser: 1000}, env: [{name: GREETING, value: hi}]}\n  \
               - {name: side, image: busybox, imagePullPolicy: Never, command: [sleep, '600']}\n";
    node.ok(&["run", "--detach", &node.file(pod)]);
    node.wait_for("ex", |p| p["status"]["containerStatuses"][1]["ready"] == true);

    // Separate streams, the command's exit code, the container's user and environment.
    let out = exec_with(&node, &["ex", "--", "sh", "-c", "echo out $(id -u) $GREETING; echo err >&2; exit 3"], b"");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out 1000 hi\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // Our stdin with -i (and none without it); another container with -c.
    let out = exec_with(&node, &["-i", "ex", "-c", "side", "--", "sh", "-c", "cat; id -u"], b"piped\n");
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), "piped\n0\n"), "{out:?}");
    let out = exec_with(&node, &["ex", "--", "cat"], b"not passed\n");
    assert_eq!((out.status.code(), out.stdout.len()), (Some(0), 0), "{out:?}");

    // A terminal made in the container, with -t.
    let out = exec_with(&node, &["-i", "-t", "ex", "--", "sh"], b"tty; exit 4\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");

    // Usage, as kubectl top and Prometheus see it.
    let top = node.ok(&["top", "pods"]);
    let lines: Vec<&str> = top.lines().collect();
    assert_eq!(lines[0], "NAME   CPU(cores)   MEMORY(bytes)", "{top}");
    assert!(lines.len() == 2 && lines[1].starts_with("ex ") && lines[1].ends_with("Mi"), "{top}");
    let per_container = node.ok(&["top", "pods", "--containers"]);
    assert!(per_container.contains("ex    main") && per_container.contains("ex    side"), "{per_container}");
    let metrics = http_get(metrics_port(&node), "/metrics");
    for want in [
        "container_cpu_usage_seconds_total{namespace=\"default\",pod=\"ex\",container=\"main\"} ",
        "container_memory_working_set_bytes{namespace=\"default\",pod=\"ex\",container=\"side\"} ",
        "kube_pod_container_status_restarts_total{namespace=\"default\",pod=\"ex\",container=\"main\"} 0",
        "container_oom_events_total{namespace=\"default\",pod=\"ex\",container=\"main\"} 0",
        "nodectl_pods{phase=\"Running\"} 1",
        "process_resident_memory_bytes ",
        "process_open_fds ",
    ] {
        assert!(metrics.contains(want), "{want} not in {metrics}");
    }
    // Only /metrics there: the pods are reached through the root-only socket.
    assert!(http_get(metrics_port(&node), "/api/v1/pods").starts_with("HTTP/1.1 404"));

    // What does not exist is named.
    let out = exec_with(&node, &["ex", "-c", "nope", "--", "true"], b"");
    assert!(String::from_utf8_lossy(&out.stderr).contains("container nope is not valid for pod ex"), "{out:?}");
    let out = exec_with(&node, &["missing", "--", "true"], b"");
    assert!(String::from_utf8_lossy(&out.stderr).contains("pods \"missing\" not found"), "{out:?}");
    node.ok(&["delete", "pod", "ex"]);
    node.assert_clean();
}

/// A whole HTTP/1.1 answer from 127.0.0.1:port (metrics: the head is kept for 404s).
#[test]
fn attach_streams_a_containers_output_and_passes_our_input_to_its_stdin_or_terminal() {
    let node = node();
    // stdin with stdinOnce, no terminal: our input reaches the container, and its end
    // closes the container's stdin; its stdout and stderr come apart, as they were written.
    let once = node.file("apiVersion: v1\nkind: Pod\nmetadata: {name: once}\nspec:\n  restartPolicy: Never\n  containers: [{name: c, image: busybox, imagePullPolicy: Never, stdin: true, stdinOnce: true, command: [sh, -c, 'while read l; do echo \"got $l\"; echo \"err $l\" >&2; done; echo eof']}]\n");
    node.ok(&["run", "--detach", &once]);
    node.wait_for("once", |p| p["status"]["phase"] == "Running");
    let out = verb_with(&node, "attach", &["-i", "once"], b"a\nb\n");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got a\ngot b\neof\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err a\nerr b\n");
    node.wait_for("once", |p| p["status"]["phase"] == "Succeeded");
    // Its log has both streams (two pipes: their lines' order between them is not kept).
    let log = node.ok(&["logs", "once"]);
    for line in ["got a\n", "got b\n", "err a\n", "err b\n", "eof\n"] {
        assert!(log.contains(line), "{line:?} not in {log}");
    }

    // A terminal: a shell that reads our input from it, its output through it (and into
    // its log); the shell's exit ends the attach.
    let shell = node.file("apiVersion: v1\nkind: Pod\nmetadata: {name: shell}\nspec:\n  restartPolicy: Never\n  containers: [{name: c, image: busybox, imagePullPolicy: Never, stdin: true, tty: true, command: [sh]}]\n");
    node.ok(&["run", "--detach", &shell]);
    node.wait_for("shell", |p| p["status"]["phase"] == "Running");
    let out = verb_with(&node, "attach", &["-it", "shell"], b"echo hi-$((6*7)); tty\nexit 3\n");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(seen.contains("hi-42") && seen.contains("/dev/pts/0"), "{seen}");
    let p = node.wait_for("shell", |p| p["status"]["phase"] == "Failed");
    assert_eq!(p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3);
    assert!(node.ok(&["logs", "shell"]).contains("hi-42"));

    // A container without stdin or terminal: its output only, and kubectl's warning.
    let plain = node.file("apiVersion: v1\nkind: Pod\nmetadata: {name: plain}\nspec:\n  containers: [{name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}]\n");
    node.ok(&["run", "--detach", &plain]);
    node.wait_for("plain", |p| p["status"]["phase"] == "Running");
    let mut attached = Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .arg("--root")
        .arg(node.root())
        .args(["attach", "-t", "plain"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once it warned, it is attached; it ends with the container.
    use std::io::BufRead;
    let mut stderr = std::io::BufReader::new(attached.stderr.take().unwrap());
    let mut warning = String::new();
    stderr.read_line(&mut warning).unwrap();
    assert!(warning.starts_with("Unable to use a TTY - container c did not allocate one"), "{warning:?}");
    node.ok(&["delete", "pod", "plain", "--grace-period", "0"]);
    let out = attached.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // Attaching to what does not run is refused.
    let out = verb_with(&node, "attach", &["once"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("container not found"), "{out:?}");

    for pod in ["once", "shell"] {
        node.ok(&["delete", "pod", pod]);
    }
    let end = Instant::now() + Duration::from_secs(30);
    while !node.ok(&["get", "pods", "-o", "name"]).is_empty() {
        assert!(Instant::now() < end, "pods not deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
    node.assert_clean();
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The daemon's own open descriptors and resident memory, from its /metrics.
fn daemon_usage(node: &Node) -> (u64, u64) {
    let m = http_get(metrics_port(node), "/metrics");
    let value = |name: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<u64>().ok()))
            .unwrap_or_else(|| panic!("{name} not in {m}"))
    };
    (value("process_open_fds "), value("process_resident_memory_bytes "))
}

/// Cgroups under ours whose names start with `prefix`, at any depth.
fn cgroups_named(prefix: &str) -> Vec<PathBuf> {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let pids = own.lines().find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_string())).unwrap_or_default();
    let mut found = Vec::new();
    let mut todo = vec![PathBuf::from(format!("/sys/fs/cgroup/pids{pids}"))];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    found.push(e.path());
                }
                todo.push(e.path());
            }
        }
    }
    found
}

/// Many pods made and removed through the daemon, in rounds: every pod runs, every pod
/// goes, nothing of them is left, and the daemon's descriptors and memory do not grow from
/// one round to the next. `make soak` runs 1,000 (NODECTL_SOAK_PODS); the suite 100.
#[test]
fn many_pods_come_and_go_leaving_nothing_and_the_daemon_does_not_grow() {
    let total: usize = std::env::var("NODECTL_SOAK_PODS").ok().and_then(|n| n.parse().ok()).unwrap_or(100);
    const ROUND: usize = 50;
    let node = node();
    let prefix = format!("soak{}x", std::process::id() % 100_000);
    let spec = |i: usize| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {prefix}-{i}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  \
             containers:\n  - {{name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}}\n"
        )
    };
    let mut after_round = Vec::new();
    let mut made = 0;
    while made < total {
        let n = ROUND.min(total - made);
        let names: Vec<String> = (made..made + n).map(|i| format!("{prefix}-{i}")).collect();
        let files: Vec<String> = (made..made + n).map(|i| node.file(&spec(i))).collect();
        // Sent from several clients at once, as a node's users would.
        std::thread::scope(|s| {
            let node = &node;
            for chunk in files.chunks(10) {
                s.spawn(move || {
                    for f in chunk {
                        node.ok(&["run", "--detach", f]);
                    }
                });
            }
        });
        let end = Instant::now() + Duration::from_secs(300);
        loop {
            let list: Value = serde_json::from_str(&node.ok(&["get", "pods", "-o", "json"])).unwrap();
            let running = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["status"]["containerStatuses"][0]["ready"] == true)
                .count();
            if running == n {
                break;
            }
            assert!(Instant::now() < end, "{running} of {n} pods running");
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::scope(|s| {
            let node = &node;
            for chunk in names.chunks(10) {
                s.spawn(move || {
                    for name in chunk {
                        node.ok(&["delete", "pod", name]);
                    }
                });
            }
        });
        for f in files {
            let _ = fs::remove_file(f);
        }
        made += n;
        after_round.push(daemon_usage(&node));
        eprintln!("soak: {made} pods made and removed; daemon fds and RSS {:?}", after_round.last());
    }
    node.assert_clean();
    let left = cgroups_named(&format!("nodectl-pod-{prefix}"));
    assert!(left.is_empty(), "cgroups left: {left:?}");
    let monitors = Command::new("pgrep").args(["-f", &format!("{} monitor", node.root().display())]).output().unwrap();
    assert!(String::from_utf8_lossy(&monitors.stdout).trim().is_empty(), "monitors left");
    // From the first round on, what the daemon holds comes back down when its pods go.
    let (first, last) = (after_round[0], after_round[after_round.len() - 1]);
    assert!(last.0 <= first.0, "the daemon's descriptors grew: {after_round:?}");
    assert!(last.1 <= first.1 + (8 << 20), "the daemon's memory grew: {after_round:?}");
}
