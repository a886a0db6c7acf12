//! Cgroups behind one trait (docs/architecture.md, decision 5): a v2 driver for a pure cgroup2 host
//! and a v1 driver for hosts whose cpu, memory and pids controllers live on v1 (this
//! build machine is hybrid: v2 is mounted but holds only hugetlb).
//!
//! A container's cgroup is `<parent>/<name>`, where the parent defaults to a `nodectl`
//! directory beneath the cgroup this process itself is in (read from /proc/self/cgroup,
//! per controller on v1), never a hierarchy's root. Only an absolute name (a spec's
//! absolute `cgroupsPath`, which the runtime spec takes from the mount point) is placed
//! from the root.

mod device_filter;
mod v1;
mod v2;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use v1::V1;
pub use v2::V2;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("cgroup name {0:?} is invalid: relative path components of [A-Za-z0-9_.:-], no `..`")]
    BadName(String),
    #[error("no cgroup hierarchy with the {0} controller is mounted")]
    NoController(String),
    #[error("{file}: cannot parse {content:?}")]
    Parse { file: PathBuf, content: String },
    #[error("{0}")]
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, CgroupError>;

pub(crate) fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io { op, path: path.to_path_buf(), source }
}

/// Limits, in the OCI runtime spec's terms. `None` leaves a setting as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// CFS quota in microseconds per period; -1 for none.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// v1 shares (2..262144); v2 gets the equivalent weight.
    pub cpu_shares: Option<u64>,
    /// v1 real-time scheduling budget per period (cpu.rt_period_us / cpu.rt_runtime_us);
    /// v2 has no such files.
    pub cpu_rt_period: Option<u64>,
    pub cpu_rt_runtime: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// Bytes; -1 for none.
    pub memory_limit: Option<i64>,
    /// Memory plus swap, in bytes, as the OCI spec has it; -1 for no limit.
    pub memory_swap: Option<i64>,
    /// The soft limit (v1) or protection (v2 memory.low), in bytes; -1 for none.
    pub memory_reservation: Option<i64>,
    /// v1 only (v2 has no per-cgroup swappiness): 0..100.
    pub memory_swappiness: Option<u64>,
    /// v1 only: the OOM killer leaves the cgroup's processes alone (they wait instead).
    pub memory_disable_oom_killer: Option<bool>,
    /// v1 kernel memory limit: read only to warn that it is ignored (Linux 5.16 dropped it).
    pub memory_kernel: Option<i64>,
    /// v1 kernel TCP buffer limit, in bytes.
    pub memory_kernel_tcp: Option<i64>,
    /// -1 (or 0) for none.
    pub pids_limit: Option<i64>,
    /// Block I/O weight, 10..1000 (v1 blkio.weight or BFQ's blkio.bfq.weight; v2 io.weight
    /// mapped onto 1..10000 as runc maps it).
    pub blkio_weight: Option<u16>,
    /// CFQ's weight for the cgroup's own tasks against its children (v1 only; CFQ went with
    /// Linux 5.0, so only old kernels have the file).
    pub blkio_leaf_weight: Option<u16>,
    /// Per-device weights (v1 blkio.bfq.weight_device or CFQ's blkio.weight_device; v2
    /// io.bfq.weight or io.weight).
    pub blkio_weight_devices: Vec<WeightDevice>,
    /// Per-device bandwidth and operation limits (v1 blkio.throttle.*; v2 io.max).
    pub blkio_throttles: Vec<Throttle>,
    /// Huge page limits in bytes, by page size as the kernel names it (`2MB`, `1GB`).
    pub hugetlb: Vec<(String, u64)>,
    /// net_cls.classid (v1 only).
    pub net_class_id: Option<u32>,
    /// net_prio.ifpriomap entries: interface and priority (v1 only).
    pub net_priorities: Vec<(String, u32)>,
    /// rdma.max per device: HCA handles and objects (None: max).
    pub rdma: Vec<(String, Option<u32>, Option<u32>)>,
    /// Raw cgroup v2 files and their values (on a hybrid host, in its cgroup2 hierarchy).
    pub unified: Vec<(String, String)>,
    /// Device access rules, applied in order (later rules win); empty leaves access as it is.
    pub devices: Vec<DeviceRule>,
}

/// A block device's major and minor numbers as cgroup files write them.
fn dev(major: i64, minor: i64) -> String {
    format!("{major}:{minor}")
}

/// One device's block I/O weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightDevice {
    pub major: i64,
    pub minor: i64,
    pub weight: Option<u16>,
    pub leaf_weight: Option<u16>,
}

/// What a throttle limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThrottleKind {
    ReadBps,
    WriteBps,
    ReadIops,
    WriteIops,
}

impl ThrottleKind {
    /// The v1 file and the v2 io.max key.
    pub fn v1_file(self) -> &'static str {
        match self {
            ThrottleKind::ReadBps => "blkio.throttle.read_bps_device",
            ThrottleKind::WriteBps => "blkio.throttle.write_bps_device",
            ThrottleKind::ReadIops => "blkio.throttle.read_iops_device",
            ThrottleKind::WriteIops => "blkio.throttle.write_iops_device",
        }
    }

    pub fn v2_key(self) -> &'static str {
        match self {
            ThrottleKind::ReadBps => "rbps",
            ThrottleKind::WriteBps => "wbps",
            ThrottleKind::ReadIops => "riops",
            ThrottleKind::WriteIops => "wiops",
        }
    }
}

/// One device's limit of one kind; a rate of 0 removes the limit (v1's own meaning; v2
/// writes "max").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttle {
    pub kind: ThrottleKind,
    pub major: i64,
    pub minor: i64,
    pub rate: u64,
}

impl Throttle {
    pub fn v1_line(&self) -> String {
        format!("{} {}", dev(self.major, self.minor), self.rate)
    }

    pub fn v2_line(&self) -> String {
        let rate = if self.rate == 0 { "max".to_string() } else { self.rate.to_string() };
        format!("{} {}={rate}", dev(self.major, self.minor), self.kind.v2_key())
    }
}

impl WeightDevice {
    pub fn device(&self) -> String {
        dev(self.major, self.minor)
    }
}

/// The rdma.max line for one device: `mlx4_0 hca_handle=2 hca_object=max`.
pub fn rdma_line(device: &str, handles: Option<u32>, objects: Option<u32>) -> String {
    let n = |v: Option<u32>| v.map_or("max".to_string(), |v| v.to_string());
    format!("{device} hca_handle={} hca_object={}", n(handles), n(objects))
}

/// Checks a `unified` key: a file name in the cgroup's own directory, nothing that leads
/// out of it (runc refuses the same).
pub fn check_unified_key(key: &str) -> Result<()> {
    if key.is_empty() || key.contains('/') || key == "." || key == ".." || !key.contains('.') {
        return Err(CgroupError::Unsupported(format!(
            "unified: {key:?} is not a cgroup v2 file name (controller.file, in the cgroup's own directory)"
        )));
    }
    Ok(())
}

/// One device cgroup rule: `allow` or deny `access` (r, w, m) to devices of `kind`
/// ('a' all, 'c', 'b') and numbers (None: any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: char,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: String,
}

impl DeviceRule {
    /// The v1 devices.allow / devices.deny line: `c 1:3 rwm`, `a *:* rwm`; None when the
    /// rule grants or takes nothing.
    pub fn v1_line(&self) -> Option<String> {
        let n = |v: Option<i64>| v.filter(|v| *v >= 0).map_or("*".to_string(), |v| v.to_string());
        let access = self.cgroup_access()?;
        Some(format!("{} {}:{} {access}", self.kind, n(self.major), n(self.minor)))
    }

    /// The access as the kernel takes it: only r, w and m, once each, in that order. The
    /// kernel refuses anything else (EINVAL), where runc keeps the letters it knows (its
    /// rules are permission sets): "rwa" is "rw", "mr" is "rm". An empty access is all
    /// three, as the OCI spec has it; letters none of which it knows are nothing (None).
    pub fn cgroup_access(&self) -> Option<String> {
        if self.access.is_empty() {
            return Some("rwm".to_string());
        }
        let access: String = ['r', 'w', 'm'].into_iter().filter(|c| self.access.contains(*c)).collect();
        (!access.is_empty()).then_some(access)
    }
}

/// What a container has used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub cpu_usage_ns: u64,
    /// Per CPU, in nanoseconds (v1 only: v2 does not count per CPU).
    pub cpu_percpu_ns: Vec<u64>,
    pub cpu_user_ns: u64,
    pub cpu_kernel_ns: u64,
    /// Per CPU, kernel and user time in nanoseconds (v1).
    pub cpu_percpu_kernel_ns: Vec<u64>,
    pub cpu_percpu_user_ns: Vec<u64>,
    pub cpu_periods: u64,
    pub cpu_throttled_periods: u64,
    pub cpu_throttled_ns: u64,
    pub memory_current: u64,
    pub memory_peak: u64,
    pub memory_limit: Option<u64>,
    /// How often the limit was hit (v1 memory.failcnt; v2 memory.events `max`).
    pub memory_failcnt: u64,
    /// Page cache, in bytes.
    pub memory_cache: u64,
    /// Memory plus swap (v1 memsw), or swap alone (v2), when the host accounts swap.
    pub swap_current: u64,
    pub swap_peak: u64,
    pub swap_limit: Option<u64>,
    pub swap_failcnt: u64,
    /// v1 kernel memory and its TCP buffers (memory.kmem.*, memory.kmem.tcp.*).
    pub kernel: MemoryCounters,
    pub kernel_tcp: MemoryCounters,
    /// memory.stat, whole.
    pub memory_raw: std::collections::BTreeMap<String, u64>,
    pub oom_kills: u64,
    pub pids_current: u64,
    pub pids_limit: Option<u64>,
    /// The cpuset's cpus and memory nodes, and its other numeric files by name
    /// (`cpu_exclusive`, `sched_load_balance`, …), on v1.
    pub cpuset_cpus: Vec<u16>,
    pub cpuset_mems: Vec<u16>,
    pub cpuset_flags: std::collections::BTreeMap<String, i64>,
    /// Bytes and operations per device and op ("Read", "Write", "Sync", "Async",
    /// "Discard", "Total"), as v1's blkio.throttle files count them.
    pub io_service_bytes: Vec<IoEntry>,
    pub io_serviced: Vec<IoEntry>,
}

/// One memory counter group: usage, its peak, its limit (None: none) and how often the
/// limit was hit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryCounters {
    pub usage: u64,
    pub max: u64,
    pub limit: Option<u64>,
    pub failcnt: u64,
}

/// A cpuset list such as `0-3,8` as numbers.
pub fn parse_cpu_list(text: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<u16>().ok()),
        }
    }
    out
}

/// One line of a blkio statistics file: `8:0 Read 4096`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

/// One container's cgroup, on whichever version the host has.
pub trait Cgroup: Send + Sync {
    /// Creates the cgroup (and missing parents). Creating one that exists is not an error.
    fn create(&self) -> Result<()>;
    fn apply(&self, r: &Resources) -> Result<()>;
    /// Moves another process in (slow on v1: the kernel takes a global lock and waits an
    /// RCU grace period; a child about to exec should use `enter`).
    fn add_process(&self, pid: i32) -> Result<()>;
    /// Moves the calling process, which must be single-threaded (a freshly forked
    /// child), into the cgroup.
    fn enter(&self) -> Result<()>;
    fn processes(&self) -> Result<Vec<i32>>;
    fn stats(&self) -> Result<Stats>;
    fn freeze(&self, frozen: bool) -> Result<()>;
    /// The freezer file that says the cgroup is frozen (or freezing, by itself or through
    /// an ancestor), or None if it is thawed or does not exist. A process moved into a
    /// frozen cgroup stops there (in D state on v1) until someone thaws it.
    fn frozen(&self) -> Result<Option<PathBuf>>;
    /// Removes the cgroup; it must hold no process. Removing one that is gone is not an error.
    fn destroy(&self) -> Result<()>;
    /// The path, relative to each hierarchy's mount, shown to users and in state.
    fn path(&self) -> &Path;
    /// An existing cgroup below this one for one process (`exec --cgroup`, runc's
    /// SubCgroupPaths): `("", PATH)` below every controller's directory, or
    /// `(CONTROLLER, PATH)` below that controller's (v1 only).
    fn sub(&self, subs: &[(String, String)]) -> Result<Box<dyn Cgroup>>;
}

/// The directory of `add` below `base`: relative (a leading `/` is `base` itself), never
/// above it, and existing, as runc's exec requires; the errors are runc's words (its
/// exec.bats matches them).
pub(crate) fn sub_dir(base: &Path, add: &str) -> Result<PathBuf> {
    let rel = Path::new(add);
    if rel.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(CgroupError::Unsupported(format!("{add} is not a sub cgroup path")));
    }
    let dir = base.join(rel.strip_prefix("/").unwrap_or(rel));
    if !dir.is_dir() {
        return Err(CgroupError::Unsupported(format!(
            "adding pid to cgroups: open {}: no such file or directory",
            dir.join("cgroup.procs").display()
        )));
    }
    Ok(dir)
}

/// Which cgroup versions the host mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// A pure cgroup2 host: one mount holding every controller.
    Unified { mount: PathBuf },
    /// Controllers on v1 mounts; on a hybrid host, `hybrid` is its cgroup2 mount (where the
    /// controllers v1 lacks, such as hugetlb here, may live).
    Legacy { mounts: Vec<(String, PathBuf)>, hybrid: Option<PathBuf> },
}

/// Reads /proc/self/mountinfo: v1 if cpu, memory or pids is on a v1 mount, else v2.
pub fn detect() -> Result<Hierarchy> {
    let mounts = crate::sys::mountinfo::read().map_err(io_err("read", Path::new("/proc/self/mountinfo")))?;
    let mut unified = None;
    let mut legacy = Vec::new();
    for m in mounts {
        let mount = &m.mount_point;
        match m.fstype.as_str() {
            "cgroup2" => unified = unified.or(Some(mount.clone())),
            "cgroup" => {
                for opt in m.super_options.split(',') {
                    if matches!(
                        opt,
                        "cpu"
                            | "cpuacct"
                            | "cpuset"
                            | "memory"
                            | "pids"
                            | "freezer"
                            | "devices"
                            | "blkio"
                            | "hugetlb"
                            | "net_cls"
                            | "net_prio"
                            | "rdma"
                    ) {
                        legacy.push((opt.to_string(), PathBuf::from(mount)));
                    }
                }
            }
            _ => {}
        }
    }
    if legacy.iter().any(|(c, _)| matches!(c.as_str(), "cpu" | "memory" | "pids")) {
        return Ok(Hierarchy::Legacy { mounts: legacy, hybrid: unified });
    }
    unified.map(|mount| Hierarchy::Unified { mount }).ok_or_else(|| CgroupError::NoController("cpu or memory".into()))
}

/// This process's own cgroup for each v1 controller (`"memory" -> "/a/b"`), and for v2
/// under the key "". On v2, the leaf our processes were moved to (`v2::EVACUATED`) counts
/// as the cgroup it was made in.
pub fn own_cgroups() -> Result<Vec<(String, PathBuf)>> {
    let path = Path::new("/proc/self/cgroup");
    let text = fs::read_to_string(path).map_err(io_err("read", path))?;
    Ok(parse_own(&text))
}

fn parse_own(text: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, cgroup) = (parts.next(), parts.next().unwrap_or_default(), parts.next().unwrap_or("/"));
        let mut cgroup = PathBuf::from(cgroup);
        if controllers.is_empty() && cgroup.file_name().is_some_and(|n| n == v2::EVACUATED) {
            cgroup.pop();
        }
        for c in controllers.split(',') {
            out.push((c.to_string(), cgroup.clone()));
        }
    }
    out
}

/// Checks a cgroup name given by a user or a spec: relative, no `..`, tame characters.
pub fn validate_name(name: &str) -> Result<PathBuf> {
    let trimmed = name.trim_start_matches('/');
    let ok = !trimmed.is_empty()
        && trimmed.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        });
    if ok { Ok(PathBuf::from(trimmed)) } else { Err(CgroupError::BadName(name.to_string())) }
}

/// The container cgroup `name` beneath `parent` (relative to our own cgroup; default
/// "nodectl"), for the host's hierarchy; an absolute `name` ignores the parent and is
/// taken from each hierarchy's root.
pub fn open(name: &str, parent: Option<&str>) -> Result<Box<dyn Cgroup>> {
    let absolute = name.starts_with('/');
    let (rel, own) = if absolute {
        // No own cgroups: the drivers start from the root of each hierarchy.
        (validate_name(name)?, Vec::new())
    } else {
        (validate_name(parent.unwrap_or("nodectl"))?.join(validate_name(name)?), own_cgroups()?)
    };
    Ok(match detect()? {
        Hierarchy::Unified { mount } => Box::new(V2::new(&mount, &own, &rel, !absolute)),
        Hierarchy::Legacy { mounts, hybrid } => {
            let hybrid = hybrid.map(|mount| V2::new(&mount, &own, &rel, !absolute));
            Box::new(V1::new(&mounts, &own, &rel).with_hybrid(hybrid))
        }
    })
}

/// Removes the (empty) parent cgroup `parent` from every hierarchy, as when the last pod of
/// a parent is gone. Not there is not an error; still holding children is.
pub fn remove_parent(parent: &str) -> Result<()> {
    let rel = validate_name(parent)?;
    let own = own_cgroups()?;
    let dirs: Vec<PathBuf> = match detect()? {
        Hierarchy::Unified { mount } => vec![V2::new(&mount, &own, &rel, true).dir().to_path_buf()],
        Hierarchy::Legacy { mounts, hybrid } => {
            let mut dirs: Vec<PathBuf> = V1::new(&mounts, &own, &rel).dirs().map(Path::to_path_buf).collect();
            dirs.extend(hybrid.map(|mount| V2::new(&mount, &own, &rel, true).dir().to_path_buf()));
            dirs
        }
    };
    // With what is below it: v2's evacuated leaf, and the cgroup of a container whose
    // creation was cut short (its monitor killed) and that no runtime record names. One
    // hierarchy that refuses does not keep the others' directories: the first error is
    // reported after all were tried.
    let mut first_error = None;
    for d in dirs {
        if let Err(e) = remove_tree(&d) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// v1 shares to v2 weight, the mapping runc and crun use: 2..262144 onto 1..10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(io_err("write", path))
}

pub(crate) fn read_u64(path: &Path) -> Result<u64> {
    let s = fs::read_to_string(path).map_err(io_err("read", path))?;
    s.trim().parse().map_err(|_| CgroupError::Parse { file: path.to_path_buf(), content: s.trim().to_string() })
}

/// A `key value` line from files such as memory.events or memory.oom_control.
pub(crate) fn read_keyed(path: &Path, key: &str) -> Result<Option<u64>> {
    let s = fs::read_to_string(path).map_err(io_err("read", path))?;
    Ok(s.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())))
}

/// Every `key value` line of a file such as memory.stat or cpu.stat.
pub(crate) fn read_all_keyed(path: &Path) -> Result<std::collections::BTreeMap<String, u64>> {
    let s = fs::read_to_string(path).map_err(io_err("read", path))?;
    Ok(s.lines()
        .filter_map(|l| l.split_once(' ').and_then(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?))))
        .collect())
}

/// v1 blkio.weight (10..1000) to v2 io.weight (1..10000), as runc maps it.
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + (u64::from(weight.clamp(10, 1000)) - 10) * 9999 / 990
}

pub(crate) fn read_pids(path: &Path) -> Result<Vec<i32>> {
    let s = fs::read_to_string(path).map_err(io_err("read", path))?;
    Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// The pids in a cgroup and in every cgroup below it (a container may make sub-cgroups of
/// its own and move processes there, as runc's GetAllPids allows for).
pub(crate) fn read_pids_tree(dir: &Path) -> Result<Vec<i32>> {
    let mut pids = read_pids(&dir.join("cgroup.procs"))?;
    for entry in fs::read_dir(dir).map_err(io_err("read", dir))?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            // A sub-cgroup removed meanwhile holds no one.
            pids.extend(read_pids_tree(&entry.path()).unwrap_or_default());
        }
    }
    Ok(pids)
}

/// Removes a cgroup and every cgroup below it, deepest first: rmdir of a cgroup with
/// children is EBUSY, and a container may have made some (runc's delete.bats "delete
/// --force in cgroupv1 with subcgroups").
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    match fs::read_dir(path) {
        Ok(entries) => {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&entry.path())?;
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("read", path)(e)),
    }
    remove_dir(path)
}

/// rmdir with retries: a cgroup is busy for a moment after its last process exits.
pub(crate) fn remove_dir(path: &Path) -> Result<()> {
    for attempt in 0..50 {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 49 => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => return Err(io_err("remove", path)(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(validate_name("/pods/abc").unwrap(), PathBuf::from("pods/abc"));
        for bad in ["", "/", "a/../b", "a//b", "a b", "../x"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_v2_leaf_our_processes_were_moved_to_is_not_taken_for_our_cgroup() {
        let own = parse_own("4:memory:/a/b\n0::/system.slice/nodectl.service/nodectl-init\n");
        assert_eq!(
            own,
            [
                ("memory".to_string(), PathBuf::from("/a/b")),
                (String::new(), PathBuf::from("/system.slice/nodectl.service"))
            ]
        );
        // Only our own leaf's name, and only on v2.
        let own = parse_own("4:memory:/a/nodectl-init\n0::/x/init\n");
        assert_eq!(own[0].1, PathBuf::from("/a/nodectl-init"));
        assert_eq!(own[1].1, PathBuf::from("/x/init"));
    }

    #[test]
    fn shares_map_to_weights_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
