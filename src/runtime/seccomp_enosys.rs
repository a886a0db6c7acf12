//! runc's -ENOSYS stub (libcontainer/seccomp/patchbpf): a few BPF instructions put before
//! libseccomp's program so that a syscall numbered above the highest one the profile names
//! (per architecture) fails with ENOSYS instead of the profile's default action. A syscall
//! newer than the profile is then "not implemented", and the C library falls back to the
//! old one (glibc's clone3 to clone, statx to newfstatat) instead of failing with EPERM.

use std::collections::BTreeMap;

use libseccomp::{ScmpArch, ScmpSyscall};

type Result<T> = std::result::Result<T, String>;

// Classic BPF opcodes (linux/bpf_common.h), and where seccomp_data keeps the syscall
// number (offset 0) and the AUDIT_ARCH_* value (offset 4).
const LD_W_ABS: u16 = 0x20;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGT_K: u16 = 0x25;
const JMP_JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
const NR: u32 = 0;
const ARCH: u32 = 4;
const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
/// x32 syscalls are x86_64 ones with this bit set in the number.
const X32_BIT: u32 = 1 << 30;

/// The AUDIT_ARCH_* value the kernel reports for `arch` (linux/audit.h); x32 shares
/// x86_64's.
fn audit_arch(arch: ScmpArch) -> Option<u32> {
    Some(match arch {
        ScmpArch::X86 => 0x4000_0003,
        ScmpArch::X8664 | ScmpArch::X32 => 0xC000_003E,
        ScmpArch::Arm => 0x4000_0028,
        ScmpArch::Aarch64 => 0xC000_00B7,
        ScmpArch::Mips => 0x0000_0008,
        ScmpArch::Mips64 => 0x8000_0008,
        ScmpArch::Mips64N32 => 0xA000_0008,
        ScmpArch::Mipsel => 0x4000_0008,
        ScmpArch::Mipsel64 => 0xC000_0008,
        ScmpArch::Mipsel64N32 => 0xE000_0008,
        ScmpArch::Ppc => 0x0000_0014,
        ScmpArch::Ppc64 => 0x8000_0015,
        ScmpArch::Ppc64Le => 0xC000_0015,
        ScmpArch::S390 => 0x0000_0016,
        ScmpArch::S390X => 0x8000_0016,
        ScmpArch::Riscv64 => 0xC000_00F3,
        _ => return None,
    })
}

/// Where a jump goes.
#[derive(Clone, Copy)]
enum To {
    Next,
    /// Over this many instructions.
    Over(usize),
    Section(usize),
    Enosys,
    /// The first instruction of libseccomp's program, just after the stub.
    Filter,
}

struct Op {
    code: u16,
    k: u32,
    jt: To,
    jf: To,
}

fn op(code: u16, k: u32) -> Op {
    Op { code, k, jt: To::Next, jf: To::Next }
}

fn jump(code: u16, k: u32, jt: To, jf: To) -> Op {
    Op { code, k, jt, jf }
}

fn ja(to: To) -> Op {
    Op { code: JMP_JA, k: 0, jt: to, jf: To::Next }
}

/// The highest syscall number among `names` on each of `arches`, grouped by the
/// architecture value the kernel reports (x86_64 and x32 share one). An architecture
/// none of the names exist on gets no check, as with runc.
fn last_syscalls(arches: &[ScmpArch], names: &[&str]) -> Result<BTreeMap<u32, Vec<(ScmpArch, u32)>>> {
    let mut last: BTreeMap<u32, Vec<(ScmpArch, u32)>> = BTreeMap::new();
    for &arch in arches {
        let arch = if arch == ScmpArch::Native { ScmpArch::native() } else { arch };
        let audit =
            audit_arch(arch).ok_or_else(|| format!("seccomp: no -ENOSYS stub for architecture {arch:?} (as runc)"))?;
        let entry = last.entry(audit).or_default();
        if entry.iter().any(|(a, _)| *a == arch) {
            continue;
        }
        // Negative numbers are libseccomp's pseudo-syscalls: names this arch lacks.
        let max = names
            .iter()
            .filter_map(|n| ScmpSyscall::from_name_by_arch(n, arch).ok())
            .map(|s| s.as_raw_syscall())
            .filter(|n| *n > 0)
            .max();
        match max {
            Some(m) => entry.push((arch, m as u32)),
            None => tracing::warn!("seccomp: the profile names no syscall of architecture {arch:?}"),
        }
    }
    last.retain(|_, v| !v.is_empty());
    Ok(last)
}

/// The checks for one architecture value, starting with the load of the syscall number.
fn section(audit: u32, maxes: &[(ScmpArch, u32)]) -> Result<Vec<Op>> {
    let mut s = vec![op(LD_W_ABS, NR)];
    match maxes {
        [(arch, max)] => {
            // s390's setup(2) (number 0) multiplexes syscalls with large numbers; one the
            // kernel does not know stays 0.
            if matches!(arch, ScmpArch::S390 | ScmpArch::S390X) {
                s.push(jump(JMP_JEQ_K, 0, To::Enosys, To::Next));
            }
            // Only one of x86_64 and x32 named: the other mode goes straight to the filter.
            match arch {
                ScmpArch::X8664 => s.push(jump(JMP_JSET_K, X32_BIT, To::Over(1), To::Next)),
                ScmpArch::X32 => s.push(jump(JMP_JSET_K, X32_BIT, To::Next, To::Over(1))),
                _ => {}
            }
            s.push(jump(JMP_JGT_K, *max, To::Enosys, To::Next));
        }
        [(a, m1), (b, m2)] => {
            let (x86_64, x32) = match (a, b) {
                (ScmpArch::X8664, ScmpArch::X32) => (*m1, *m2),
                (ScmpArch::X32, ScmpArch::X8664) => (*m2, *m1),
                _ => return Err(format!("seccomp: unexpected architectures {a:?} and {b:?} on {audit:#x}")),
            };
            s.push(jump(JMP_JSET_K, X32_BIT, To::Over(1), To::Next));
            s.push(jump(JMP_JGT_K, x86_64, To::Enosys, To::Over(1)));
            s.push(jump(JMP_JGT_K, x32, To::Enosys, To::Next));
        }
        _ => return Err(format!("seccomp: more than two architectures on {audit:#x}")),
    }
    s.push(ja(To::Filter));
    Ok(s)
}

/// The stub for a profile with these architectures and syscall names; empty when it would
/// check nothing.
pub fn stub(arches: &[ScmpArch], names: &[&str]) -> Result<Vec<libc::sock_filter>> {
    let last = last_syscalls(arches, names)?;
    if last.is_empty() {
        return Ok(Vec::new());
    }
    let sections = last.iter().map(|(audit, maxes)| section(*audit, maxes)).collect::<Result<Vec<_>>>()?;
    // load arch; one jeq per architecture into its section; others to the filter.
    let mut ops = vec![op(LD_W_ABS, ARCH)];
    for (i, audit) in last.keys().enumerate() {
        ops.push(jump(JMP_JEQ_K, *audit, To::Section(i), To::Next));
    }
    ops.push(ja(To::Filter));
    let mut starts = Vec::new();
    for s in sections {
        starts.push(ops.len());
        ops.extend(s);
    }
    let enosys = ops.len();
    ops.push(op(RET_K, RET_ENOSYS));
    let filter = ops.len();
    let target = |i: usize, to: To| match to {
        To::Next => i + 1,
        To::Over(n) => i + 1 + n,
        To::Section(s) => starts[s],
        To::Enosys => enosys,
        To::Filter => filter,
    };
    let mut out = Vec::with_capacity(ops.len());
    for (i, o) in ops.iter().enumerate() {
        // BPF jumps go forward only, counted from the next instruction.
        let off = |to: To| target(i, to) - (i + 1);
        let short = |to: To| u8::try_from(off(to)).map_err(|_| "seccomp: -ENOSYS stub too long".to_string());
        out.push(if o.code == JMP_JA {
            libc::sock_filter { code: o.code, jt: 0, jf: 0, k: off(o.jt) as u32 }
        } else {
            libc::sock_filter { code: o.code, jt: short(o.jt)?, jf: short(o.jf)?, k: o.k }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_64_alone_checks_its_own_mode_and_jumps_to_the_filter() {
        let s = stub(&[ScmpArch::X8664], &["read", "write", "openat"]).unwrap();
        let codes: Vec<(u16, u8, u8, u32)> = s.iter().map(|f| (f.code, f.jt, f.jf, f.k)).collect();
        assert_eq!(
            codes,
            vec![
                (LD_W_ABS, 0, 0, ARCH),
                (JMP_JEQ_K, 1, 0, 0xC000_003E),
                (JMP_JA, 0, 0, 5),
                (LD_W_ABS, 0, 0, NR),
                (JMP_JSET_K, 1, 0, X32_BIT),
                (JMP_JGT_K, 1, 0, 257),
                (JMP_JA, 0, 0, 1),
                (RET_K, 0, 0, RET_ENOSYS),
            ]
        );
    }

    #[test]
    fn no_known_name_means_no_stub() {
        assert!(stub(&[ScmpArch::X8664], &["no_such_syscall"]).unwrap().is_empty());
    }
}
