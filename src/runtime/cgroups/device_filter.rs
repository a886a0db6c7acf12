//! Device rules on cgroup v2: v2 has no devices.allow/devices.deny files; a
//! BPF_PROG_TYPE_CGROUP_DEVICE program attached to the cgroup decides each access (open,
//! mknod) instead, as runc and crun do it. This module turns the rules into that program;
//! `sys::bpf` loads and attaches it.
//!
//! The rules keep v1's meaning: later rules win, and what no rule names is allowed (a new
//! v1 cgroup inherits its parent's allow-all; a spec starts with `a *:* rwm` denied). So
//! the program tries the rules last to first and the first one that matches decides. An
//! allow rule matches an access it covers entirely; a deny rule one it shares any bit
//! with, so that a request for read and write is refused when either is denied.

use crate::sys::bpf::Insn;

use super::DeviceRule;

/// The program's context, `struct bpf_cgroup_dev_ctx`: access_type (type in the low 16
/// bits, access in the high 16), major, minor.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

// The few instructions the program uses (BPF class | op | source).
const LDX_W: u8 = 0x61;
const MOV32_X: u8 = 0xbc;
const AND32_K: u8 = 0x54;
const RSH32_K: u8 = 0x74;
const MOV64_K: u8 = 0xb7;
const JEQ_K: u8 = 0x15;
const JNE_K: u8 = 0x55;
const EXIT: u8 = 0x95;

// Registers: r1 the context; r2 the type, r3 the access, r4 the major, r5 the minor, r6
// scratch; r0 the answer.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | dst, off, imm }
}

/// The access bits a rule's `rwm` letters stand for.
fn access_bits(rule: &DeviceRule) -> i32 {
    let access = rule.cgroup_access().unwrap_or_default();
    let mut bits = 0;
    for (letter, bit) in [('m', ACC_MKNOD), ('r', ACC_READ), ('w', ACC_WRITE)] {
        if access.contains(letter) {
            bits |= bit;
        }
    }
    bits
}

/// One rule's test: jumps to the next rule when it does not match, else answers.
fn rule_block(rule: &DeviceRule) -> Vec<Insn> {
    // Each `None` is a jump to the end of the block, patched below.
    let mut block: Vec<(Insn, bool)> = Vec::new();
    match rule.kind {
        'b' => block.push((insn(JNE_K, 2, 0, 0, DEV_BLOCK), true)),
        'c' => block.push((insn(JNE_K, 2, 0, 0, DEV_CHAR), true)),
        _ => {}
    }
    let bits = access_bits(rule);
    let all = ACC_MKNOD | ACC_READ | ACC_WRITE;
    if rule.allow && bits != all {
        // Matches when the access asks for nothing outside the rule's bits.
        block.push((insn(MOV32_X, 6, 3, 0, 0), false));
        block.push((insn(AND32_K, 6, 0, 0, !bits & all), false));
        block.push((insn(JNE_K, 6, 0, 0, 0), true));
    } else if !rule.allow && bits != all {
        // Matches when the access asks for any of the rule's bits.
        block.push((insn(MOV32_X, 6, 3, 0, 0), false));
        block.push((insn(AND32_K, 6, 0, 0, bits), false));
        block.push((insn(JEQ_K, 6, 0, 0, 0), true));
    }
    // Numbers beyond what an instruction holds name no device there is.
    let number = |v: Option<i64>| v.filter(|v| *v >= 0).map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    if let Some(major) = number(rule.major) {
        block.push((insn(JNE_K, 4, 0, 0, major), true));
    }
    if let Some(minor) = number(rule.minor) {
        block.push((insn(JNE_K, 5, 0, 0, minor), true));
    }
    block.push((insn(MOV64_K, 0, 0, 0, i32::from(rule.allow)), false));
    block.push((insn(EXIT, 0, 0, 0, 0), false));
    let len = block.len();
    block
        .into_iter()
        .enumerate()
        .map(|(i, (mut ins, to_next))| {
            if to_next {
                // Relative to the instruction after the jump; the next rule starts at `len`.
                ins.off = (len - i - 1) as i16;
            }
            ins
        })
        .collect()
}

/// The program for `rules` (applied in order, later ones winning).
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut prog = vec![
        insn(LDX_W, 2, 1, CTX_ACCESS_TYPE, 0),
        insn(MOV32_X, 3, 2, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 4, 1, CTX_MAJOR, 0),
        insn(LDX_W, 5, 1, CTX_MINOR, 0),
    ];
    for rule in rules.iter().rev().filter(|r| r.cgroup_access().is_some()) {
        let block = rule_block(rule);
        // A rule for every device and access (`a *:* rwm`) decides everything left: what
        // would follow it is unreachable, which the verifier refuses.
        let catch_all = block.len() == 2;
        prog.extend(block);
        if catch_all {
            return prog;
        }
    }
    // No rule named it: allowed, as in a v1 cgroup below an allow-all parent.
    prog.push(insn(MOV64_K, 0, 0, 0, 1));
    prog.push(insn(EXIT, 0, 0, 0, 0));
    prog
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on one access, for the instructions `program` uses.
    fn run(prog: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> bool {
        let ctx = [((access as u32) << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
                MOV32_X => r[dst] = r[src] & 0xffff_ffff,
                AND32_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                RSH32_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                MOV64_K => r[dst] = i.imm as i64 as u64,
                JEQ_K if r[dst] == i.imm as i64 as u64 => pc += i.off as usize,
                JNE_K if r[dst] != i.imm as i64 as u64 => pc += i.off as usize,
                JEQ_K | JNE_K => {}
                EXIT => return r[0] == 1,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    fn rule(allow: bool, kind: char, major: Option<i64>, minor: Option<i64>, access: &str) -> DeviceRule {
        DeviceRule { allow, kind, major, minor, access: access.into() }
    }

    #[test]
    fn later_rules_win_and_unnamed_devices_follow_the_deny_all() {
        let rules = vec![
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), Some(3), "rwm"),
            rule(true, 'c', Some(136), None, "rw"),
            rule(true, 'b', Some(1), Some(0), "r"),
        ];
        let p = program(&rules);
        let (r, w, m) = (ACC_READ, ACC_WRITE, ACC_MKNOD);
        assert!(run(&p, DEV_CHAR, r | w, 1, 3), "/dev/null");
        assert!(run(&p, DEV_CHAR, m, 1, 3), "mknod /dev/null");
        assert!(run(&p, DEV_CHAR, r | w, 136, 7), "a pty, any minor");
        assert!(!run(&p, DEV_CHAR, m, 136, 7), "no mknod of a pty");
        assert!(run(&p, DEV_BLOCK, r, 1, 0), "read the RAM disk");
        assert!(!run(&p, DEV_BLOCK, r | w, 1, 0), "not write it");
        assert!(!run(&p, DEV_CHAR, r, 1, 0), "a char device of the same numbers");
        assert!(!run(&p, DEV_BLOCK, r, 8, 0), "the host's disk");
        assert!(!run(&p, DEV_CHAR, w, 1, 11), "/dev/kmsg");
        // Nothing after the deny-all, which the kernel's verifier would refuse as unreachable.
        assert_eq!(p[p.len() - 2..], [insn(MOV64_K, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)]);
    }

    #[test]
    fn a_deny_refuses_any_access_it_shares_a_bit_with_and_no_rules_allow_all() {
        let rules = vec![rule(true, 'a', None, None, "rwm"), rule(false, 'c', Some(1), Some(11), "w")];
        let p = program(&rules);
        assert!(run(&p, DEV_CHAR, ACC_READ, 1, 11));
        assert!(!run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 11));
        assert!(run(&p, DEV_BLOCK, ACC_WRITE, 8, 0));
        assert!(run(&program(&[]), DEV_BLOCK, ACC_WRITE, 8, 0));
    }
}
