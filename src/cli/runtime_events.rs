//! `events` as runc 1.1 prints it: one JSON object a line, its keys in runc's order (the
//! order of the Go structs in runc's types/events.go, which tools and runc's own tests
//! match as text), with Go's omitempty where runc has it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::runtime::Runtime;
use crate::runtime::cgroups::{IoEntry, MemoryCounters, Stats};
use crate::runtime::state::Status;

/// How often the OOM counter is looked at between stats events: runc is told by the
/// kernel (an eventfd on v1, inotify on v2); reading a counter this often comes close.
const OOM_POLL: Duration = Duration::from_millis(100);

/// `{"type":"stats","id":…,"data":{…}}` or `{"type":"oom","id":…}`.
#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data>,
}

#[derive(Serialize)]
struct Data {
    cpu: Cpu,
    cpuset: CpuSet,
    memory: Memory,
    pids: Pids,
    blkio: Blkio,
    hugetlb: BTreeMap<String, Hugetlb>,
    intel_rdt: BTreeMap<String, u64>,
    network_interfaces: Option<Vec<()>>,
}

#[derive(Serialize)]
struct Cpu {
    usage: CpuUsage,
    throttling: Throttling,
}

fn zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Serialize)]
struct CpuUsage {
    #[serde(skip_serializing_if = "zero")]
    total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    percpu: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    percpu_kernel: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    percpu_user: Vec<u64>,
    kernel: u64,
    user: u64,
}

#[derive(Serialize)]
struct Throttling {
    #[serde(skip_serializing_if = "zero")]
    periods: u64,
    #[serde(rename = "throttledPeriods", skip_serializing_if = "zero")]
    throttled_periods: u64,
    #[serde(rename = "throttledTime", skip_serializing_if = "zero")]
    throttled_time: u64,
}

#[derive(Serialize, Default)]
struct CpuSet {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cpus: Vec<u16>,
    cpu_exclusive: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mems: Vec<u16>,
    mem_hardwall: u64,
    mem_exclusive: u64,
    memory_migrate: u64,
    memory_spread_page: u64,
    memory_spread_slab: u64,
    memory_pressure: u64,
    sched_load_balance: u64,
    sched_relax_domain_level: i64,
}

#[derive(Serialize)]
struct MemoryEntry {
    limit: u64,
    #[serde(skip_serializing_if = "zero")]
    usage: u64,
    #[serde(skip_serializing_if = "zero")]
    max: u64,
    failcnt: u64,
}

#[derive(Serialize)]
struct Memory {
    #[serde(skip_serializing_if = "zero")]
    cache: u64,
    usage: MemoryEntry,
    swap: MemoryEntry,
    kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    kernel_tcp: MemoryEntry,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    raw: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct Pids {
    #[serde(skip_serializing_if = "zero")]
    current: u64,
    #[serde(skip_serializing_if = "zero")]
    limit: u64,
}

#[derive(Serialize)]
struct BlkioEntry {
    #[serde(skip_serializing_if = "zero")]
    major: u64,
    #[serde(skip_serializing_if = "zero")]
    minor: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    op: String,
    #[serde(skip_serializing_if = "zero")]
    value: u64,
}

#[derive(Serialize)]
struct Blkio {
    #[serde(rename = "ioServiceBytesRecursive", skip_serializing_if = "Vec::is_empty")]
    io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioServicedRecursive", skip_serializing_if = "Vec::is_empty")]
    io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Serialize)]
struct Hugetlb {
    failcnt: u64,
}

/// The kernel's v1 "no limit", which runc prints as it reads it.
const UNLIMITED: u64 = (i64::MAX as u64) & !0xfff;

fn data(s: Stats) -> Data {
    let entries = |v: Vec<IoEntry>| {
        v.into_iter()
            .map(|e| BlkioEntry { major: e.major, minor: e.minor, op: e.op, value: e.value })
            .collect::<Vec<_>>()
    };
    let entry = |c: MemoryCounters| MemoryEntry {
        limit: c.limit.unwrap_or(UNLIMITED),
        usage: c.usage,
        max: c.max,
        failcnt: c.failcnt,
    };
    let flag = |k: &str| s.cpuset_flags.get(k).copied().unwrap_or(0);
    let cpuset = CpuSet {
        cpus: s.cpuset_cpus.clone(),
        cpu_exclusive: flag("cpu_exclusive") as u64,
        mems: s.cpuset_mems.clone(),
        mem_hardwall: flag("mem_hardwall") as u64,
        mem_exclusive: flag("mem_exclusive") as u64,
        memory_migrate: flag("memory_migrate") as u64,
        memory_spread_page: flag("memory_spread_page") as u64,
        memory_spread_slab: flag("memory_spread_slab") as u64,
        memory_pressure: flag("memory_pressure") as u64,
        sched_load_balance: flag("sched_load_balance") as u64,
        sched_relax_domain_level: flag("sched_relax_domain_level"),
    };
    Data {
        cpu: Cpu {
            usage: CpuUsage {
                total: s.cpu_usage_ns,
                percpu: s.cpu_percpu_ns,
                percpu_kernel: s.cpu_percpu_kernel_ns,
                percpu_user: s.cpu_percpu_user_ns,
                kernel: s.cpu_kernel_ns,
                user: s.cpu_user_ns,
            },
            throttling: Throttling {
                periods: s.cpu_periods,
                throttled_periods: s.cpu_throttled_periods,
                throttled_time: s.cpu_throttled_ns,
            },
        },
        cpuset,
        memory: Memory {
            cache: s.memory_cache,
            usage: MemoryEntry {
                limit: s.memory_limit.unwrap_or(UNLIMITED),
                usage: s.memory_current,
                max: s.memory_peak,
                failcnt: s.memory_failcnt,
            },
            swap: MemoryEntry {
                limit: s.swap_limit.unwrap_or(UNLIMITED),
                usage: s.swap_current,
                max: s.swap_peak,
                failcnt: s.swap_failcnt,
            },
            kernel: entry(s.kernel),
            kernel_tcp: entry(s.kernel_tcp),
            raw: s.memory_raw,
        },
        pids: Pids { current: s.pids_current, limit: s.pids_limit.unwrap_or(0) },
        blkio: Blkio {
            io_service_bytes_recursive: entries(s.io_service_bytes),
            io_serviced_recursive: entries(s.io_serviced),
        },
        hugetlb: BTreeMap::new(),
        intel_rdt: BTreeMap::new(),
        network_interfaces: None,
    }
}

fn print(event: &Event<'_>) -> Result<()> {
    // stdout is line-buffered: each event reaches a reader (a file, a pipe) as it happens.
    println!("{}", serde_json::to_string(event)?);
    Ok(())
}

/// Go's time.ParseDuration for what `--interval` gets: `5s`, `500ms`, `1m30s`, `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let mut rest = text.trim();
    let mut total = 0f64;
    if rest.is_empty() {
        bail!("invalid duration {text:?}");
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().with_context(|| format!("invalid duration {text:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => bail!("invalid duration {text:?}: units are ns, us, ms, s, m, h"),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if total <= 0.0 {
        bail!("duration must be greater than 0");
    }
    Ok(Duration::from_secs_f64(total))
}

/// `events --stats`: one stats event. Otherwise a stats event every `interval` and an
/// "oom" event for each OOM kill in the container's cgroup, until the container is gone
/// or has stopped (runc stops when its cgroup goes).
pub fn events(rt: &Runtime, id: &str, stats_once: bool, interval: Duration) -> Result<()> {
    let (_, status) = rt.load(id)?;
    if status == Status::Stopped {
        bail!("container with id {id} is not running");
    }
    if stats_once {
        return print(&Event { kind: "stats", id, data: Some(data(rt.stats(id)?)) });
    }
    let mut ooms = rt.stats(id)?.oom_kills;
    let mut next_stats = Instant::now();
    loop {
        let alive = matches!(rt.load(id), Ok((_, s)) if s != Status::Stopped);
        // Read after the status: a container that died of an OOM kill still reports it.
        let Ok(stats) = rt.stats(id) else { return Ok(()) };
        for _ in ooms..stats.oom_kills {
            print(&Event { kind: "oom", id, data: None })?;
        }
        ooms = ooms.max(stats.oom_kills);
        if !alive {
            return Ok(());
        }
        if Instant::now() >= next_stats {
            print(&Event { kind: "stats", id, data: Some(data(stats)) })?;
            next_stats = Instant::now() + interval;
        }
        std::thread::sleep(OOM_POLL.min(interval));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_as_go_durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "5", "0s", "x"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn events_keep_runcs_key_order() {
        let stats =
            serde_json::to_string(&Event { kind: "stats", id: "c", data: Some(data(Stats::default())) }).unwrap();
        assert!(stats.starts_with(r#"{"type":"stats","id":"c","data":{"cpu":"#), "{stats}");
        let oom = serde_json::to_string(&Event { kind: "oom", id: "c", data: None }).unwrap();
        assert_eq!(oom, r#"{"type":"oom","id":"c"}"#);
    }
}
