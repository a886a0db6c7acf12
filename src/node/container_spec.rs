//! One container of a pod as an OCI runtime spec, built the way containerd's CRI plugin
//! builds it for the kubelet: the image's entrypoint, command, environment, working
//! directory and user under the Pod's overrides; the pod's shared namespaces joined by
//! path; its /etc files, /dev/shm and volumes bind-mounted; limits as cgroup resources;
//! the security context as user, capabilities, no_new_privileges and a seccomp profile.
//!
//! The result goes through the runtime's own spec loader, so everything the runtime
//! checks is checked here too.

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Capabilities, Container, Pod};
use oci_spec::image::Config as ImageConfig;
use serde_json::{Value, json};

use super::PlanError;
use super::env::Env;
use super::sandbox::Sandbox;
use super::volumes::Volumes;
use super::{apparmor, seccomp, sysctls};
use crate::model::quantity;
use crate::sys;

/// containerd's default capability set, which Kubernetes users expect in a container.
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The CFS period the kubelet uses; a cpu limit becomes a quota of this.
const CPU_PERIOD: i64 = 100_000;

/// What goes into one container's spec.
pub struct Input<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    /// `spec.containers[0]`, `spec.initContainers[1]`: names fields in errors.
    pub field: &'a str,
    pub image: Option<&'a ImageConfig>,
    pub rootfs: &'a Path,
    pub env: &'a Env,
    pub sandbox: &'a Sandbox,
    pub volumes: &'a Volumes,
    /// Where Localhost seccomp profiles live (`ROOT/seccomp`).
    pub seccomp_dir: &'a Path,
    /// Sysctls the node lets pods set beyond the safe set.
    pub allowed_unsafe_sysctls: &'a [String],
}

fn invalid(field: String, message: String) -> PlanError {
    PlanError::invalid(field, message)
}

/// The process's argv, as the kubelet combines image and Pod: `command` replaces the
/// entrypoint (and drops the image's cmd), `args` replaces the cmd.
fn argv(c: &Container, image: Option<&ImageConfig>, env: &Env, field: &str) -> Result<Vec<String>, PlanError> {
    let entrypoint = image.and_then(|i| i.entrypoint().clone()).unwrap_or_default();
    let cmd = image.and_then(|i| i.cmd().clone()).unwrap_or_default();
    let out: Vec<String> = match (&c.command, &c.args) {
        (Some(command), Some(args)) => command.iter().chain(args).map(|s| env.expand(s)).collect(),
        (Some(command), None) => command.iter().map(|s| env.expand(s)).collect(),
        (None, Some(args)) => entrypoint.into_iter().chain(args.iter().map(|s| env.expand(s))).collect(),
        (None, None) => entrypoint.into_iter().chain(cmd).collect(),
    };
    if out.is_empty() {
        return Err(invalid(
            format!("{field}.command"),
            "Required value: neither the container nor its image names a command".into(),
        ));
    }
    Ok(out)
}

/// Reads a file of the image's (/etc/passwd, /etc/group) without following a symlink out
/// of the root filesystem or blocking on a fifo.
fn read_in_root(rootfs: &Path, rel: &str) -> Option<String> {
    let root = fs::File::open(rootfs).ok()?;
    let c = CString::new(rel).ok()?;
    let fd = sys::resolve::openat2(
        root.as_fd(),
        &c,
        libc::O_RDONLY | libc::O_NONBLOCK,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
    .ok()?;
    let mut f = fs::File::from(fd);
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut s = String::new();
    f.by_ref().take(4 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}

/// The id (third field) and, in /etc/passwd, the primary group (fourth) of `name`.
fn lookup(rootfs: &Path, file: &str, name: &str) -> Option<(u32, Option<u32>)> {
    for line in read_in_root(rootfs, file)?.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && f[0] == name {
            return Some((f[2].parse().ok()?, f.get(3).and_then(|g| g.parse().ok())));
        }
    }
    None
}

/// The primary group of `uid` in the image's /etc/passwd.
fn primary_gid(rootfs: &Path, uid: u32) -> Option<u32> {
    read_in_root(rootfs, "etc/passwd")?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4 && f[2].parse::<u32>().ok() == Some(uid) { f[3].parse().ok() } else { None }
    })
}

/// The image's `User` ("", "uid", "uid:gid", "name", "name:group") as ids, names looked up
/// in the image's own /etc/passwd and /etc/group.
fn image_user(rootfs: &Path, user: &str, field: &str) -> Result<(u32, u32, bool), PlanError> {
    if user.is_empty() {
        return Ok((0, 0, true));
    }
    let (u, g) = user.split_once(':').map_or((user, None), |(u, g)| (u, Some(g)));
    let (uid, primary, numeric) = match u.parse::<u32>() {
        Ok(uid) => (uid, primary_gid(rootfs, uid), true),
        Err(_) => {
            let (uid, gid) = lookup(rootfs, "etc/passwd", u).ok_or_else(|| {
                invalid(format!("{field}.image"), format!("the image's user {u:?} is not in its /etc/passwd"))
            })?;
            (uid, gid, false)
        }
    };
    let gid = match g {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup(rootfs, "etc/group", g).map(|(gid, _)| gid).ok_or_else(|| {
                invalid(format!("{field}.image"), format!("the image's group {g:?} is not in its /etc/group"))
            })?,
        },
    };
    Ok((uid, gid, numeric))
}

fn cap_name(k8s: &str) -> String {
    let upper = k8s.to_ascii_uppercase();
    if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") }
}

fn all_caps() -> Vec<String> {
    caps::all().into_iter().map(|c| c.to_string()).collect()
}

/// The capability set: containerd's defaults, or all for a privileged container; then the
/// security context's add and drop ("ALL" in either). As containerd: "ALL" in drop empties
/// the set before the adds; single drops go last.
fn capabilities(privileged: bool, cs: Option<&Capabilities>, field: &str) -> Result<Vec<String>, PlanError> {
    let mut caps: Vec<String> =
        if privileged { all_caps() } else { DEFAULT_CAPS.iter().map(|s| s.to_string()).collect() };
    let Some(cs) = cs else { return Ok(caps) };
    let drops: Vec<&String> = cs.drop.iter().flatten().collect();
    if drops.iter().any(|d| d.eq_ignore_ascii_case("ALL")) {
        caps.clear();
    }
    for (j, add) in cs.add.iter().flatten().enumerate() {
        if add.eq_ignore_ascii_case("ALL") {
            caps = all_caps();
            continue;
        }
        let name = cap_name(add);
        if name.parse::<caps::Capability>().is_err() {
            return Err(invalid(
                format!("{field}.securityContext.capabilities.add[{j}]"),
                format!("Unsupported value: \"{add}\": not a Linux capability"),
            ));
        }
        if !caps.contains(&name) {
            caps.push(name);
        }
    }
    for drop in drops.iter().filter(|d| !d.eq_ignore_ascii_case("ALL")) {
        let name = cap_name(drop);
        caps.retain(|c| *c != name);
    }
    Ok(caps)
}

/// Builds the spec (see the module comment).
pub fn build(input: &Input<'_>) -> Result<Value, PlanError> {
    let Input { pod, container: c, field, image, rootfs, env, sandbox, volumes, seccomp_dir, allowed_unsafe_sysctls } =
        *input;
    let pod_spec = pod.spec.as_ref().ok_or_else(|| invalid("spec".into(), "Required value".into()))?;
    let pod_sc = pod_spec.security_context.as_ref();
    let sc = c.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged) == Some(true);

    let mut spec = crate::runtime::spec::default_spec();
    let args = argv(c, image, env, field)?;

    // User: the image's, under the pod's, under the container's.
    let image_user_text = image.and_then(|i| i.user().clone()).unwrap_or_default();
    let (mut uid, mut gid, numeric) = image_user(rootfs, &image_user_text, field)?;
    let run_as_user = sc.and_then(|s| s.run_as_user).or(pod_sc.and_then(|s| s.run_as_user));
    let run_as_group = sc.and_then(|s| s.run_as_group).or(pod_sc.and_then(|s| s.run_as_group));
    if let Some(u) = run_as_user {
        uid = u32::try_from(u).map_err(|_| {
            invalid(
                format!("{field}.securityContext.runAsUser"),
                format!("Invalid value: {u}: must be between 0 and 2147483647, inclusive"),
            )
        })?;
        if run_as_group.is_none() {
            gid = primary_gid(rootfs, uid).unwrap_or(0);
        }
    }
    if let Some(g) = run_as_group {
        gid = u32::try_from(g).map_err(|_| {
            invalid(
                format!("{field}.securityContext.runAsGroup"),
                format!("Invalid value: {g}: must be between 0 and 2147483647, inclusive"),
            )
        })?;
    }
    let non_root = sc.and_then(|s| s.run_as_non_root).or(pod_sc.and_then(|s| s.run_as_non_root)) == Some(true);
    if non_root {
        if run_as_user.is_none() && !numeric {
            return Err(invalid(
                format!("{field}.securityContext.runAsNonRoot"),
                format!("image has non-numeric user ({image_user_text}), cannot verify user is non-root"),
            ));
        }
        if uid == 0 {
            return Err(invalid(
                format!("{field}.securityContext.runAsNonRoot"),
                "container has runAsNonRoot and image will run as root".into(),
            ));
        }
    }

    let caps = capabilities(privileged, sc.and_then(|s| s.capabilities.as_ref()), field)?;
    let seccomp_choice = seccomp::choose(pod, c, field)?;
    if let Some(profile) = seccomp::linux_seccomp(&seccomp_choice, privileged, &caps, seccomp_dir)? {
        spec["linux"]["seccomp"] = profile;
    }
    if let Some(profile) = apparmor::process_profile(&apparmor::choose(pod, c, field)?, privileged)? {
        spec["process"]["apparmorProfile"] = profile.into();
    }
    let sysctls = sysctls::linux_sysctls(pod, allowed_unsafe_sysctls)?;
    if !sysctls.is_empty() {
        spec["linux"]["sysctl"] = serde_json::to_value(sysctls).unwrap_or_default();
    }
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| image.and_then(|i| i.working_dir().clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(invalid(
            format!("{field}.workingDir"),
            format!("Invalid value: \"{cwd}\": must be an absolute path"),
        ));
    }
    let mut env_lines = env.lines();
    if !env.vars.iter().any(|(k, _)| k == "PATH") {
        env_lines.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    if !env.vars.iter().any(|(k, _)| k == "HOSTNAME") {
        env_lines.push(format!("HOSTNAME={}", sandbox.hostname));
    }
    spec["process"] = json!({
        "terminal": c.tty == Some(true),
        "user": {"uid": uid, "gid": gid},
        "args": args,
        "env": env_lines,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
    });
    spec["root"] = json!({"path": rootfs, "readonly": sc.and_then(|s| s.read_only_root_filesystem) == Some(true)});

    // Namespaces: the pod's network, UTS and IPC by path; pid and mount of its own.
    let mut namespaces =
        vec![json!({"type": "pid"}), json!({"type": "mount"}), json!({"type": "ipc", "path": sandbox.ipcns})];
    if let Some(net) = &sandbox.netns {
        namespaces.push(json!({"type": "network", "path": net}));
    }
    match &sandbox.utsns {
        Some(uts) => {
            namespaces.push(json!({"type": "uts", "path": uts}));
            spec["hostname"] = sandbox.hostname.as_str().into();
        }
        None => {
            if let Some(spec) = spec.as_object_mut() {
                spec.remove("hostname");
            }
        }
    }
    spec["linux"]["namespaces"] = Value::Array(namespaces);

    // Mounts: the runtime's defaults with the pod's /dev/shm, its /etc files, volumes.
    let mut mounts: Vec<Value> = spec["mounts"].as_array().cloned().unwrap_or_default();
    mounts.retain(|m| m["destination"] != "/dev/shm");
    if privileged {
        for m in mounts.iter_mut().filter(|m| m["destination"] == "/sys") {
            m["options"] = json!(["nosuid", "noexec", "nodev"]);
        }
    }
    let bind = |src: &Path, dst: &str, ro: bool| json!({"destination": dst, "type": "bind", "source": src, "options": if ro { json!(["rbind", "ro", "nosuid", "nodev"]) } else { json!(["rbind", "nosuid", "nodev"]) }});
    mounts.push(bind(&sandbox.shm, "/dev/shm", false));
    mounts.push(bind(&sandbox.hosts, "/etc/hosts", false));
    mounts.push(bind(&sandbox.hostname_file, "/etc/hostname", false));
    mounts.push(bind(&sandbox.resolv_conf, "/etc/resolv.conf", false));
    for (j, vm) in c.volume_mounts.iter().flatten().enumerate() {
        let f = format!("{field}.volumeMounts[{j}]");
        let base = volumes
            .paths
            .get(&vm.name)
            .ok_or_else(|| invalid(format!("{f}.name"), format!("Not found: \"{}\"", vm.name)))?;
        // configMap and secret volumes are read-only, as the kubelet mounts them.
        let ro = vm.read_only == Some(true) || volumes.read_only.contains(&vm.name);
        match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            None => mounts.push(bind(base, &vm.mount_path, ro)),
            Some(sub) => {
                let what = || format!("{f}.subPath {sub:?} in volume {}", vm.name);
                let fd = open_sub_path(base, sub).map_err(PlanError::io(what()))?;
                let staged = stage_sub_path(&sandbox.dir.join("subpaths").join(&c.name).join(j.to_string()), &fd)
                    .map_err(PlanError::io(what()))?;
                mounts.push(bind(&staged, &vm.mount_path, ro));
            }
        }
    }
    spec["mounts"] = Value::Array(mounts);
    if privileged {
        spec["linux"]["maskedPaths"] = json!([]);
        spec["linux"]["readonlyPaths"] = json!([]);
    }

    // Resources: limits as limits, cpu requests as shares (the kubelet's mapping).
    spec["linux"]["resources"] = resources(c, field)?;
    if privileged {
        spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
    }
    Ok(spec)
}

fn resources(c: &Container, field: &str) -> Result<Value, PlanError> {
    let limits = c.resources.as_ref().and_then(|r| r.limits.clone()).unwrap_or_default();
    let requests = c.resources.as_ref().and_then(|r| r.requests.clone()).unwrap_or_default();
    let mut res = crate::runtime::spec::default_spec()["linux"]["resources"].clone();
    let cpu_request = requests.get("cpu").or_else(|| limits.get("cpu"));
    let shares = match cpu_request {
        Some(q) => (quantity::cpu_millis(&q.0).map_err(|m| invalid(format!("{field}.resources.requests.cpu"), m))?
            * 1024
            / 1000)
            .max(2),
        None => 2,
    };
    res["cpu"] = json!({"shares": shares});
    if let Some(q) = limits.get("cpu") {
        let millis = quantity::cpu_millis(&q.0).map_err(|m| invalid(format!("{field}.resources.limits.cpu"), m))?;
        // The kernel's floor for a quota is 1 ms.
        res["cpu"]["quota"] = json!((millis * CPU_PERIOD / 1000).max(1000));
        res["cpu"]["period"] = json!(CPU_PERIOD);
    }
    if let Some(q) = limits.get("memory") {
        res["memory"] = json!({"limit": quantity::memory_bytes(&q.0).map_err(|m| invalid(format!("{field}.resources.limits.memory"), m))?});
    }
    Ok(res)
}

/// Bind-mounts the resolved subPath (by its descriptor, so the path is not looked up
/// again) onto `at` in the pod's directory, which the container then mounts: the runtime
/// resolves mount sources by path, and this one can no longer be swapped. The kubelet
/// stages subPaths the same way.
fn stage_sub_path(at: &Path, fd: &OwnedFd) -> std::io::Result<PathBuf> {
    // A restart finds the previous run's staging mount here.
    if at.exists() {
        let _ = sys::mount::unmount_detach(at);
        if at.is_dir() { fs::remove_dir(at)? } else { fs::remove_file(at)? }
    }
    if let Some(parent) = at.parent() {
        fs::create_dir_all(parent)?;
    }
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    if fs::metadata(&source)?.is_dir() {
        fs::create_dir(at)?;
    } else {
        fs::File::create(at)?;
    }
    nix::mount::mount(Some(source.as_str()), at, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)?;
    Ok(at.to_path_buf())
}

/// Opens `sub` inside volume `base` with every component resolved beneath it, so a
/// symlink a container planted in its volume cannot point the mount at the host
/// (CVE-2017-1002101). A missing subPath is made as a directory, as the kubelet does.
fn open_sub_path(base: &Path, sub: &str) -> std::io::Result<OwnedFd> {
    let root = fs::File::open(base)?;
    let rel = Path::new(sub);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "must be a relative path without '..'"));
    }
    let c = CString::new(rel.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    match sys::resolve::openat2(root.as_fd(), &c, libc::O_PATH, resolve) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Made one component at a time, each resolved beneath the volume again.
            let mut done = PathBuf::new();
            for part in rel.components() {
                done.push(part);
                let parent_c = CString::new(done.parent().unwrap_or(Path::new("")).as_os_str().as_bytes())
                    .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
                let parent_c = if parent_c.as_bytes().is_empty() { c".".to_owned() } else { parent_c };
                let parent = sys::resolve::openat2(root.as_fd(), &parent_c, libc::O_PATH | libc::O_DIRECTORY, resolve)?;
                let name = CString::new(part.as_os_str().as_bytes())
                    .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
                match nix::sys::stat::mkdirat(
                    parent.as_fd(),
                    name.as_c_str(),
                    nix::sys::stat::Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            sys::resolve::openat2(root.as_fd(), &c, libc::O_PATH, resolve)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    fn caps_of(add: &[&str], drop: &[&str]) -> Capabilities {
        let v = |l: &[&str]| Some(l.iter().map(|s| s.to_string()).collect());
        Capabilities { add: v(add), drop: v(drop) }
    }

    #[test]
    fn a_default_container_gets_containerds_capabilities() {
        let caps = capabilities(false, None, "c").unwrap();
        assert_eq!(caps, DEFAULT_CAPS);
        assert!(!caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
    }

    #[test]
    fn drop_all_then_add_leaves_only_the_additions() {
        let caps = capabilities(false, Some(&caps_of(&["net_admin", "CAP_KILL"], &["ALL"])), "c").unwrap();
        assert_eq!(caps, ["CAP_NET_ADMIN", "CAP_KILL"]);
    }

    #[test]
    fn single_drops_go_after_the_adds() {
        let caps = capabilities(false, Some(&caps_of(&["SYS_TIME"], &["SYS_TIME", "chown"])), "c").unwrap();
        assert!(!caps.iter().any(|c| c == "CAP_SYS_TIME" || c == "CAP_CHOWN"), "{caps:?}");
        assert!(caps.iter().any(|c| c == "CAP_KILL"));
    }

    #[test]
    fn a_privileged_container_gets_every_capability() {
        let caps = capabilities(true, None, "c").unwrap();
        assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN") && caps.len() > DEFAULT_CAPS.len());
    }

    #[test]
    fn an_unknown_capability_is_refused_naming_its_field() {
        let e = capabilities(false, Some(&caps_of(&["KILL", "FLY"], &[])), "spec.containers[0]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.containers[0].securityContext.capabilities.add[1]: Unsupported value: \"FLY\": not a Linux capability"
        );
    }

    fn with_resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let m = |l: &[(&str, &str)]| {
            Some(l.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect::<BTreeMap<_, _>>())
        };
        Container {
            name: "c".into(),
            resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                requests: m(requests),
                limits: m(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn cpu_and_memory_become_shares_a_quota_and_a_limit_as_the_kubelet_sets_them() {
        let r = resources(&with_resources(&[("cpu", "250m")], &[("cpu", "500m"), ("memory", "64Mi")]), "c").unwrap();
        assert_eq!(r["cpu"]["shares"], 256);
        assert_eq!((r["cpu"]["quota"].as_i64(), r["cpu"]["period"].as_i64()), (Some(50_000), Some(100_000)));
        assert_eq!(r["memory"]["limit"], 64 * 1024 * 1024);
        // A limit without a request is also the request; no cpu at all is the minimum.
        assert_eq!(resources(&with_resources(&[], &[("cpu", "1")]), "c").unwrap()["cpu"]["shares"], 1024);
        assert_eq!(resources(&with_resources(&[], &[]), "c").unwrap()["cpu"]["shares"], 2);
        // The kernel's floor for a quota is 1 ms.
        assert_eq!(resources(&with_resources(&[], &[("cpu", "1m")]), "c").unwrap()["cpu"]["quota"], 1000);
    }

    #[test]
    fn a_bad_quantity_names_its_field() {
        let e = resources(&with_resources(&[], &[("memory", "lots")]), "spec.containers[2]").unwrap_err();
        assert!(e.to_string().starts_with("spec.containers[2].resources.limits.memory: "), "{e}");
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        let mut c = ImageConfig::default();
        c.set_entrypoint(Some(entrypoint.iter().map(|s| s.to_string()).collect()));
        c.set_cmd(Some(cmd.iter().map(|s| s.to_string()).collect()));
        c
    }

    #[test]
    fn command_and_args_combine_with_the_image_as_the_kubelet_does() {
        let env = Env::default();
        let img = image(&["/entry"], &["default"]);
        let c = |command: Option<&[&str]>, args: Option<&[&str]>| Container {
            name: "c".into(),
            command: command.map(|l| l.iter().map(|s| s.to_string()).collect()),
            args: args.map(|l| l.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        assert_eq!(argv(&c(None, None), Some(&img), &env, "c").unwrap(), ["/entry", "default"]);
        assert_eq!(argv(&c(None, Some(&["x"])), Some(&img), &env, "c").unwrap(), ["/entry", "x"]);
        assert_eq!(argv(&c(Some(&["/bin/sh"]), None), Some(&img), &env, "c").unwrap(), ["/bin/sh"]);
        assert_eq!(argv(&c(Some(&["/bin/sh"]), Some(&["-c"])), Some(&img), &env, "c").unwrap(), ["/bin/sh", "-c"]);
        let e = argv(&c(None, None), None, &env, "spec.containers[0]").unwrap_err().to_string();
        assert!(e.starts_with("spec.containers[0].command: Required value"), "{e}");
    }
}
