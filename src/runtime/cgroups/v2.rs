//! The v2 driver: one directory in the unified hierarchy.
//!
//! v2 forbids processes in a cgroup whose children have domain controllers enabled (the
//! no-internal-processes rule). Our own cgroup holds us, so before enabling controllers for
//! its subtree we move every process in it to a leaf beside the containers' parent, as
//! systemd, k3s and podman do when they nest. The leaf has a name of our own
//! (`EVACUATED`), so that `own_cgroups` can still tell our cgroup from it afterwards: every
//! later nodectl process starts in that leaf, and must not take it for its own cgroup
//! (containers would land below it, and records made before would point elsewhere).

use std::fs;
use std::path::{Path, PathBuf};

use super::{
    Cgroup, CgroupError, Resources, Result, Stats, blkio_weight_to_io_weight, check_unified_key, io_err, rdma_line,
    read_all_keyed, read_keyed, read_pids, read_pids_tree, read_u64, remove_tree, shares_to_weight, sub_dir, write,
};

const WANTED: [&str; 7] = ["cpu", "cpuset", "memory", "pids", "io", "hugetlb", "rdma"];

/// The leaf our cgroup's own processes are moved to (see the module comment).
pub const EVACUATED: &str = "nodectl-init";

#[derive(Clone)]
pub struct V2 {
    rel: PathBuf,
    base: PathBuf,
    dir: PathBuf,
    /// Whether processes on the way from `base` (our own cgroup) may be moved aside; not
    /// when `rel` is taken from the root, where they are anyone's.
    evacuate_base: bool,
}

impl V2 {
    pub fn new(mount: &Path, own: &[(String, PathBuf)], rel: &Path, evacuate_base: bool) -> V2 {
        let own_path =
            own.iter().find(|(c, _)| c.is_empty()).map(|(_, p)| p.clone()).unwrap_or_else(|| PathBuf::from("/"));
        let base = mount.join(own_path.strip_prefix("/").unwrap_or(&own_path));
        V2 { rel: rel.to_path_buf(), dir: base.join(rel), base, evacuate_base }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether the hierarchy offers `controller` to our own cgroup's children.
    pub(super) fn has_controller(&self, controller: &str) -> bool {
        fs::read_to_string(self.base.join("cgroup.controllers"))
            .is_ok_and(|s| s.split_whitespace().any(|c| c == controller))
    }

    pub(super) fn apply_hugetlb(&self, limits: &[(String, u64)]) -> Result<()> {
        for (size, limit) in limits {
            let file = self.file(&format!("hugetlb.{size}.max"));
            if !file.exists() {
                return Err(CgroupError::Unsupported(format!(
                    "hugepageLimits: the host has no {size} huge pages or no hugetlb controller ({} is missing)",
                    file.display()
                )));
            }
            write(&file, &limit.to_string())?;
            // The reservation limit (Linux 5.7) too, as runc 1.1 sets it.
            let rsvd = self.file(&format!("hugetlb.{size}.rsvd.max"));
            if rsvd.exists() {
                write(&rsvd, &limit.to_string())?;
            }
        }
        Ok(())
    }

    /// Raw v2 files, after the typed settings (so a unified value wins, as with runc).
    pub(super) fn apply_unified(&self, files: &[(String, String)]) -> Result<()> {
        for (key, value) in files {
            check_unified_key(key)?;
            let file = self.file(key);
            if !file.exists() {
                let controller = key.split('.').next().unwrap_or_default();
                return Err(CgroupError::Unsupported(format!(
                    "unified: {key}: no such file in {} (is the {controller} controller enabled on this host?)",
                    self.dir.display()
                )));
            }
            write(&file, value)?;
        }
        Ok(())
    }

    /// Replaces the device filter we attached (if any) with one for `rules`: the new one is
    /// attached before the old goes, so no access slips through between the two.
    fn apply_devices(&self, rules: &[super::DeviceRule]) -> Result<()> {
        use std::os::fd::AsFd;
        let dir = fs::File::open(&self.dir).map_err(io_err("open", &self.dir))?;
        let bpf_err = |op: &'static str| {
            let dir = self.dir.clone();
            move |e: std::io::Error| CgroupError::Io { op, path: dir, source: e }
        };
        let old = crate::sys::bpf::attached_device_programs(dir.as_fd()).map_err(bpf_err("list device filters of"))?;
        let prog = crate::sys::bpf::load_device_program(&super::device_filter::program(rules))
            .map_err(bpf_err("load the device filter for"))?;
        crate::sys::bpf::attach_device_program(dir.as_fd(), prog.as_fd())
            .map_err(bpf_err("attach the device filter to"))?;
        for id in old {
            crate::sys::bpf::detach_device_program(dir.as_fd(), id)
                .map_err(bpf_err("detach an old device filter from"))?;
        }
        Ok(())
    }

    fn apply_block_io(&self, r: &Resources) -> Result<()> {
        if r.blkio_leaf_weight.is_some() || r.blkio_weight_devices.iter().any(|d| d.leaf_weight.is_some()) {
            return Err(CgroupError::Unsupported("blockIO.leafWeight: cgroup v2 has no leaf weights".into()));
        }
        for d in &r.blkio_weight_devices {
            let Some(w) = d.weight else { continue };
            // BFQ takes blkio's scale per device; io.cost's io.weight its own.
            if self.file("io.bfq.weight").exists() {
                write(&self.file("io.bfq.weight"), &format!("{} {w}", d.device()))?;
            } else {
                write(&self.file("io.weight"), &format!("{} {}", d.device(), blkio_weight_to_io_weight(w)))?;
            }
        }
        for t in &r.blkio_throttles {
            write(&self.file("io.max"), &t.v2_line())?;
        }
        Ok(())
    }

    /// Enables the controllers we use in `dir`'s subtree, evacuating `dir`'s own processes
    /// to `dir/EVACUATED` first (if `evacuate`) when the kernel says it is busy with them.
    fn enable_controllers(dir: &Path, evacuate: bool) -> Result<()> {
        let available = fs::read_to_string(dir.join("cgroup.controllers"))
            .map_err(io_err("read", &dir.join("cgroup.controllers")))?;
        let wanted: Vec<String> =
            WANTED.iter().filter(|c| available.split_whitespace().any(|a| a == **c)).map(|c| format!("+{c}")).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let control = dir.join("cgroup.subtree_control");
        match fs::write(&control, wanted.join(" ")) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && evacuate => {
                let init = dir.join(EVACUATED);
                match fs::create_dir(&init) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("create", &init)(e)),
                }
                for pid in read_pids(&dir.join("cgroup.procs"))? {
                    // A process that exited meanwhile is not an error.
                    let _ = fs::write(init.join("cgroup.procs"), pid.to_string());
                }
                fs::write(&control, wanted.join(" ")).map_err(io_err("write", &control))
            }
            Err(e) => Err(io_err("write", &control)(e)),
        }
    }
}

impl Cgroup for V2 {
    fn create(&self) -> Result<()> {
        let mut current = self.base.clone();
        for part in self.rel.components() {
            Self::enable_controllers(&current, self.evacuate_base)?;
            current.push(part);
            match fs::create_dir(&current) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create", &current)(e)),
            }
        }
        Ok(())
    }

    fn apply(&self, r: &Resources) -> Result<()> {
        if !r.devices.is_empty() {
            self.apply_devices(&r.devices)?;
        }
        let max = |v: i64| if v < 0 { "max".to_string() } else { v.to_string() };
        if let Some(limit) = r.memory_limit {
            write(&self.file("memory.max"), &max(limit))?;
        }
        // The OCI spec's swap is memory plus swap; v2's swap.max is swap alone.
        if let (Some(swap), true) = (r.memory_swap, self.file("memory.swap.max").exists()) {
            let value = match (swap, r.memory_limit) {
                (s, _) if s < 0 => "max".to_string(),
                (s, Some(l)) if l >= 0 => (s - l).max(0).to_string(),
                (s, _) => s.to_string(),
            };
            write(&self.file("memory.swap.max"), &value)?;
        }
        if let Some(v) = r.memory_reservation {
            // -1 (none) is no protection, not "max".
            write(&self.file("memory.low"), &v.max(0).to_string())?;
        }
        // v2 has none of these; runc and crun pass over them too, so a spec written for v1
        // still runs.
        if r.memory_swappiness.is_some()
            || r.memory_disable_oom_killer == Some(true)
            || r.memory_kernel.is_some()
            || r.memory_kernel_tcp.is_some()
        {
            tracing::warn!("cgroup v2: memory swappiness, disableOOMKiller and kernel limits do not exist; ignored");
        }
        if r.cpu_quota.is_some() || r.cpu_period.is_some() {
            let current = fs::read_to_string(self.file("cpu.max")).map_err(io_err("read", &self.file("cpu.max")))?;
            let mut parts = current.split_whitespace();
            let (old_quota, old_period) =
                (parts.next().unwrap_or("max").to_string(), parts.next().unwrap_or("100000").to_string());
            let quota = r.cpu_quota.map(max).unwrap_or(old_quota);
            let period = r.cpu_period.map(|p| p.to_string()).unwrap_or(old_period);
            write(&self.file("cpu.max"), &format!("{quota} {period}"))?;
        }
        if let Some(s) = r.cpu_shares {
            write(&self.file("cpu.weight"), &shares_to_weight(s).to_string())?;
        }
        if r.cpu_rt_period.is_some() || r.cpu_rt_runtime.is_some() {
            // Refused, not dropped: the container must not run believing it has an RT budget.
            return Err(CgroupError::Unsupported("cgroup v2 has no real-time period or runtime".into()));
        }
        if let Some(w) = r.blkio_weight {
            // BFQ's io.bfq.weight takes blkio's own scale; io.weight (io.cost) its own.
            if self.file("io.bfq.weight").exists() {
                write(&self.file("io.bfq.weight"), &w.to_string())?;
            } else {
                write(&self.file("io.weight"), &blkio_weight_to_io_weight(w).to_string())?;
            }
        }
        if let Some(c) = &r.cpuset_cpus {
            write(&self.file("cpuset.cpus"), c)?;
        }
        if let Some(m) = &r.cpuset_mems {
            write(&self.file("cpuset.mems"), m)?;
        }
        if let Some(p) = r.pids_limit {
            write(&self.file("pids.max"), &if p > 0 { p.to_string() } else { "max".to_string() })?;
        }
        self.apply_block_io(r)?;
        self.apply_hugetlb(&r.hugetlb)?;
        if r.net_class_id.is_some() || !r.net_priorities.is_empty() {
            // Refused, not dropped: v2 classifies and prioritises traffic with eBPF, not
            // with these controllers.
            return Err(CgroupError::Unsupported(
                "network: cgroup v2 has no net_cls or net_prio controller (classID and priorities are v1 only)".into(),
            ));
        }
        for (device, handles, objects) in &r.rdma {
            let file = self.file("rdma.max");
            if !file.exists() {
                return Err(CgroupError::Unsupported(format!(
                    "rdma: {} is missing (no rdma controller on this host)",
                    file.display()
                )));
            }
            write(&file, &rdma_line(device, *handles, *objects))?;
        }
        self.apply_unified(&r.unified)?;
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        write(&self.file("cgroup.procs"), &pid.to_string())
    }

    fn enter(&self) -> Result<()> {
        // v2 has no per-thread move for a domain cgroup (cgroup.threads is for threaded
        // ones); clone3's CLONE_INTO_CGROUP would avoid the write altogether.
        write(&self.file("cgroup.procs"), "0")
    }

    fn processes(&self) -> Result<Vec<i32>> {
        read_pids_tree(&self.dir)
    }

    fn stats(&self) -> Result<Stats> {
        let max = fs::read_to_string(self.file("memory.max")).map_err(io_err("read", &self.file("memory.max")))?;
        let cpu = read_all_keyed(&self.file("cpu.stat"))?;
        let raw = read_all_keyed(&self.file("memory.stat"))?;
        let events = read_all_keyed(&self.file("memory.events"))?;
        let optional = |f: &str| fs::read_to_string(self.file(f)).ok().and_then(|s| s.trim().parse::<u64>().ok());
        let usec = |k: &str| cpu.get(k).copied().unwrap_or(0) * 1000;
        Ok(Stats {
            cpu_usage_ns: usec("usage_usec"),
            cpu_user_ns: usec("user_usec"),
            cpu_kernel_ns: usec("system_usec"),
            cpu_periods: cpu.get("nr_periods").copied().unwrap_or(0),
            cpu_throttled_periods: cpu.get("nr_throttled").copied().unwrap_or(0),
            cpu_throttled_ns: usec("throttled_usec"),
            memory_failcnt: events.get("max").copied().unwrap_or(0),
            memory_cache: raw.get("file").copied().unwrap_or(0),
            swap_current: optional("memory.swap.current").unwrap_or(0),
            swap_peak: optional("memory.swap.peak").unwrap_or(0),
            swap_limit: optional("memory.swap.max"),
            swap_failcnt: read_keyed(&self.file("memory.swap.events"), "max").ok().flatten().unwrap_or(0),
            memory_raw: raw,
            pids_limit: optional("pids.max"),
            memory_current: read_u64(&self.file("memory.current"))?,
            // memory.peak exists from Linux 5.19.
            memory_peak: if self.file("memory.peak").exists() { read_u64(&self.file("memory.peak"))? } else { 0 },
            memory_limit: max.trim().parse().ok(),
            oom_kills: read_keyed(&self.file("memory.events"), "oom_kill")?.unwrap_or(0),
            pids_current: read_u64(&self.file("pids.current"))?,
            ..Default::default()
        })
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        write(&self.file("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        let want = u64::from(frozen);
        for _ in 0..1000 {
            if read_keyed(&self.file("cgroup.events"), "frozen")? == Some(want) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(CgroupError::Unsupported(format!("{} did not reach frozen={want}", self.dir.display())))
    }

    fn frozen(&self) -> Result<Option<PathBuf>> {
        let (freeze, events) = (self.file("cgroup.freeze"), self.file("cgroup.events"));
        if !self.dir.exists() {
            return Ok(None);
        }
        // cgroup.freeze is this cgroup's own request (it may not have taken effect yet);
        // cgroup.events' `frozen` is the effective state, an ancestor's freeze included.
        let asked = freeze.exists() && read_u64(&freeze)? == 1;
        if asked {
            return Ok(Some(freeze));
        }
        if events.exists() && read_keyed(&events, "frozen")? == Some(1) {
            return Ok(Some(events));
        }
        Ok(None)
    }

    fn destroy(&self) -> Result<()> {
        remove_tree(&self.dir)
    }

    fn sub(&self, subs: &[(String, String)]) -> Result<Box<dyn Cgroup>> {
        let mut sub = self.clone();
        for (controller, add) in subs {
            // One hierarchy: a controller's own path is not a thing on v2 (runc's error).
            if !controller.is_empty() {
                return Err(CgroupError::Unsupported(format!("unknown controller {controller} in SubCgroupPaths")));
            }
            sub.dir = sub_dir(&self.dir, add)?;
        }
        Ok(Box::new(sub))
    }

    fn path(&self) -> &Path {
        &self.rel
    }
}
