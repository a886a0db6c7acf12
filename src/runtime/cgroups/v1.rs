//! The v1 driver: one directory per controller, each beneath this process's own cgroup in
//! that controller's hierarchy.

use std::fs;
use std::path::{Path, PathBuf};

use super::{
    Cgroup, CgroupError, IoEntry, MemoryCounters, Resources, Result, Stats, V2, io_err, parse_cpu_list, rdma_line,
    read_all_keyed, read_keyed, read_pids_tree, read_u64, remove_tree, sub_dir, write,
};

/// The controllers this driver manages, where the host mounts them.
const CONTROLLERS: [&str; 12] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "devices", "blkio", "hugetlb", "net_cls", "net_prio",
    "rdma",
];

/// The kernel's "no limit" for v1 memory files: the largest page-aligned i64.
const UNLIMITED: u64 = (i64::MAX as u64) & !0xfff;

#[derive(Clone)]
pub struct V1 {
    rel: PathBuf,
    /// (controller, absolute directory of the container's cgroup in its hierarchy)
    dirs: Vec<(&'static str, PathBuf)>,
    /// (controller, absolute directory of our own cgroup): where creation starts.
    bases: Vec<(&'static str, PathBuf)>,
    /// On a hybrid host, the container's cgroup in the cgroup2 hierarchy, at the same path:
    /// always joined, as runc's v1 manager joins its "" (unified) pseudo-subsystem, so
    /// /proc/PID/cgroup's `0::` line names the container too (tools and runc's tests read
    /// the container from it). Controllers are enabled on the way only when a limit needs
    /// them (`unified` files, or hugetlb where only v2 has it).
    hybrid: Option<V2>,
}

impl V1 {
    pub fn new(mounts: &[(String, PathBuf)], own: &[(String, PathBuf)], rel: &Path) -> V1 {
        let mut dirs = Vec::new();
        let mut bases = Vec::new();
        for c in CONTROLLERS {
            let Some((_, mount)) = mounts.iter().find(|(m, _)| m == c) else { continue };
            let own_path =
                own.iter().find(|(o, _)| o == c).map(|(_, p)| p.clone()).unwrap_or_else(|| PathBuf::from("/"));
            let base = mount.join(own_path.strip_prefix("/").unwrap_or(&own_path));
            dirs.push((c, base.join(rel)));
            bases.push((c, base));
        }
        V1 { rel: rel.to_path_buf(), dirs, bases, hybrid: None }
    }

    /// The hybrid host's cgroup2 side of the container's cgroup.
    pub fn with_hybrid(mut self, hybrid: Option<V2>) -> V1 {
        self.hybrid = hybrid;
        self
    }

    /// Each directory once: co-mounted controllers (net_cls,net_prio; cpu,cpuacct) share one.
    pub(super) fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs
            .iter()
            .enumerate()
            .filter(|(i, (_, d))| !self.dirs[..*i].iter().any(|(_, e)| e == d))
            .map(|(_, (_, d))| d.as_path())
    }

    /// The cgroup2 side, made and holding the container's processes: for a limit that
    /// only v2 has here.
    fn hybrid_v2(&self, what: &str) -> Result<&V2> {
        let v2 = self.hybrid.as_ref().ok_or_else(|| {
            CgroupError::Unsupported(format!("{what}: this host has no cgroup2 hierarchy (pure cgroup v1)"))
        })?;
        let existed = v2.dir().exists();
        // Even when `create` made the directory: only this enables the controllers on the
        // way down to it.
        v2.create()?;
        if !existed {
            // `update` of a running container made before the cgroup2 side was always
            // joined, or whose join failed: its processes go along.
            for pid in self.processes().unwrap_or_default() {
                // One that exited meanwhile is not an error.
                let _ = v2.add_process(pid);
            }
        }
        Ok(v2)
    }

    /// The hybrid side, if it was made.
    fn hybrid_made(&self) -> Option<&V2> {
        self.hybrid.as_ref().filter(|v2| v2.dir().exists())
    }

    fn apply_block_io(&self, r: &Resources) -> Result<()> {
        if r.blkio_weight_devices.is_empty() && r.blkio_throttles.is_empty() && r.blkio_leaf_weight.is_none() {
            return Ok(());
        }
        let dir = self.dir("blkio")?;
        // CFQ's files went with Linux 5.0; BFQ has weights (no leaf weights) under its own
        // names. runc looks for both.
        let first = |names: &[&str]| names.iter().map(|f| dir.join(f)).find(|f| f.exists());
        if let Some(w) = r.blkio_leaf_weight {
            let f = first(&["blkio.leaf_weight"]).ok_or_else(|| {
                CgroupError::Unsupported(format!(
                    "blockIO.leafWeight: {} has no blkio.leaf_weight (only the CFQ scheduler had it, gone since Linux 5.0)",
                    dir.display()
                ))
            })?;
            write(&f, &w.to_string())?;
        }
        for d in &r.blkio_weight_devices {
            if let Some(w) = d.weight {
                let f = first(&["blkio.weight_device", "blkio.bfq.weight_device"]).ok_or_else(|| {
                    CgroupError::Unsupported(format!(
                        "blockIO.weightDevice: {} has neither blkio.weight_device nor blkio.bfq.weight_device (no CFQ or BFQ I/O scheduler)",
                        dir.display()
                    ))
                })?;
                write(&f, &format!("{} {w}", d.device()))?;
            }
            if let Some(w) = d.leaf_weight {
                let f = first(&["blkio.leaf_weight_device"]).ok_or_else(|| {
                    CgroupError::Unsupported(format!(
                        "blockIO.weightDevice.leafWeight: {} has no blkio.leaf_weight_device (only CFQ had it)",
                        dir.display()
                    ))
                })?;
                write(&f, &format!("{} {w}", d.device()))?;
            }
        }
        for t in &r.blkio_throttles {
            write(&dir.join(t.kind.v1_file()), &t.v1_line())?;
        }
        Ok(())
    }

    fn apply_hugetlb(&self, r: &Resources) -> Result<()> {
        if r.hugetlb.is_empty() {
            return Ok(());
        }
        if let Ok(dir) = self.dir("hugetlb") {
            for (size, limit) in &r.hugetlb {
                let file = dir.join(format!("hugetlb.{size}.limit_in_bytes"));
                if !file.exists() {
                    return Err(CgroupError::Unsupported(format!(
                        "hugepageLimits: the host has no {size} huge pages ({} is missing)",
                        file.display()
                    )));
                }
                write(&file, &limit.to_string())?;
                // The reservation limit (Linux 5.7) too, as runc 1.1 sets it.
                let rsvd = dir.join(format!("hugetlb.{size}.rsvd.limit_in_bytes"));
                if rsvd.exists() {
                    write(&rsvd, &limit.to_string())?;
                }
            }
            return Ok(());
        }
        match &self.hybrid {
            Some(v2) if v2.has_controller("hugetlb") => self.hybrid_v2("hugepageLimits")?.apply_hugetlb(&r.hugetlb),
            Some(_) => Err(CgroupError::Unsupported(
                "hugepageLimits: no v1 hierarchy has the hugetlb controller, and the cgroup2 hierarchy does not offer it to nodectl's cgroup".into(),
            )),
            None => Err(CgroupError::Unsupported("hugepageLimits: this host has no hugetlb controller".into())),
        }
    }

    fn apply_net_and_rdma(&self, r: &Resources) -> Result<()> {
        if let Some(id) = r.net_class_id {
            write(&self.file("net_cls", "net_cls.classid")?, &id.to_string())?;
        }
        for (iface, prio) in &r.net_priorities {
            write(&self.file("net_prio", "net_prio.ifpriomap")?, &format!("{iface} {prio}"))?;
        }
        for (device, handles, objects) in &r.rdma {
            write(&self.file("rdma", "rdma.max")?, &rdma_line(device, *handles, *objects))?;
        }
        Ok(())
    }

    fn dir(&self, controller: &str) -> Result<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
            .ok_or_else(|| CgroupError::NoController(controller.to_string()))
    }

    fn file(&self, controller: &str, name: &str) -> Result<PathBuf> {
        Ok(self.dir(controller)?.join(name))
    }

    /// A new cpuset cgroup starts with no cpus and no mems, and refuses processes until it
    /// has some: give each level that has none its parent's, made by us or not (runc's
    /// cpusetEnsureParent: a parent someone made beforehand with mkdir is as empty).
    fn init_cpuset(dir: &Path) -> Result<()> {
        let parent = dir.parent().expect("below a mount");
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let current = fs::read_to_string(dir.join(f)).map_err(io_err("read", &dir.join(f)))?;
            if current.trim().is_empty() {
                let from = fs::read_to_string(parent.join(f)).map_err(io_err("read", &parent.join(f)))?;
                write(&dir.join(f), from.trim())?;
            }
        }
        Ok(())
    }
}

/// Writes two interdependent values (cfs period and quota, rt period and runtime) in an
/// order the kernel takes: the first, then the second; if the kernel refuses the first
/// (EINVAL: with the other's old value it would break a limit) and the second is to be
/// written too, the second first and the first again after it, as runc does.
fn write_pair(first: (&Path, Option<String>), second: (&Path, Option<String>)) -> Result<()> {
    let mut retry = None;
    if let Some(v) = &first.1 {
        match fs::write(first.0, v) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && second.1.is_some() => retry = Some(v),
            Err(e) => return Err(io_err("write", first.0)(e)),
        }
    }
    if let Some(v) = &second.1 {
        write(second.0, v)?;
    }
    if let Some(v) = retry {
        write(first.0, v)?;
    }
    Ok(())
}

/// A blkio statistics file: `8:0 Read 4096` lines, and a `Total` line without a device.
/// A file that is missing (no blkio hierarchy) reads as no entries.
fn read_io_entries(path: &Path) -> Vec<IoEntry> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, op, value) = (f.next()?, f.next()?, f.next()?);
            let (major, minor) = dev.split_once(':')?;
            Some(IoEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.into(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

fn limit_value(v: i64) -> String {
    if v < 0 { "-1".to_string() } else { v.to_string() }
}

impl Cgroup for V1 {
    fn create(&self) -> Result<()> {
        for (i, ((c, dir), (_, base))) in self.dirs.iter().zip(&self.bases).enumerate() {
            if self.dirs[..i].iter().any(|(_, d)| d == dir) {
                continue;
            }
            // Level by level, so each new cpuset level can be initialised from its parent.
            let mut current = base.clone();
            for part in dir.strip_prefix(base).expect("dir is below base").components() {
                current.push(part);
                match fs::create_dir(&current) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("create", &current)(e)),
                }
                if *c == "cpuset" {
                    Self::init_cpuset(&current)?;
                }
            }
        }
        if let Some(v2) = &self.hybrid {
            // Just the directories, no controllers enabled: joining needs none. Like runc,
            // a cgroup2 hierarchy we cannot write to is not an error (the container then
            // stays in our own cgroup there, where add_process and enter leave it).
            if let Err(e) = fs::create_dir_all(v2.dir()) {
                tracing::warn!("cgroup2 side of a hybrid host: creating {}: {e}", v2.dir().display());
            }
        }
        Ok(())
    }

    fn apply(&self, r: &Resources) -> Result<()> {
        if let Some(limit) = r.memory_limit {
            let limit_file = self.file("memory", "memory.limit_in_bytes")?;
            let swap_file = self.file("memory", "memory.memsw.limit_in_bytes")?;
            // memsw must stay >= limit at every moment, so the order of the two writes
            // depends on which way the limit moves. Removing the limit (-1) without a
            // swap value removes the swap limit too, as runc's setMemoryAndSwap does: the
            // old memsw would be below an unlimited limit, which the kernel refuses.
            let unlimit_swap = limit < 0 && swap_file.exists();
            let swap = r.memory_swap.or(unlimit_swap.then_some(-1)).map(limit_value);
            match (write(&limit_file, &limit_value(limit)), &swap) {
                (Ok(()), Some(s)) if swap_file.exists() => write(&swap_file, s)?,
                (Ok(()), _) => {}
                (Err(_), Some(s)) if swap_file.exists() => {
                    write(&swap_file, s)?;
                    write(&limit_file, &limit_value(limit))?;
                }
                (Err(e), _) => return Err(e),
            }
        } else if let Some(s) = r.memory_swap {
            let swap_file = self.file("memory", "memory.memsw.limit_in_bytes")?;
            if swap_file.exists() {
                write(&swap_file, &limit_value(s))?;
            }
        }
        if let Some(v) = r.memory_reservation {
            write(&self.file("memory", "memory.soft_limit_in_bytes")?, &limit_value(v))?;
        }
        if let Some(v) = r.memory_swappiness {
            if v > 100 {
                return Err(CgroupError::Unsupported(format!("memory.swappiness {v} is above 100")));
            }
            write(&self.file("memory", "memory.swappiness")?, &v.to_string())?;
        }
        if let Some(disable) = r.memory_disable_oom_killer {
            write(&self.file("memory", "memory.oom_control")?, if disable { "1" } else { "0" })?;
        }
        if r.memory_kernel.is_some() {
            // Linux 5.16 and later accept the write and ignore it; runc ignores it too.
            tracing::warn!(
                "linux.resources.memory.kernel is ignored: the kernel no longer limits kernel memory separately"
            );
        }
        if let Some(v) = r.memory_kernel_tcp {
            write(&self.file("memory", "memory.kmem.tcp.limit_in_bytes")?, &limit_value(v))?;
        }
        write_pair(
            (&self.file("cpu", "cpu.cfs_period_us")?, r.cpu_period.map(|p| p.to_string())),
            (&self.file("cpu", "cpu.cfs_quota_us")?, r.cpu_quota.map(limit_value)),
        )?;
        if r.cpu_rt_period.is_some() || r.cpu_rt_runtime.is_some() {
            write_pair(
                (&self.file("cpu", "cpu.rt_period_us")?, r.cpu_rt_period.map(|p| p.to_string())),
                (&self.file("cpu", "cpu.rt_runtime_us")?, r.cpu_rt_runtime.map(|v| v.to_string())),
            )?;
        }
        if let Some(s) = r.cpu_shares {
            write(&self.file("cpu", "cpu.shares")?, &s.to_string())?;
        }
        if let Some(c) = &r.cpuset_cpus {
            write(&self.file("cpuset", "cpuset.cpus")?, c)?;
        }
        if let Some(m) = &r.cpuset_mems {
            write(&self.file("cpuset", "cpuset.mems")?, m)?;
        }
        if let Some(p) = r.pids_limit {
            write(&self.file("pids", "pids.max")?, &if p > 0 { p.to_string() } else { "max".to_string() })?;
        }
        if let Some(w) = r.blkio_weight {
            // CFQ's blkio.weight went with Linux 5.0; BFQ has its own file (runc looks
            // for both too).
            let dir = self.dir("blkio")?;
            let file = ["blkio.weight", "blkio.bfq.weight"].iter().map(|f| dir.join(f)).find(|f| f.exists());
            match file {
                Some(f) => write(&f, &w.to_string())?,
                None => {
                    return Err(CgroupError::Unsupported(format!(
                        "{}: neither blkio.weight nor blkio.bfq.weight exists (no CFQ or BFQ I/O scheduler)",
                        dir.display()
                    )));
                }
            }
        }
        self.apply_block_io(r)?;
        self.apply_hugetlb(r)?;
        self.apply_net_and_rdma(r)?;
        if !r.unified.is_empty() {
            // The keys were checked with the spec; apply_unified checks them again.
            self.hybrid_v2("unified")?.apply_unified(&r.unified)?;
        }
        for rule in &r.devices {
            let file = if rule.allow { "devices.allow" } else { "devices.deny" };
            if let Some(line) = rule.v1_line() {
                write(&self.file("devices", file)?, &line)?;
            }
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        for dir in self.dirs() {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        if let Some(v2) = self.hybrid_made() {
            v2.add_process(pid)?;
        }
        Ok(())
    }

    fn enter(&self) -> Result<()> {
        // "0" in `tasks` moves only the calling thread, which the kernel (since 6.0) does
        // without the global threadgroup lock and its RCU grace period: a pid written to
        // cgroup.procs costs 5-30 ms on the first hierarchy here, this 0.3 ms. The caller
        // is single-threaded, so the thread is the whole process.
        for dir in self.dirs() {
            write(&dir.join("tasks"), "0")?;
        }
        if let Some(v2) = self.hybrid_made() {
            v2.enter()?;
        }
        Ok(())
    }

    fn processes(&self) -> Result<Vec<i32>> {
        let (_, dir) = self.dirs.first().ok_or_else(|| CgroupError::NoController("any".into()))?;
        read_pids_tree(dir)
    }

    fn stats(&self) -> Result<Stats> {
        let mem = |f: &str| self.file("memory", f);
        let limit = read_u64(&mem("memory.limit_in_bytes")?)?;
        let raw = read_all_keyed(&mem("memory.stat")?)?;
        // cpuacct.stat counts in USER_HZ ticks, 100 a second on Linux.
        let ticks = read_all_keyed(&self.file("cpuacct", "cpuacct.stat")?)?;
        let throttling = read_all_keyed(&self.file("cpu", "cpu.stat")?)?;
        let percpu = fs::read_to_string(self.file("cpuacct", "cpuacct.usage_percpu")?).unwrap_or_default();
        // Swap is accounted only with swapaccount=1.
        let swap = |f: &str| -> Result<Option<u64>> {
            let path = mem(&format!("memory.memsw.{f}"))?;
            if path.exists() { read_u64(&path).map(Some) } else { Ok(None) }
        };
        let pids_max = fs::read_to_string(self.file("pids", "pids.max")?).unwrap_or_default();
        let blkio = |f: &str| self.file("blkio", f).map(|p| read_io_entries(&p)).unwrap_or_default();
        let numbers = |c: &str, f: &str| -> Vec<u64> {
            let text = self.file(c, f).ok().and_then(|p| fs::read_to_string(p).ok()).unwrap_or_default();
            text.split_whitespace().filter_map(|v| v.parse().ok()).collect()
        };
        // Files that are missing (kmem accounting off) read as zeros, as in runc.
        let counters = |prefix: &str| -> MemoryCounters {
            let n = |f: &str| numbers("memory", &format!("{prefix}{f}")).first().copied().unwrap_or(0);
            let limit = n("limit_in_bytes");
            MemoryCounters {
                usage: n("usage_in_bytes"),
                max: n("max_usage_in_bytes"),
                limit: (limit != 0 && limit < UNLIMITED).then_some(limit),
                failcnt: n("failcnt"),
            }
        };
        let cpuset_text =
            |f: &str| self.file("cpuset", f).ok().and_then(|p| fs::read_to_string(p).ok()).unwrap_or_default();
        let cpuset_flags = [
            "cpu_exclusive",
            "mem_hardwall",
            "mem_exclusive",
            "memory_migrate",
            "memory_spread_page",
            "memory_spread_slab",
            "memory_pressure",
            "sched_load_balance",
            "sched_relax_domain_level",
        ]
        .into_iter()
        .filter_map(|f| Some((f.to_string(), cpuset_text(&format!("cpuset.{f}")).trim().parse().ok()?)))
        .collect();
        Ok(Stats {
            cpu_usage_ns: read_u64(&self.file("cpuacct", "cpuacct.usage")?)?,
            cpu_percpu_ns: percpu.split_whitespace().filter_map(|v| v.parse().ok()).collect(),
            cpu_percpu_kernel_ns: numbers("cpuacct", "cpuacct.usage_percpu_sys"),
            cpu_percpu_user_ns: numbers("cpuacct", "cpuacct.usage_percpu_user"),
            cpu_user_ns: ticks.get("user").copied().unwrap_or(0) * 10_000_000,
            cpu_kernel_ns: ticks.get("system").copied().unwrap_or(0) * 10_000_000,
            cpu_periods: throttling.get("nr_periods").copied().unwrap_or(0),
            cpu_throttled_periods: throttling.get("nr_throttled").copied().unwrap_or(0),
            cpu_throttled_ns: throttling.get("throttled_time").copied().unwrap_or(0),
            memory_current: read_u64(&mem("memory.usage_in_bytes")?)?,
            memory_peak: read_u64(&mem("memory.max_usage_in_bytes")?)?,
            memory_limit: (limit < UNLIMITED).then_some(limit),
            memory_failcnt: read_u64(&mem("memory.failcnt")?)?,
            memory_cache: raw.get("total_cache").or(raw.get("cache")).copied().unwrap_or(0),
            swap_current: swap("usage_in_bytes")?.unwrap_or(0),
            swap_peak: swap("max_usage_in_bytes")?.unwrap_or(0),
            swap_limit: swap("limit_in_bytes")?.filter(|l| *l < UNLIMITED),
            swap_failcnt: swap("failcnt")?.unwrap_or(0),
            kernel: counters("memory.kmem."),
            kernel_tcp: counters("memory.kmem.tcp."),
            memory_raw: raw,
            oom_kills: read_keyed(&mem("memory.oom_control")?, "oom_kill")?.unwrap_or(0),
            pids_current: read_u64(&self.file("pids", "pids.current")?)?,
            pids_limit: pids_max.trim().parse().ok(),
            cpuset_cpus: parse_cpu_list(&cpuset_text("cpuset.cpus")),
            cpuset_mems: parse_cpu_list(&cpuset_text("cpuset.mems")),
            cpuset_flags,
            io_service_bytes: blkio("blkio.throttle.io_service_bytes_recursive"),
            io_serviced: blkio("blkio.throttle.io_serviced_recursive"),
        })
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        let state = self.file("freezer", "freezer.state")?;
        let want = if frozen { "FROZEN" } else { "THAWED" };
        // FREEZING is transient; the kernel finishes it asynchronously.
        for _ in 0..1000 {
            write(&state, want)?;
            let now = fs::read_to_string(&state).map_err(io_err("read", &state))?;
            if now.trim() == want {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(CgroupError::Unsupported(format!("{} did not become {want}", state.display())))
    }

    fn frozen(&self) -> Result<Option<PathBuf>> {
        // No freezer hierarchy: nothing can be frozen.
        let Ok(state) = self.file("freezer", "freezer.state") else { return Ok(None) };
        match fs::read_to_string(&state) {
            // freezer.state shows an ancestor's freeze too; FREEZING will become FROZEN.
            Ok(s) if matches!(s.trim(), "FROZEN" | "FREEZING") => Ok(Some(state)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &state)(e)),
        }
    }

    fn destroy(&self) -> Result<()> {
        for (_, dir) in &self.dirs {
            remove_tree(dir)?;
        }
        if let Some(v2) = &self.hybrid {
            v2.destroy()?;
        }
        Ok(())
    }

    fn sub(&self, subs: &[(String, String)]) -> Result<Box<dyn Cgroup>> {
        let mut sub = self.clone();
        for (controller, add) in subs {
            if controller.is_empty() {
                for (_, dir) in &mut sub.dirs {
                    *dir = sub_dir(dir, add)?;
                }
                continue;
            }
            let Some((_, own)) = self.dirs.iter().find(|(c, _)| c == controller) else {
                return Err(CgroupError::Unsupported(format!("unknown controller {controller} in SubCgroupPaths")));
            };
            let dir = sub_dir(own, add)?;
            // Co-mounted controllers (cpu,cpuacct) share the directory: all of them move,
            // or entering the others would move the process back.
            for (_, d) in sub.dirs.iter_mut().filter(|(_, d)| d == own) {
                *d = dir.clone();
            }
        }
        Ok(Box::new(sub))
    }

    fn path(&self) -> &Path {
        &self.rel
    }
}
