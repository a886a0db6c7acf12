//! `nodectl run`: Pod manifests run for real, as root, from the busybox test image, each
//! test with its own state root, bridge and pod CIDR, each checking that the pod left
//! nothing behind.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A state root with the busybox image, and a bridge and CIDR of the test's own.
struct PodEnv {
    dir: tempfile::TempDir,
    bridge: String,
    cidr: String,
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl PodEnv {
    fn new() -> PodEnv {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let dir = tempfile::tempdir().unwrap();
        common::ok(
            dir.path(),
            &["image", "import", common::images().join("busybox").to_str().unwrap(), "--name", "busybox:latest"],
        );
        PodEnv {
            dir,
            bridge: format!("ndp{}x{n}", pid % 100_000),
            cidr: format!("10.{}.{}.0/24", 100 + pid % 100, 10 + n),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, yaml: &str) -> PathBuf {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let p = self.root().join(format!("pod-{n}.yaml"));
        fs::write(&p, yaml).unwrap();
        p
    }

    fn command(&self, yaml: &str) -> Command {
        self.command_with(Path::new(env!("CARGO_BIN_EXE_nodectl")), yaml)
    }

    /// `nodectl run` of the pod with the binary at `bin`.
    fn command_with(&self, bin: &Path, yaml: &str) -> Command {
        let mut c = Command::new(bin);
        c.arg("--root").arg(self.root()).args(["run", "--restart-backoff", "0.1"]).arg(self.file(yaml));
        c.env("NODECTL_BRIDGE", &self.bridge).env("NODECTL_POD_CIDR", &self.cidr);
        c
    }

    /// Runs a pod to its end and checks it left nothing.
    fn run(&self, yaml: &str) -> Ran {
        let ran = self.run_beside(yaml);
        self.assert_clean();
        ran
    }

    /// Runs a pod to its end with more `nodectl run` flags, and checks it left nothing.
    fn run_with(&self, yaml: &str, flags: &[&str]) -> Ran {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nodectl"));
        c.arg("--root").arg(self.root()).args(["run", "--restart-backoff", "0.1"]).args(flags).arg(self.file(yaml));
        c.env("NODECTL_BRIDGE", &self.bridge).env("NODECTL_POD_CIDR", &self.cidr);
        let ran = Self::ran(c.stdin(Stdio::null()).output().unwrap());
        self.assert_clean();
        ran
    }

    /// Runs a pod to its end while others of the env still run.
    fn run_beside(&self, yaml: &str) -> Ran {
        Self::ran(self.command(yaml).stdin(Stdio::null()).output().unwrap())
    }

    fn ran(out: std::process::Output) -> Ran {
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn spawn(&self, yaml: &str) -> Running {
        Running(self.command(yaml).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
    }

    /// What a pod may leave when it is gone: nothing under pods/, no mount below the
    /// root, no veth on the bridge (cgroups are counted by the suite's leak check).
    fn assert_clean(&self) {
        let pods: Vec<_> = fs::read_dir(self.root().join("pods"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(pods.is_empty(), "pods left: {pods:?}");
        let root = self.root().to_string_lossy().into_owned();
        let mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&root))
            .map(String::from)
            .collect();
        assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
        let pool = self.root().join("network").join(&self.bridge).join("ipam.json");
        if let Ok(text) = fs::read_to_string(&pool) {
            let pods = &serde_json::from_str::<serde_json::Value>(&text).unwrap()["pods"];
            assert!(pods.as_object().is_none_or(|p| p.is_empty()), "addresses still allocated: {pods}");
        }
        let rules =
            Command::new("nft").args(["list", "table", "ip", &format!("nodectl_{}", self.bridge)]).output().unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout);
        assert!(!rules.contains(" dnat to "), "hostPort rules left: {rules}");
        let links = Command::new("ip").args(["-o", "link", "show", "master", &self.bridge]).output().unwrap();
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(links.trim().is_empty(), "veths left on {}: {links}", self.bridge);
    }
}

/// A `nodectl run` in the background; killed if the test ends (or fails) with it running,
/// and the PodEnv's gc then removes what it left.
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Drop for PodEnv {
    fn drop(&mut self) {
        let _ = common::nodectl(self.root(), &["gc"]);
        if let Ok(cfg) = nodectl::network::NetConfig::new(&self.bridge, &self.cidr, self.root().join("network")) {
            let _ = nodectl::network::remove_bridge(&cfg);
        }
    }
}

fn pod(name: &str, body: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{body}")
}

#[test]
fn a_pod_runs_init_containers_in_order_then_its_containers_and_gives_their_output() {
    let env = PodEnv::new();
    let r = env.run(&pod(
        "order",
        r#"  restartPolicy: Never
  initContainers:
  - {name: first, image: busybox, imagePullPolicy: Never, command: [sh, -c, "echo first > /shared/log"], volumeMounts: [{name: s, mountPath: /shared}]}
  - {name: second, image: busybox, imagePullPolicy: Never, command: [sh, -c, "echo second >> /shared/log"], volumeMounts: [{name: s, mountPath: /shared}]}
  containers:
  - {name: main, image: busybox, imagePullPolicy: Never, command: [sh, -c, "cat /shared/log; printf 'no newline'"], volumeMounts: [{name: s, mountPath: /shared}]}
  volumes: [{name: s, emptyDir: {}}]
"#,
    ));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "[main] first\n[main] second\n[main] no newline\n", "{}", r.stderr);
}

#[test]
fn the_exit_code_is_the_first_failing_containers() {
    let env = PodEnv::new();
    let r = env.run(&pod(
        "codes",
        "  restartPolicy: Never\n  containers:\n  - {name: ok, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'sleep 0.5; exit 0']}\n  - {name: bad, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'echo oops >&2; exit 7']}\n",
    ));
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert!(r.stderr.contains("[bad] oops"), "{}", r.stderr);
    assert!(r.stderr.contains("container bad exited with code 7"), "{}", r.stderr);

    // A single container: its output as it is, no prefix.
    let r = env.run(&pod("single", "  restartPolicy: Never\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [echo, plain]}\n"));
    assert_eq!((r.code, r.stdout.as_str()), (0, "plain\n"), "{}", r.stderr);
}

#[test]
fn on_failure_restarts_with_backoff_until_the_container_succeeds() {
    let env = PodEnv::new();
    let r = env.run(&pod(
        "retry",
        r#"  restartPolicy: OnFailure
  containers:
  - name: flaky
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'n=$(cat /v/n 2>/dev/null || echo 0); echo $((n+1)) > /v/n; echo attempt $n; [ $n -ge 2 ]']
    volumeMounts: [{name: v, mountPath: /v}]
  volumes: [{name: v, emptyDir: {}}]
"#,
    ));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "attempt 0\nattempt 1\nattempt 2\n");
    assert!(r.stderr.contains("restarting container flaky in 100ms (restart 1"), "{}", r.stderr);
    assert!(r.stderr.contains("restarting container flaky in 200ms (restart 2"), "{}", r.stderr);
}

#[test]
fn env_comes_from_configmaps_secrets_and_the_pods_own_fields() {
    let env = PodEnv::new();
    let r = env.run(&format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: conf}}\ndata: {{mode: fast, level: \"3\"}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\ndata: {{password: aHVudGVyMg==}}\n",
        pod(
            "envpod",
            r#"  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'echo "$MODE $PASS $POD $NS $IP_OK $CFG_level $COMBINED $UNDEF"']
    env:
    - {name: MODE, valueFrom: {configMapKeyRef: {name: conf, key: mode}}}
    - {name: PASS, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: IP_OK, value: "ip=$(IP)"}
    - {name: COMBINED, value: "$(MODE)/$(POD)"}
    - {name: UNDEF, value: "$(MISSING)"}
    envFrom: [{configMapRef: {name: conf}, prefix: CFG_}]
"#,
        )
    ));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let words: Vec<&str> = r.stdout.split_whitespace().collect();
    assert_eq!(words[..4], ["fast", "hunter2", "envpod", "default"], "{}", r.stdout);
    let ip: Ipv4Addr = words[4].strip_prefix("ip=").unwrap().parse().unwrap();
    let net: Ipv4Addr = env.cidr.split('/').next().unwrap().parse().unwrap();
    assert_eq!(ip.octets()[..3], net.octets()[..3], "the pod's address is in the pod CIDR");
    assert_eq!(words[5..], ["3", "fast/envpod", "$(MISSING)"]);
}

#[test]
fn volumes_have_their_contents_modes_and_options() {
    let env = PodEnv::new();
    let host_dir = env.root().join("host-data");
    fs::create_dir(&host_dir).unwrap();
    fs::write(host_dir.join("from-host"), "hello host\n").unwrap();
    let r = env.run(&format!(
        r#"{}---
apiVersion: v1
kind: ConfigMap
metadata: {{name: cm}}
data: {{app.conf: "key=value\n", other: x}}
---
apiVersion: v1
kind: Secret
metadata: {{name: sec}}
stringData: {{token: s3cret, cert: c}}
"#,
        pod(
            "vols",
            &format!(
                r#"  restartPolicy: Never
  volumes:
  - {{name: conf, configMap: {{name: cm}}}}
  - {{name: conf-items, configMap: {{name: cm, items: [{{key: app.conf, path: sub/app.conf, mode: 0600}}]}}}}
  - {{name: secret, secret: {{secretName: sec}}}}
  - {{name: secret-mode, secret: {{secretName: sec, defaultMode: 0440}}}}
  - {{name: mem, emptyDir: {{medium: Memory, sizeLimit: 4Mi}}}}
  - {{name: disk, emptyDir: {{}}}}
  - {{name: host, hostPath: {{path: {host}, type: Directory}}}}
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command:
    - sh
    - -c
    - |
      stat -L -c '%a %n' /conf/app.conf /conf/other /items/sub/app.conf /secret/token /secret-mode/token
      cat /conf/app.conf /items/sub/app.conf /secret/token; echo
      grep ' /mem ' /proc/mounts | cut -d' ' -f3,4 | grep -o 'tmpfs.*size=4096k'
      echo data > /disk/sub/file && echo disk ok
      cat /host/from-host
      touch /host/x 2>/dev/null && echo host writable || echo host read-only
      ls /sub-only
      touch /conf/new 2>/dev/null && echo conf writable || echo conf read-only
      echo s > /secret/token 2>/dev/null && echo secret writable || echo secret read-only
      readlink /conf/app.conf; readlink /conf/..data | cut -c1-4
    volumeMounts:
    - {{name: conf, mountPath: /conf}}
    - {{name: conf-items, mountPath: /items}}
    - {{name: secret, mountPath: /secret}}
    - {{name: secret-mode, mountPath: /secret-mode}}
    - {{name: mem, mountPath: /mem}}
    - {{name: disk, mountPath: /disk}}
    - {{name: host, mountPath: /host, readOnly: true}}
    - {{name: disk, mountPath: /sub-only, subPath: sub}}
"#,
                host = host_dir.display()
            )
        )
    ));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout,
        "644 /conf/app.conf\n644 /conf/other\n600 /items/sub/app.conf\n644 /secret/token\n440 /secret-mode/token\n\
         key=value\nkey=value\ns3cret\ntmpfs rw,nosuid,nodev,relatime,size=4096k\ndisk ok\nhello host\nhost read-only\nfile\n\
         conf read-only\nsecret read-only\n..data/app.conf\n..20\n"
    );
    assert!(!host_dir.join("x").exists());
}

#[test]
fn downward_api_and_projected_volumes_show_the_pod_and_its_sources() {
    let env = PodEnv::new();
    let r = env.run(&format!(
        r#"{}---
apiVersion: v1
kind: ConfigMap
metadata: {{name: cm}}
data: {{ca.crt: "CA\n", other: x}}
---
apiVersion: v1
kind: Secret
metadata: {{name: sec}}
stringData: {{token: s3cret}}
"#,
        pod(
            "downward",
            r#"  restartPolicy: Never
  volumes:
  - name: info
    downwardAPI:
      items:
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: tier, fieldRef: {fieldPath: "metadata.labels['tier']"}}
      - {path: mem, resourceFieldRef: {containerName: c, resource: limits.memory, divisor: 1Mi}}
      - {path: cpu, resourceFieldRef: {containerName: c, resource: requests.cpu, divisor: 1m}}
  - name: all
    projected:
      defaultMode: 0440
      sources:
      - configMap: {name: cm, items: [{key: ca.crt, path: ca.crt}]}
      - secret: {name: sec}
      - downwardAPI: {items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    resources: {limits: {memory: 64Mi, cpu: 250m}}
    command:
    - sh
    - -c
    - |
      cat /info/name; echo; cat /info/labels; echo; cat /info/tier; echo; cat /info/mem; echo; cat /info/cpu; echo
      ls /all; cat /all/ca.crt /all/token; echo; cat /all/namespace; echo
      stat -L -c '%a' /all/token
      grep ' /all ' /proc/mounts | cut -d' ' -f3
      touch /all/x 2>/dev/null && echo writable || echo read-only
    volumeMounts:
    - {name: info, mountPath: /info}
    - {name: all, mountPath: /all}
"#,
        )
        .replace("  name: downward\n", "  name: downward\n  labels: {tier: web, app: x}\n")
    ));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout,
        "downward\napp=\"x\"\ntier=\"web\"\nweb\n64\n250\nca.crt\nnamespace\ntoken\nCA\ns3cret\ndefault\n440\ntmpfs\nread-only\n"
    );

    // A token needs a cluster: refused by name, nothing left.
    let r = env.run(&pod(
        "token",
        r#"  volumes:
  - name: t
    projected: {sources: [{serviceAccountToken: {path: token}}]}
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: ["true"], volumeMounts: [{name: t, mountPath: /t}]}
"#,
    ));
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("spec.volumes[0].projected.sources[0].serviceAccountToken"), "{}", r.stderr);
}

#[test]
fn a_sub_path_symlink_cannot_lead_out_of_its_volume() {
    // CVE-2017-1002101: an init container plants a symlink to / where a later container's
    // subPath points; the mount must stay inside the volume.
    let env = PodEnv::new();
    let r = env.run(&pod(
        "subpath",
        r#"  restartPolicy: Never
  volumes: [{name: v, emptyDir: {}}]
  initContainers:
  - {name: plant, image: busybox, imagePullPolicy: Never, command: [ln, -s, /, /v/escape], volumeMounts: [{name: v, mountPath: /v}]}
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'ls /mnt/etc/hostname 2>&1; ls -a /mnt | head -3'], volumeMounts: [{name: v, mountPath: /mnt, subPath: escape}]}
"#,
    ));
    // The symlink resolves inside the volume: / of the volume, where only `escape` is.
    assert!(!r.stdout.contains("/mnt/etc/hostname\n") || r.stdout.contains("No such file"), "{}", r.stdout);
    assert!(r.stdout.contains("escape"), "{}\n{}", r.stdout, r.stderr);
}

#[test]
fn security_context_sets_user_read_only_root_and_capabilities() {
    let env = PodEnv::new();
    let r = env.run(&pod(
        "sec",
        r#"  restartPolicy: Never
  securityContext: {runAsUser: 1234, runAsGroup: 5678}
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'id -u; id -g; touch /x 2>&1 | grep -o "Read-only file system"; grep NoNewPrivs /proc/self/status']
    securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}
  - name: caps
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'grep CapBnd /proc/self/status']
    securityContext: {capabilities: {drop: [ALL], add: [NET_ADMIN]}}
"#,
    ));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let of_c: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("[c] ")).collect();
    assert_eq!(of_c, ["[c] 1234", "[c] 5678", "[c] Read-only file system", "[c] NoNewPrivs:\t1"], "{}", r.stdout);
    // CAP_NET_ADMIN alone is bit 12.
    assert!(r.stdout.contains("[caps] CapBnd:\t0000000000001000"), "{}", r.stdout);

    let r = env.run(&pod("nonroot", "  restartPolicy: Never\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [id], securityContext: {runAsNonRoot: true}}\n"));
    assert_eq!(r.code, 128, "{}", r.stderr);
    assert!(r.stderr.contains("container has runAsNonRoot and image will run as root"), "{}", r.stderr);
}

#[test]
fn a_memory_limit_ends_in_oom_killed_and_137() {
    let env = PodEnv::new();
    let r = env.run(&pod(
        "oom",
        "  restartPolicy: Never\n  containers:\n  - name: hog\n    image: busybox\n    imagePullPolicy: Never\n    command: [sh, -c, 'a=$(yes | head -c 67108864); echo survived']\n    resources: {limits: {memory: 16Mi}}\n",
    ));
    assert_eq!(r.code, 137, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("container hog was killed by the OOM killer (OOMKilled)"), "{}", r.stderr);
    assert!(!r.stdout.contains("survived"));
}

#[test]
fn a_cpu_limit_of_200m_holds_a_busy_loop_near_a_fifth_of_a_core() {
    let env = PodEnv::new();
    // The loop runs 3 s of wall time; its CPU time reaches the shell as cutime + cstime
    // (fields 16 and 17 of /proc/PID/stat, in ticks of 1/100 s).
    let r = env.run(&pod(
        "cpu",
        "  restartPolicy: Never\n  containers:\n  - name: spin\n    image: busybox\n    imagePullPolicy: Never\n    command: [sh, -c, 'timeout 3 sh -c \"while :; do :; done\"; cut -d\" \" -f16,17 /proc/$$$$/stat']\n    resources: {limits: {cpu: 200m}, requests: {cpu: 200m}}\n",
    ));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ticks: u64 = r.stdout.split_whitespace().map(|t| t.parse::<u64>().unwrap()).sum();
    // 20% of 300 ticks is 60; unlimited it would be near 300. The quota caps it from
    // above; from below only other tests' load on the two cores can push it, so that
    // bound is loose.
    assert!((20..=75).contains(&ticks), "the loop used {ticks} ticks of 300");
}

#[test]
fn two_containers_of_a_pod_talk_over_localhost_and_share_uts_and_ipc() {
    let env = PodEnv::new();
    let r = env.run(&pod(
        "pair",
        r#"  restartPolicy: Never
  hostname: shared-name
  containers:
  - {name: server, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'echo hello-from-server > /tmp/msg; timeout 10 nc -l -p 7070 < /tmp/msg; hostname']}
  - {name: client, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'for i in $(seq 50); do nc 127.0.0.1 7070 2>/dev/null && break; sleep 0.1; done; hostname; grep shared-name /etc/hosts | wc -l']}
"#,
    ));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("[client] hello-from-server\n"), "{}", r.stdout);
    assert!(r.stdout.contains("[server] shared-name\n") && r.stdout.contains("[client] shared-name\n"), "{}", r.stdout);
    assert!(r.stdout.contains("[client] 1\n"), "/etc/hosts maps the hostname: {}", r.stdout);
}

/// Reads the child's stdout until a line satisfies `want`; returns that line.
fn wait_line(child: &mut Running, want: impl Fn(&str) -> bool) -> String {
    let out = child.stdout.take().unwrap();
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("the pod ended before printing the line: {err}");
        }
        if want(&line) {
            // Keep draining in the background so the pod never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
            return line.trim().to_string();
        }
    }
}

fn stop(child: &mut Running, sig: i32) -> (i32, String) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, sig) };
    let status = child.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.code().unwrap_or(-1), err)
}

#[test]
fn two_pods_reach_each_other_by_ip_over_the_bridge() {
    let env = PodEnv::new();
    let mut server = env.spawn(&pod(
        "server",
        r#"  restartPolicy: Never
  containers:
  - name: s
    image: busybox
    imagePullPolicy: Never
    env: [{name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]
    command: [sh, -c, 'trap "exit 0" TERM; echo "ip $IP"; while :; do echo pong | nc -l -p 8080; done & wait']
"#,
    ));
    let line = wait_line(&mut server, |l| l.starts_with("ip "));
    let ip = line.strip_prefix("ip ").unwrap().to_string();
    let r = env.run_beside(&pod("client", &format!("  restartPolicy: Never\n  containers:\n  - {{name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'for i in $(seq 50); do nc -w 2 {ip} 8080 </dev/null 2>/dev/null && exit 0; sleep 0.1; done; exit 1']}}\n")));
    let (code, err) = stop(&mut server, libc::SIGTERM);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "pong\n");
    assert_eq!(code, 0, "{err}");
    env.assert_clean();
}

#[test]
fn a_host_port_is_reached_from_127_0_0_1_and_from_the_hosts_addresses() {
    let env = PodEnv::new();
    let port = common::server::free_port();
    let mut p = env.spawn(&pod(
        "web",
        &format!(
            r#"  restartPolicy: Never
  containers:
  - name: web
    image: busybox
    imagePullPolicy: Never
    ports: [{{containerPort: 80, hostPort: {port}}}]
    command: [sh, -c, 'mkdir /www; echo served > /www/index.html; echo ready; exec httpd -f -p 80 -h /www']
"#
        ),
    ));
    wait_line(&mut p, |l| l.contains("ready"));
    let get = |addr: Ipv4Addr| -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = (|| -> std::io::Result<String> {
                let mut s = TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
                let mut body = String::new();
                s.read_to_string(&mut body)?;
                Ok(body)
            })();
            match attempt {
                Ok(b) if b.contains("served") => return b,
                _ if Instant::now() > end => panic!("{addr}:{port} never answered: {attempt:?}"),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    };
    get(Ipv4Addr::LOCALHOST);
    // The bridge's own address is one of the host's.
    let gateway: Ipv4Addr = {
        let net: Ipv4Addr = env.cidr.split('/').next().unwrap().parse().unwrap();
        Ipv4Addr::from(u32::from(net) + 1)
    };
    get(gateway);
    let (code, err) = stop(&mut p, libc::SIGTERM);
    // httpd as PID 1 has no SIGTERM handler, so the kernel ignores it: killed after the grace.
    assert!(code == 0 || code == 137 || code == 143, "{code}: {err}");
    env.assert_clean();
    assert!(
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_millis(500)).is_err(),
        "the port still answers after the pod"
    );
}

#[test]
fn sigterm_stops_the_pod_gracefully_whether_handled_or_ignored() {
    let env = PodEnv::new();
    let mut handled = env.spawn(&pod(
        "handled",
        "  restartPolicy: Always\n  terminationGracePeriodSeconds: 30\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'trap \"echo got TERM; exit 0\" TERM; echo up; while :; do sleep 0.1; done']}\n",
    ));
    wait_line(&mut handled, |l| l.contains("up"));
    let (code, err) = stop(&mut handled, libc::SIGTERM);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("SIGTERM: stopping the pod"), "{err}");
    env.assert_clean();

    let mut ignored = env.spawn(&pod(
        "ignored",
        "  restartPolicy: Always\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'trap \"\" TERM; echo up; while :; do sleep 0.1; done']}\n",
    ));
    wait_line(&mut ignored, |l| l.contains("up"));
    let (code, err) = stop(&mut ignored, libc::SIGINT);
    assert_eq!(code, 137, "killed after the grace period: {err}");
    env.assert_clean();
}

#[test]
fn a_sigkilled_nodectl_run_is_cleaned_up_by_gc() {
    let env = PodEnv::new();
    let mut p = env.spawn(&pod(
        "victim",
        "  restartPolicy: Always\n  volumes: [{name: m, emptyDir: {medium: Memory}}]\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'echo up; sleep 1000'], volumeMounts: [{name: m, mountPath: /m}], ports: [{containerPort: 80, hostPort: 0}]}\n",
    ));
    wait_line(&mut p, |l| l.contains("up"));
    p.0.kill().unwrap();
    p.0.wait().unwrap();
    assert_eq!(fs::read_dir(env.root().join("pods")).unwrap().count(), 1, "the pod's remains are there");
    let out = common::ok(env.root(), &["gc"]);
    assert!(out.starts_with("removed pod victim-"), "{out}");
    env.assert_clean();
    // The container itself is gone too.
    let ps = Command::new("pgrep").args(["-f", "sleep 1000"]).output().unwrap();
    assert!(String::from_utf8_lossy(&ps.stdout).trim().is_empty());
}

#[test]
fn bad_manifests_and_missing_parts_are_clear_errors_that_leave_nothing() {
    let env = PodEnv::new();
    let c = "  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [\"true\"]}\n";
    let cases: Vec<(&str, String, &str)> = vec![
        ("not yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n".into(), "document 1"),
        ("no kind", "apiVersion: v1\nmetadata: {name: x}\n".into(), "kind: Required value"),
        (
            "a Deployment",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n".into(),
            "apiVersion: Unsupported value",
        ),
        ("unknown field", pod("x", &format!("  bogus: 1\n{c}")), "unknown field \"spec.bogus\""),
        ("bad name", pod("Bad_Name", c), "metadata.name"),
        ("no containers", pod("x", "  restartPolicy: Never\n"), "spec.containers: Required value"),
        (
            "bad restartPolicy",
            pod("x", &format!("  restartPolicy: Sometimes\n{c}")),
            "spec.restartPolicy: Unsupported value: \"Sometimes\"",
        ),
        (
            "bad memory",
            pod("x", "  containers:\n  - {name: c, image: busybox, resources: {limits: {memory: lots}}}\n"),
            "resources.limits",
        ),
        (
            "duplicate container",
            pod("x", "  containers:\n  - {name: c, image: busybox}\n  - {name: c, image: busybox}\n"),
            "Duplicate value: \"c\"",
        ),
        (
            "unsupported volume",
            pod("x", &format!("  volumes: [{{name: v, nfs: {{server: s, path: /}}}}]\n{c}")),
            "spec.volumes[0].nfs",
        ),
        (
            "missing volume",
            pod("x", "  containers:\n  - {name: c, image: busybox, volumeMounts: [{name: nope, mountPath: /x}]}\n"),
            "volumeMounts[0].name: Not found: \"nope\"",
        ),
        (
            "bad port",
            pod("x", "  containers:\n  - {name: c, image: busybox, ports: [{containerPort: 70000}]}\n"),
            "containerPort",
        ),
        (
            "relative hostPath",
            pod("x", &format!("  volumes: [{{name: v, hostPath: {{path: rel}}}}]\n{c}")),
            "hostPath.path",
        ),
        (
            "missing configmap",
            pod(
                "x",
                "  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [\"true\"], env: [{name: A, valueFrom: {configMapKeyRef: {name: nope, key: k}}}]}\n",
            ),
            "ConfigMap \"nope\" is not in the file",
        ),
        (
            "env name with =",
            pod("x", "  containers:\n  - {name: c, image: busybox, env: [{name: \"A=B\", value: v}]}\n"),
            "env[0].name: Invalid value: \"A=B\": a valid environment variable name",
        ),
        (
            "configmap key with /",
            format!(
                "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm}}\ndata: {{\"a/b\": x}}\n",
                pod("x", c)
            ),
            "ConfigMap \"cm\": data[a/b]: Invalid value: \"a/b\": a valid config key",
        ),
        (
            "image not in store",
            pod("x", "  containers:\n  - {name: c, image: not-here:v1, imagePullPolicy: Never}\n"),
            "image \"not-here:v1\" is not in the store and imagePullPolicy is Never",
        ),
        (
            "unreachable registry",
            pod("x", "  containers:\n  - {name: c, image: 127.0.0.1:1/nothing:v1}\n"),
            "is not in the store, and pulling it failed",
        ),
        (
            "hostPath type",
            pod(
                "x",
                &format!("  volumes: [{{name: v, hostPath: {{path: /nonexistent-nodectl, type: Directory}}}}]\n{c}"),
            ),
            "hostPath type check failed",
        ),
        ("two pods", format!("{}---\n{}", pod("a", c), pod("b", c)), "2 Pods in one file"),
    ];
    assert!(cases.len() >= 15);
    for (what, yaml, want) in &cases {
        let r = env.run(yaml);
        assert_ne!(r.code, 0, "{what}: should fail");
        assert!(r.stderr.contains(want), "{what}: want {want:?} in:\n{}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{what}: {}", r.stderr);
    }
}

/// CVE-2019-5736. A container whose command is /proc/self/exe runs the binary its init was
/// forked from, as its PID 1, with arguments the pod chose: before the fix that was the
/// host's nodectl. (It needs glibc in the container: an image with glibc would bring it;
/// here the host's libraries are mounted read-only.) Its `runtime delete` of a record the
/// pod wrote runs the record's poststop hook as nodectl's child, which tries to chmod,
/// chown, truncate and append to /proc/PID/exe of every process it can see, nodectl's
/// among them, and its own /proc/self/exe. The pod is run by a copy of the binary, so
/// that a failure damages nothing else.
#[test]
fn a_pod_cannot_chmod_chown_or_write_the_host_binary_through_proc_exe() {
    use sha2::Digest;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = PodEnv::new();
    let bin = env.root().join("bin/nodectl");
    fs::create_dir(bin.parent().unwrap()).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_nodectl"), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let snapshot = || {
        let m = fs::metadata(&bin).unwrap();
        (sha2::Sha256::digest(fs::read(&bin).unwrap()), m.mode(), m.uid(), m.gid())
    };
    let before = snapshot();

    let work = env.root().join("attack");
    fs::create_dir_all(work.join("root/runtime/x")).unwrap();
    let record = serde_json::json!({
        "ociVersion": "1.2.0", "id": "x", "pid": 0, "pidStartTime": 0, "bundle": "/", "rootfs": "/",
        "created": "", "annotations": {}, "cgroup": "x", "cgroupParent": null,
        "hooks": {"poststart": [], "poststop": [
            {"path": "/bin/sh", "args": ["sh", "/work/attack.sh"], "env": ["PATH=/bin:/sbin:/usr/bin:/usr/sbin"], "timeout": 30}
        ]}
    });
    fs::write(work.join("root/runtime/x/state.json"), record.to_string()).unwrap();
    fs::write(
        work.join("attack.sh"),
        r#"exec >> /work/report 2>&1
echo "hook of $PPID: $(readlink /proc/$PPID/exe)"
for t in /proc/self/exe /proc/[0-9]*/exe; do
  [ -e "$t" ] || continue
  echo "target $t"
  # Each in a subshell: a failed redirection ends a non-interactive shell.
  (chmod 777 "$t"); (chown 65534:65534 "$t"); (truncate -s 0 "$t"); (: > "$t"); (echo pwned >> "$t")
done
echo finished
"#,
    )
    .unwrap();
    let yaml = pod(
        "exe",
        &format!(
            r#"  restartPolicy: Never
  volumes:
  - {{name: work, hostPath: {{path: {work}, type: Directory}}}}
  - {{name: lib64, hostPath: {{path: {lib64}, type: Directory}}}}
  - {{name: libs, hostPath: {{path: {libs}, type: Directory}}}}
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [/proc/self/exe, --root, /work/root, runtime, delete, x]
    volumeMounts:
    - {{name: work, mountPath: /work}}
    - {{name: lib64, mountPath: /lib64, readOnly: true}}
    - {{name: libs, mountPath: /lib/x86_64-linux-gnu, readOnly: true}}
"#,
            work = work.display(),
            // Their real paths: /lib and /lib64 are symlinks into /usr on merged-/usr hosts.
            lib64 = fs::canonicalize("/lib64").unwrap().display(),
            libs = fs::canonicalize("/lib/x86_64-linux-gnu").unwrap().display(),
        ),
    );
    let out = env.command_with(&bin, &yaml).stdin(Stdio::null()).output().unwrap();
    let report = fs::read_to_string(work.join("report")).unwrap_or_default();
    let after = snapshot();
    let ctx = format!(
        "exit {:?}\nstdout: {}\nstderr: {}\nreport:\n{report}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The attack ran, from a child of nodectl (PID 1 of the container), to its end.
    assert!(report.contains("hook of 1: ") && report.contains("target /proc/1/exe\n"), "{ctx}");
    assert!(report.contains("finished"), "{ctx}");
    assert_eq!(after.1, before.1, "mode changed: {:o}\n{ctx}", after.1);
    assert_eq!((after.2, after.3), (before.2, before.3), "owner changed\n{ctx}");
    assert!(after.0 == before.0, "contents changed\n{ctx}");
    // Refused by the read-only mount the binary runs from, not by luck.
    assert!(report.contains("Read-only file system"), "{ctx}");
    env.assert_clean();
}

/// The bridge's MAC address, as the host sees it.
fn mac_of(path: &Path) -> [u8; 6] {
    let text = fs::read_to_string(path).unwrap();
    let mut mac = [0u8; 6];
    for (i, b) in text.trim().split(':').enumerate() {
        mac[i] = u8::from_str_radix(b, 16).unwrap();
    }
    mac
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame holding a TCP SYN from `src` to `dst`.
fn syn_frame(dst_mac: [u8; 6], src_mac: [u8; 6], src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&src.1.to_be_bytes());
    tcp.extend_from_slice(&dst.1.to_be_bytes());
    tcp.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // seq
    tcp.extend_from_slice(&0u32.to_be_bytes()); // ack
    tcp.extend_from_slice(&[5 << 4, 0x02]); // 20-byte header; SYN
    tcp.extend_from_slice(&65535u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.0.octets());
    pseudo.extend_from_slice(&dst.0.octets());
    pseudo.extend_from_slice(&[0, 6, 0, tcp.len() as u8]);
    pseudo.extend_from_slice(&tcp);
    let c = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, (20 + tcp.len()) as u8, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src.0.octets());
    ip.extend_from_slice(&dst.0.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut frame = Vec::new();
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&src_mac);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&tcp);
    frame
}

/// From inside the network namespace `netns` (on a thread of its own), sends SYNs out of
/// eth0 to each of `targets` (by way of the MAC `gw_mac`) and reports, for each, whether
/// any TCP segment came back from it.
fn raw_syns_answered(netns: &Path, gw_mac: [u8; 6], src: Ipv4Addr, targets: Vec<(Ipv4Addr, u16)>) -> Vec<bool> {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let ns = fs::File::open(&netns).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let src_mac = {
            // SAFETY: a plain socket(2) call; the fd is closed below.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
            // SAFETY: ifreq is plain data; all-zero is valid.
            let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
            for (i, b) in b"eth0".iter().enumerate() {
                ifr.ifr_name[i] = *b as libc::c_char;
            }
            // SAFETY: SIOCGIFHWADDR fills the ifreq we pass.
            assert_eq!(unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut ifr) }, 0);
            // SAFETY: our own fd.
            unsafe { libc::close(fd) };
            // SAFETY: SIOCGIFHWADDR set the hwaddr member of the union.
            let data = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
            let mut m = [0u8; 6];
            for i in 0..6 {
                m[i] = data[i] as u8;
            }
            m
        };
        // SAFETY: a plain socket(2) call; the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32) };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: a NUL-terminated name.
        sll.sll_ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) } as i32;
        assert!(sll.sll_ifindex > 0);
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: sll is a valid sockaddr_ll of the length we pass.
        assert_eq!(unsafe { libc::bind(fd, &sll as *const _ as *const libc::sockaddr, len) }, 0);
        let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
        // SAFETY: SO_RCVTIMEO reads one timeval.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        let mut answered = vec![false; targets.len()];
        for round in 0..10u16 {
            if answered.iter().all(|a| *a) {
                break;
            }
            for (i, t) in targets.iter().enumerate() {
                let frame = syn_frame(gw_mac, src_mac, (src, 40000 + i as u16 * 100 + round), *t);
                // SAFETY: frame is a valid buffer; sll says where it goes.
                unsafe {
                    libc::sendto(
                        fd,
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        &sll as *const _ as *const libc::sockaddr,
                        len,
                    )
                };
            }
            let end = Instant::now() + Duration::from_millis(300);
            let mut buf = [0u8; 2048];
            while Instant::now() < end {
                // SAFETY: buf is a valid, writable buffer of its length.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 34 + 20 || buf[12..14] != [0x08, 0x00] || buf[23] != 6 {
                    continue;
                }
                let ihl = usize::from(buf[14] & 0x0f) * 4;
                let l4 = 14 + ihl;
                let from = Ipv4Addr::new(buf[26], buf[27], buf[28], buf[29]);
                let sport = u16::from_be_bytes([buf[l4], buf[l4 + 1]]);
                let dport = u16::from_be_bytes([buf[l4 + 2], buf[l4 + 3]]);
                for (i, t) in targets.iter().enumerate() {
                    if (from, sport) == *t && (40000 + i as u16 * 100..40000 + i as u16 * 100 + 10).contains(&dport) {
                        answered[i] = true;
                    }
                }
            }
        }
        // SAFETY: our own fd.
        unsafe { libc::close(fd) };
        answered
    })
    .join()
    .unwrap()
}

/// CVE-2020-8558: route_localnet, which hostPorts from 127.0.0.1 need on the bridge, let a
/// pod with CAP_NET_RAW reach services the host binds to 127.0.0.1 alone. Raw SYNs from
/// the pod's eth0, sent to the bridge's MAC: the one to the host's own address on the
/// bridge is answered (a reset, as nothing listens there), which shows the path works; the
/// one to 127.0.0.1, where the test listens, must not be.
#[test]
fn a_pod_cannot_reach_what_the_host_serves_on_127_0_0_1_only() {
    let env = PodEnv::new();
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let host_port = common::server::free_port();
    let mut p = env.spawn(&pod(
        "raw",
        &format!(
            r#"  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    env: [{{name: IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}]
    ports: [{{containerPort: 80, hostPort: {host_port}}}]
    # Not `sleep 1000`: a_sigkilled_nodectl_run_is_cleaned_up_by_gc looks for that one machine-wide.
    command: [sh, -c, 'trap "exit 0" TERM; echo "ip $IP"; sleep 900 & wait']
"#
        ),
    ));
    let line = wait_line(&mut p, |l| l.starts_with("ip "));
    let ip: Ipv4Addr = line.strip_prefix("ip ").unwrap().parse().unwrap();
    let localnet = fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{}/route_localnet", env.bridge)).unwrap();
    assert_eq!(localnet.trim(), "1", "the hostPort turns route_localnet on: the case this test is about");
    let gateway: Ipv4Addr = {
        let net: Ipv4Addr = env.cidr.split('/').next().unwrap().parse().unwrap();
        Ipv4Addr::from(u32::from(net) + 1)
    };
    let key = fs::read_dir(env.root().join("pods")).unwrap().next().unwrap().unwrap().path();
    let gw_mac = mac_of(&PathBuf::from(format!("/sys/class/net/{}/address", env.bridge)));
    let answered =
        raw_syns_answered(&key.join("ns/net"), gw_mac, ip, vec![(gateway, port), (Ipv4Addr::LOCALHOST, port)]);
    let (code, err) = stop(&mut p, libc::SIGTERM);
    assert!(answered[0], "the host's address on the bridge never answered: the raw path does not work");
    assert!(!answered[1], "127.0.0.1:{port}, a loopback-only service of the host, answered a pod");
    assert_eq!(code, 0, "{err}");
    env.assert_clean();
    drop(listener);
}

/// `nodectl run pod.yaml 2>&1 | head -1`: once the reader is gone, writes to stdout and
/// stderr fail; the pod must still be supervised to its end and cleaned up.
#[test]
fn a_closed_stdout_and_stderr_stop_neither_supervision_nor_clean_up() {
    let env = PodEnv::new();
    // Close-on-exec: no child (ours or another test's) may keep the read end open.
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut child = env
        .command(&pod(
            "talker",
            "  restartPolicy: Never\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'for i in $(seq 60); do echo out $i; echo err $i >&2; sleep 0.02; done; exit 3']}\n",
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::from(write.try_clone().unwrap()))
        .stderr(Stdio::from(write))
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(fs::File::from(read)).read_line(&mut first).unwrap();
    // The reader is gone now: what `head -1` does.
    assert!(!first.is_empty());
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("nodectl run did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), None, "nodectl run was killed by a signal: {status:?}");
    assert_eq!(status.code(), Some(3), "the pod's exit code");
    env.assert_clean();
}

/// /etc/hostname is bind-mounted writable into the containers. One fills it with 128 MiB
/// and fails; its restart must get the hostname we wrote (not what is in the file), and
/// nodectl run must not have read the file into its memory.
#[test]
fn what_a_container_writes_to_its_etc_hostname_is_never_read_back() {
    let env = PodEnv::new();
    let mut child = env
        .command(&pod(
            "named",
            r#"  restartPolicy: OnFailure
  volumes: [{name: v, emptyDir: {}}]
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    volumeMounts: [{name: v, mountPath: /v}]
    command: [sh, -c, 'if [ ! -e /v/once ]; then touch /v/once; yes evil | head -c 134217728 > /etc/hostname; exit 1; fi; echo "HOSTNAME=$HOSTNAME"; hostname; sleep 1']
"#,
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    // The peak resident size of nodectl run's own memory (VmHWM: getrusage's maxrss would
    // count the test process, whose memory the child shared until its execve).
    let status_file = format!("/proc/{}/status", child.id());
    let end = Instant::now() + Duration::from_secs(30);
    let mut stopped = false;
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = fs::read_to_string(&status_file)
            && let Some(kib) = text.lines().find_map(|l| l.strip_prefix("VmHWM:"))
        {
            peak_kib = peak_kib.max(kib.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end && !stopped {
            // A graceful stop, so that the pod is removed even when the test fails.
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            stopped = true;
        }
        if Instant::now() > end + Duration::from_secs(15) {
            // Before the fix, nodectl run could hang in the create of a container whose
            // hostname was the file's 128 MiB.
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    assert_eq!(out, "HOSTNAME=named\nnamed\n", "{err}");
    assert!(peak_kib > 0 && peak_kib < 64 << 10, "nodectl run grew to {} MiB", peak_kib >> 10);
    env.assert_clean();
}

/// Tries system calls busybox cannot make, one per argument, and prints `NAME ok` or
/// `NAME errno=N`. Each call is one that succeeds or fails with another errno when no
/// filter stands in the way (without CAP_SYS_ADMIN, mount of a missing target is ENOENT,
/// an unknown bpf command EINVAL), so EPERM means seccomp refused it.
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *what, long r) {
    if (r < 0) printf("%s errno=%d\n", what, errno); else printf("%s ok\n", what);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *w = argv[i];
        errno = 0;
        if (!strcmp(w, "keyctl")) report(w, syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0));
        else if (!strcmp(w, "add_key")) report(w, syscall(SYS_add_key, "user", "nodectl-test", "x", 1, -3));
        else if (!strcmp(w, "bpf")) report(w, syscall(SYS_bpf, 9999, NULL, 0));
        else if (!strcmp(w, "mount")) report(w, mount("none", "/nonexistent-target", "tmpfs", 0, NULL));
        else if (!strcmp(w, "ptrace")) report(w, ptrace(PTRACE_TRACEME, 0, NULL, NULL));
        else printf("%s unknown\n", w);
    }
    return 0;
}
"#;

/// Builds the probe (static, so it runs in busybox) into a fresh directory to mount.
fn build_probe(env: &PodEnv) -> PathBuf {
    let dir = env.root().join("probe");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("probe.c"), PROBE_C).unwrap();
    let out = Command::new("gcc")
        .args(["-static", "-O", "-o"])
        .arg(dir.join("probe"))
        .arg(dir.join("probe.c"))
        .output()
        .unwrap();
    assert!(out.status.success(), "gcc: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// The lines a container printed, without its `[name] ` prefix.
fn lines_of(out: &str, container: &str) -> Vec<String> {
    let prefix = format!("[{container}] ");
    out.lines().filter_map(|l| l.strip_prefix(&prefix)).map(String::from).collect()
}

#[test]
fn a_default_pod_cannot_keyctl_unshare_mount_ptrace_or_bpf_under_seccomp_but_an_unconfined_one_can() {
    let env = PodEnv::new();
    let probe = build_probe(&env);
    let script = "/probe/probe keyctl add_key bpf mount ptrace; unshare -U true 2>/dev/null; echo unshare=$?; grep Seccomp: /proc/self/status";
    let container = |name: &str, sc: &str| {
        format!(
            "  - name: {name}\n    image: busybox\n    imagePullPolicy: Never\n    command: [sh, -c, '{script}']\n    volumeMounts: [{{name: probe, mountPath: /probe, readOnly: true}}]\n{sc}"
        )
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: seccomp\n  annotations: {{container.seccomp.security.alpha.kubernetes.io/annotated: unconfined}}\nspec:\n  restartPolicy: Never\n  volumes:\n  - {{name: probe, hostPath: {{path: {}, type: Directory}}}}\n  containers:\n{}{}{}{}",
        probe.display(),
        container("default", ""),
        container("nnp", "    securityContext: {allowPrivilegeEscalation: false}\n"),
        container("unconfined", "    securityContext: {seccompProfile: {type: Unconfined}}\n"),
        container("annotated", ""),
    );
    let r = env.run(&yaml);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let refused = [
        "keyctl errno=1",
        "add_key errno=1",
        "bpf errno=1",
        "mount errno=1",
        "ptrace errno=1",
        "unshare=1",
        "Seccomp:\t2",
    ];
    // With no_new_privs the filter is loaded at the last moment; without it, early: both hold.
    assert_eq!(lines_of(&r.stdout, "default"), refused, "{}", r.stdout);
    assert_eq!(lines_of(&r.stdout, "nnp"), refused, "{}", r.stdout);
    let free = ["keyctl ok", "add_key ok", "bpf errno=22", "mount errno=2", "ptrace ok", "unshare=0", "Seccomp:\t0"];
    assert_eq!(lines_of(&r.stdout, "unconfined"), free, "{}", r.stdout);
    assert_eq!(lines_of(&r.stdout, "annotated"), free, "{}", r.stdout);
}

#[test]
fn a_localhost_seccomp_profile_is_applied_and_a_missing_one_is_refused_naming_the_field() {
    let env = PodEnv::new();
    fs::create_dir_all(env.root().join("seccomp/team")).unwrap();
    fs::write(
        env.root().join("seccomp/team/no-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .unwrap();
    let c = "  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: Never\n    command: [sh, -c, 'mkdir /tmp/x 2>&1; echo rc=$?; grep Seccomp: /proc/self/status']\n";
    let r = env.run(&pod(
        "localhost",
        &format!("  restartPolicy: Never\n  securityContext: {{seccompProfile: {{type: Localhost, localhostProfile: team/no-mkdir.json}}}}\n{c}"),
    ));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // One container: its lines come without a prefix.
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        ["mkdir: can't create directory '/tmp/x': Permission denied", "rc=1", "Seccomp:\t2"],
        "{}",
        r.stdout
    );

    // The old annotation names the same file.
    let r = env.run(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: annotated\n  annotations: {{seccomp.security.alpha.kubernetes.io/pod: localhost/team/no-mkdir.json}}\nspec:\n  restartPolicy: Never\n{c}"
    ));
    assert!(r.stdout.contains("Permission denied"), "{}\n{}", r.stdout, r.stderr);

    let r = env.run(&pod(
        "missing",
        &format!("  restartPolicy: Never\n{c}    securityContext: {{seccompProfile: {{type: Localhost, localhostProfile: nope.json}}}}\n"),
    ));
    assert_eq!(r.code, 128, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("spec.containers[0].securityContext.seccompProfile.localhostProfile: Not found: seccomp profile \"nope.json\""),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("rc="), "the container ran: {}", r.stdout);
}

/// The pod's directory under ROOT/pods (its UID): the only one there.
fn only_pod_dir(env: &PodEnv) -> PathBuf {
    let dirs: Vec<PathBuf> = fs::read_dir(env.root().join("pods")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

fn stat_field(pid: i32, n: usize) -> i32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(n - 3).unwrap().parse().unwrap()
}

/// The monitor is the containers' parent, in a session of its own; it records each run of
/// a container and writes its output to CRI log files, N.log for restart N.
#[test]
fn a_pods_monitor_parents_its_containers_and_writes_records_and_cri_logs() {
    let env = PodEnv::new();
    let mut p = env.spawn(&pod(
        "watched",
        "  restartPolicy: Always\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'echo out line; echo err line >&2; if [ -e /dev/shm/again ]; then echo up; sleep 1000; fi; touch /dev/shm/again; exit 4']}\n",
    ));
    wait_line(&mut p, |l| l.contains("up"));
    let dir = only_pod_dir(&env);
    let uid = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(uid.len(), 36, "the directory is the pod's UID: {uid}");

    let monitor: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("monitor.json")).unwrap()).unwrap();
    let monitor_pid = monitor["pid"].as_i64().unwrap() as i32;
    assert_eq!(stat_field(monitor_pid, 4), p.id() as i32, "nodectl run started the monitor");
    assert_eq!(stat_field(monitor_pid, 6), monitor_pid, "the monitor leads its own session");

    let record: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("containers/c.json")).unwrap()).unwrap();
    let pid = record["pid"].as_i64().unwrap() as i32;
    assert!(record["terminated"].is_null(), "{record}");
    assert_eq!(stat_field(pid, 4), monitor_pid, "the monitor is the container's parent");

    // Run 0 failed with 4 and was recorded; run 1 is up. Both logs are in the CRI format.
    let first = fs::read_to_string(dir.join("logs/c/0.log")).unwrap();
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 2, "{first}");
    for (line, stream, text) in [(lines[0], "stdout", "out line"), (lines[1], "stderr", "err line")] {
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok() && time.ends_with('Z'), "{line}");
        assert!(time.split('.').nth(1).is_some_and(|f| f.len() == 10), "nanoseconds: {line}");
        // stdout and stderr are read apart: their order between the two is not kept.
        assert!(first.contains(&format!(" {stream} F {text}\n")), "{first}");
        assert!(rest.ends_with(" line"), "{line}");
    }
    let second = fs::read_to_string(dir.join("logs/c/1.log")).unwrap();
    assert!(second.contains(" stdout F up\n"), "{second}");

    let (code, err) = stop(&mut p, libc::SIGTERM);
    assert_eq!(code, 137, "the container's sh ignores SIGTERM: killed after the grace period: {err}");
    env.assert_clean();
    assert!(!Path::new(&format!("/proc/{monitor_pid}")).exists(), "the monitor is gone");
}

/// Logs rotate by size and keep the number of files asked for.
#[test]
fn container_logs_rotate_at_the_size_and_count_given() {
    let env = PodEnv::new();
    let mut c = env.command(&pod(
        "chatty",
        "  restartPolicy: Never\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'for i in $(seq 400); do echo line $i of a chatty container; done; echo done; sleep 1000']}\n",
    ));
    c.args(["--container-log-max-size", "2Ki", "--container-log-max-files", "3"]);
    let mut p = Running(c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    wait_line(&mut p, |l| l == "done\n");
    let logs = only_pod_dir(&env).join("logs/c");
    // The monitor writes "done" to the log before echoing it: all is there.
    let mut names: Vec<String> =
        fs::read_dir(&logs).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["0.log", "0.log.1", "0.log.2"]);
    for n in &names {
        let len = fs::metadata(logs.join(n)).unwrap().len();
        assert!(len <= 2048 && len > 0, "{n}: {len} bytes");
    }
    assert!(fs::read_to_string(logs.join("0.log")).unwrap().ends_with(" stdout F done\n"));
    stop(&mut p, libc::SIGKILL);
    common::ok(env.root(), &["gc"]);
    env.assert_clean();
}

#[test]
fn bad_log_rotation_flags_are_refused_naming_the_flag() {
    let env = PodEnv::new();
    let c = "  containers:\n  - {name: c, image: busybox, imagePullPolicy: Never}\n";
    for (args, want) in [
        (["--container-log-max-size", "lots"], "--container-log-max-size"),
        (["--container-log-max-size", "10"], "less than 1Ki"),
        (["--container-log-max-files", "0"], "--container-log-max-files: 0"),
    ] {
        let out = env.command(&pod("x", c)).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    }
    env.assert_clean();
}

#[test]
fn an_apparmor_profile_a_host_without_apparmor_cannot_enforce_is_refused_in_the_kubelets_words() {
    let enforced = nodectl::runtime::apparmor::host_enabled();
    if enforced {
        // make vm-test shows profiles applied on a kernel with AppArmor.
        return;
    }
    let env = PodEnv::new();
    let c = "  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: Never\n    command: [sh, -c, 'echo ran']\n";
    // Unconfined, or nothing asked: the pod runs.
    let r = env.run(&pod(
        "unconfined",
        &format!("  restartPolicy: Never\n  securityContext: {{appArmorProfile: {{type: Unconfined}}}}\n{c}"),
    ));
    assert_eq!((r.code, r.stdout.trim()), (0, "ran"), "{}", r.stderr);
    // RuntimeDefault, Localhost or the annotation: refused before anything runs, as the
    // kubelet refuses such a pod on a node without AppArmor.
    let cases = [
        (
            "default",
            format!("  restartPolicy: Never\n  securityContext: {{appArmorProfile: {{type: RuntimeDefault}}}}\n{c}"),
            "spec.securityContext.appArmorProfile",
        ),
        (
            "localhost",
            format!(
                "  restartPolicy: Never\n{c}    securityContext: {{appArmorProfile: {{type: Localhost, localhostProfile: k8s-nginx}}}}\n"
            ),
            "spec.containers[0].securityContext.appArmorProfile.localhostProfile",
        ),
    ];
    for (name, spec, field) in cases {
        let r = env.run(&pod(name, &spec));
        assert_eq!(r.code, 128, "{name}: {}\n{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains(&format!("{field}: Cannot enforce AppArmor: AppArmor is not enabled on the host")),
            "{name}: {}",
            r.stderr
        );
        assert!(!r.stdout.contains("ran"), "{name}: the container ran");
    }
    let r = env.run(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: annotated\n  annotations: {{container.apparmor.security.beta.kubernetes.io/c: runtime/default}}\nspec:\n  restartPolicy: Never\n{c}"
    ));
    assert!(r.stderr.contains("Cannot enforce AppArmor"), "{}", r.stderr);
    // A malformed field is the API's error, naming it.
    let r = env.run(&pod(
        "badtype",
        &format!("  restartPolicy: Never\n  securityContext: {{appArmorProfile: {{type: Strict}}}}\n{c}"),
    ));
    assert!(
        r.stderr.contains("spec.securityContext.appArmorProfile.type: Unsupported value: \"Strict\""),
        "{}",
        r.stderr
    );
}

#[test]
fn pod_sysctls_are_the_safe_set_and_what_the_node_allows_and_never_the_hosts() {
    let env = PodEnv::new();
    let host_port_start = fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let host_msgmax = fs::read_to_string("/proc/sys/kernel/msgmax").unwrap();
    let c = "  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: Never\n    command: [sh, -c, 'cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/msgmax']\n";
    let safe = "  restartPolicy: Never\n  securityContext:\n    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: '80'}]\n";
    let r = env.run(&pod("safe", &format!("{safe}{c}")));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout.lines().next(), Some("80"), "{}", r.stdout);
    // Set in the pod's network namespace, not the host's.
    assert_eq!(fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(), host_port_start);

    // Unsafe: refused unless the node allows it, in the kubelet's words.
    let unsafe_ = "  restartPolicy: Never\n  securityContext:\n    sysctls: [{name: kernel.msgmax, value: '12345'}]\n";
    let r = env.run(&pod("unsafe", &format!("{unsafe_}{c}")));
    assert_eq!(r.code, 128, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("spec.securityContext.sysctls[0].name: forbidden sysctl: \"kernel.msgmax\" not allowlisted"),
        "{}",
        r.stderr
    );
    let r = env.run_with(&pod("allowed", &format!("{unsafe_}{c}")), &["--allowed-unsafe-sysctls", "kernel.msg*"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout.lines().nth(1), Some("12345"), "{}", r.stdout);
    assert_eq!(fs::read_to_string("/proc/sys/kernel/msgmax").unwrap(), host_msgmax);

    // A network sysctl with the host's network, and a node allowing a host-wide sysctl.
    let r = env.run(&pod("hostnet", &format!("  hostNetwork: true\n{safe}{c}")));
    assert!(r.stderr.contains("not allowed with host net enabled"), "{}", r.stderr);
    let r = env.run_with(&pod("hostwide", &format!("{unsafe_}{c}")), &["--allowed-unsafe-sysctls", "kernel.printk"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("\"kernel.printk\"") && r.stderr.contains("namespace"), "{}", r.stderr);
    // A malformed name is the API's error.
    let r =
        env.run(&pod("badname", &format!("  securityContext:\n    sysctls: [{{name: Net.IPv4, value: '1'}}]\n{c}")));
    assert!(r.stderr.contains("spec.securityContext.sysctls[0].name: Invalid value: \"Net.IPv4\""), "{}", r.stderr);
}
