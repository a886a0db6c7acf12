//! The v1 driver: one directory per controller, each beneath this process's own cgroup in
//! that controller's hierarchy.

use std::fs;
use std::path::{Path, PathBuf};

use super::{
    Cgroup, CgroupError, Resources, Result, Stats, io_err, read_keyed, read_pids_tree, read_u64, remove_tree, write,
};

/// The controllers this driver manages.
const CONTROLLERS: [&str; 7] = ["cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "devices"];

pub struct V1 {
    rel: PathBuf,
    /// (controller, absolute directory of the container's cgroup in its hierarchy)
    dirs: Vec<(&'static str, PathBuf)>,
    /// (controller, absolute directory of our own cgroup): where creation starts.
    bases: Vec<(&'static str, PathBuf)>,
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
        V1 { rel: rel.to_path_buf(), dirs, bases }
    }

    pub(super) fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|(_, d)| d.as_path())
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
    /// has some: give each new level its parent's.
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

fn limit_value(v: i64) -> String {
    if v < 0 { "-1".to_string() } else { v.to_string() }
}

impl Cgroup for V1 {
    fn create(&self) -> Result<()> {
        for ((c, dir), (_, base)) in self.dirs.iter().zip(&self.bases) {
            // Level by level, so each new cpuset level can be initialised from its parent.
            let mut current = base.clone();
            for part in dir.strip_prefix(base).expect("dir is below base").components() {
                current.push(part);
                match fs::create_dir(&current) {
                    Ok(()) => {
                        if *c == "cpuset" {
                            Self::init_cpuset(&current)?;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("create", &current)(e)),
                }
            }
        }
        Ok(())
    }

    fn apply(&self, r: &Resources) -> Result<()> {
        if let Some(limit) = r.memory_limit {
            let limit_file = self.file("memory", "memory.limit_in_bytes")?;
            let swap_file = self.file("memory", "memory.memsw.limit_in_bytes")?;
            // memsw must stay >= limit at every moment, so the order of the two writes
            // depends on which way the limit moves.
            let swap = r.memory_swap.map(limit_value);
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
        if let Some(p) = r.cpu_period {
            write(&self.file("cpu", "cpu.cfs_period_us")?, &p.to_string())?;
        }
        if let Some(q) = r.cpu_quota {
            write(&self.file("cpu", "cpu.cfs_quota_us")?, &limit_value(q))?;
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
        for rule in &r.devices {
            let file = if rule.allow { "devices.allow" } else { "devices.deny" };
            write(&self.file("devices", file)?, &rule.v1_line())?;
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        for (_, dir) in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn enter(&self) -> Result<()> {
        // "0" in `tasks` moves only the calling thread, which the kernel (since 6.0) does
        // without the global threadgroup lock and its RCU grace period: a pid written to
        // cgroup.procs costs 5-30 ms on the first hierarchy here, this 0.3 ms. The caller
        // is single-threaded, so the thread is the whole process.
        for (_, dir) in &self.dirs {
            write(&dir.join("tasks"), "0")?;
        }
        Ok(())
    }

    fn processes(&self) -> Result<Vec<i32>> {
        let (_, dir) = self.dirs.first().ok_or_else(|| CgroupError::NoController("any".into()))?;
        read_pids_tree(dir)
    }

    fn stats(&self) -> Result<Stats> {
        let limit = read_u64(&self.file("memory", "memory.limit_in_bytes")?)?;
        Ok(Stats {
            cpu_usage_ns: read_u64(&self.file("cpuacct", "cpuacct.usage")?)?,
            memory_current: read_u64(&self.file("memory", "memory.usage_in_bytes")?)?,
            memory_peak: read_u64(&self.file("memory", "memory.max_usage_in_bytes")?)?,
            // The kernel's "no limit" is the largest page-aligned i64.
            memory_limit: (limit < ((i64::MAX as u64) & !0xfff)).then_some(limit),
            oom_kills: read_keyed(&self.file("memory", "memory.oom_control")?, "oom_kill")?.unwrap_or(0),
            pids_current: read_u64(&self.file("pids", "pids.current")?)?,
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
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.rel
    }
}
