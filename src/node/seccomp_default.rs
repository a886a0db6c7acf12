//! The RuntimeDefault seccomp profile: what containerd and Docker give a container unless
//! told otherwise, written here as data in the OCI `linux.seccomp` form the runtime loads.
//!
//! An allow-list: everything not named fails with EPERM. Calls that only a capability
//! makes safe (mount, unshare, ptrace, bpf, settimeofday …) are allowed only when the
//! container's bounding set holds that capability, as containerd decides it. Without
//! CAP_SYS_ADMIN, clone may not make namespaces and clone3 (whose flags live in memory a
//! filter cannot read) answers ENOSYS, so that libc falls back to clone. Among what stays
//! refused: keyctl, add_key and request_key (the kernel keyring is not namespaced: a
//! container could read host root's keys), userfaultfd, io_uring, kexec, and the
//! namespace calls that open the kernel's less-hardened paths to a container
//! (CVE-2022-0185, CVE-2022-0492 needed unshare -U).

use serde_json::{Value, json};

/// Allowed for every container.
const ALWAYS: &[&str] = &[
    // files and descriptors
    "access",
    "faccessat",
    "faccessat2",
    "open",
    "openat",
    "openat2",
    "creat",
    "close",
    "close_range",
    "read",
    "readv",
    "pread64",
    "preadv",
    "preadv2",
    "write",
    "writev",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "lseek",
    "_llseek",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "fcntl64",
    "ioctl",
    "flock",
    "fsync",
    "fdatasync",
    "sync",
    "syncfs",
    "sync_file_range",
    "fallocate",
    "ftruncate",
    "ftruncate64",
    "truncate",
    "truncate64",
    "fadvise64",
    "fadvise64_64",
    "readahead",
    "copy_file_range",
    "sendfile",
    "sendfile64",
    "splice",
    "tee",
    "vmsplice",
    "stat",
    "stat64",
    "lstat",
    "lstat64",
    "fstat",
    "fstat64",
    "fstatat64",
    "newfstatat",
    "statx",
    "statfs",
    "statfs64",
    "fstatfs",
    "fstatfs64",
    "getdents",
    "getdents64",
    "getcwd",
    "chdir",
    "fchdir",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "symlink",
    "symlinkat",
    "readlink",
    "readlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "chown32",
    "fchown",
    "fchown32",
    "fchownat",
    "lchown",
    "lchown32",
    "umask",
    "utime",
    "utimes",
    "utimensat",
    "utimensat_time64",
    "futimesat",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "fanotify_mark",
    "memfd_create",
    "pipe",
    "pipe2",
    "eventfd",
    "eventfd2",
    "signalfd",
    "signalfd4",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_settime64",
    "timerfd_gettime",
    "timerfd_gettime64",
    // waiting on descriptors
    "select",
    "_newselect",
    "pselect6",
    "pselect6_time64",
    "poll",
    "ppoll",
    "ppoll_time64",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_wait",
    "epoll_wait_old",
    "epoll_pwait",
    "epoll_pwait2",
    // asynchronous I/O (not io_uring)
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    // sockets
    "socket",
    "socketpair",
    "socketcall",
    "bind",
    "connect",
    "listen",
    "accept",
    "accept4",
    "shutdown",
    "getsockname",
    "getpeername",
    "getsockopt",
    "setsockopt",
    "send",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "recv",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "recvmmsg_time64",
    // memory
    "brk",
    "mmap",
    "mmap2",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "mincore",
    "msync",
    "mlock",
    "mlock2",
    "mlockall",
    "munlock",
    "munlockall",
    "remap_file_pages",
    "membarrier",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "mseal",
    "map_shadow_stack",
    "cachestat",
    // processes, threads, signals
    "clone",
    "fork",
    "vfork",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "waitpid",
    "kill",
    "tkill",
    "tgkill",
    "pidfd_open",
    "pidfd_send_signal",
    "process_mrelease",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigpending",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "sigaltstack",
    "sigprocmask",
    "sigreturn",
    "pause",
    "restart_syscall",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futex_wake",
    "futex_wait",
    "futex_requeue",
    "set_robust_list",
    "get_robust_list",
    "set_tid_address",
    "rseq",
    "get_thread_area",
    "set_thread_area",
    "prctl",
    "seccomp",
    "capget",
    "capset",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    // identity
    "getpid",
    "getppid",
    "gettid",
    "getpgid",
    "getpgrp",
    "setpgid",
    "getsid",
    "setsid",
    "getuid",
    "getuid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getegid",
    "getegid32",
    "getresuid",
    "getresuid32",
    "getresgid",
    "getresgid32",
    "getgroups",
    "getgroups32",
    "setuid",
    "setuid32",
    "setgid",
    "setgid32",
    "setreuid",
    "setreuid32",
    "setregid",
    "setregid32",
    "setresuid",
    "setresuid32",
    "setresgid",
    "setresgid32",
    "setfsuid",
    "setfsuid32",
    "setfsgid",
    "setfsgid32",
    "setgroups",
    "setgroups32",
    // limits, scheduling
    "getrlimit",
    "ugetrlimit",
    "setrlimit",
    "prlimit64",
    "getrusage",
    "getpriority",
    "setpriority",
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getattr",
    "sched_setattr",
    "sched_getparam",
    "sched_setparam",
    "sched_getscheduler",
    "sched_setscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "getcpu",
    // time (reading it; setting it needs CAP_SYS_TIME)
    "time",
    "gettimeofday",
    "clock_gettime",
    "clock_gettime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "nanosleep",
    "alarm",
    "getitimer",
    "setitimer",
    "times",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    // System V and POSIX IPC (the pod's own IPC namespace)
    "ipc",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "semctl",
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_notify",
    "mq_getsetattr",
    // the machine
    "uname",
    "sysinfo",
    "getrandom",
];

/// Allowed for one architecture's own calls.
const X86_64: &[&str] = &["arch_prctl", "modify_ldt"];
const AARCH64: &[&str] =
    &["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"];

/// Allowed only when the container's bounding set holds the capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64", "adjtimex", "clock_adjtime", "clock_adjtime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    ("CAP_SYSLOG", &["syslog"]),
];

/// personality(2) values a container may set: Linux, its 32-bit flavour, the uname-2.6
/// flag with either, and 0xffffffff, which only asks.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Every CLONE_NEW* flag; clone with any of them needs CAP_SYS_ADMIN.
const CLONE_NEW_ANY: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWTIME) as u64;

fn architectures() -> Value {
    if cfg!(target_arch = "x86_64") {
        json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    } else if cfg!(target_arch = "aarch64") {
        json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
    } else {
        json!([])
    }
}

fn allow(names: &[&str]) -> Value {
    json!({"names": names, "action": "SCMP_ACT_ALLOW"})
}

/// The profile for a container whose bounding set is `caps` (names as `CAP_SYS_ADMIN`).
pub fn profile(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|have| have == c);
    let mut rules = vec![allow(ALWAYS)];
    if cfg!(target_arch = "x86_64") {
        rules.push(allow(X86_64));
    } else if cfg!(target_arch = "aarch64") {
        rules.push(allow(AARCH64));
    }
    for p in PERSONALITIES {
        rules.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": p, "op": "SCMP_CMP_EQ"}]}));
    }
    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            rules.push(allow(names));
        }
    }
    if !has("CAP_SYS_ADMIN") {
        // clone's flags are its first argument everywhere we build for (not on s390).
        rules.push(json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NEW_ANY, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}));
        rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": architectures(),
        "syscalls": rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(p: &Value, name: &str) -> bool {
        p["syscalls"].as_array().unwrap().iter().any(|r| {
            r["action"] == "SCMP_ACT_ALLOW"
                && r.get("args").is_none()
                && r["names"].as_array().unwrap().iter().any(|n| n == name)
        })
    }

    fn caps(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_default_profile_refuses_the_keyring_namespaces_mount_bpf_and_ptrace() {
        let p = profile(&caps(&["CAP_CHOWN", "CAP_KILL", "CAP_SYS_CHROOT"]));
        assert_eq!((p["defaultAction"].as_str(), p["defaultErrnoRet"].as_i64()), (Some("SCMP_ACT_ERRNO"), Some(1)));
        for refused in [
            "keyctl",
            "add_key",
            "request_key",
            "unshare",
            "setns",
            "mount",
            "bpf",
            "ptrace",
            "clone3",
            "io_uring_setup",
            "userfaultfd",
            "kexec_load",
        ] {
            assert!(!allowed(&p, refused), "{refused} allowed");
        }
        for ok in ["read", "execve", "close_range", "chroot", "capset", "setresuid"] {
            assert!(allowed(&p, ok), "{ok} refused");
        }
        // clone only without CLONE_NEW* flags; clone3 says ENOSYS so libc falls back.
        let clone = p["syscalls"].as_array().unwrap().iter().find(|r| r["names"] == json!(["clone"])).unwrap();
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(
            clone["args"][0]["value"].as_u64().unwrap() & libc::CLONE_NEWUSER as u64,
            libc::CLONE_NEWUSER as u64
        );
    }

    #[test]
    fn capabilities_open_the_calls_they_guard() {
        let p = profile(&caps(&["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_TIME"]));
        for ok in ["mount", "unshare", "clone", "bpf", "ptrace", "settimeofday"] {
            assert!(allowed(&p, ok), "{ok} refused");
        }
        assert!(!p["syscalls"].as_array().unwrap().iter().any(|r| r["names"] == json!(["clone3"])));
        assert!(!allowed(&p, "keyctl"));
    }

    #[test]
    fn the_profile_is_one_the_runtime_loads() {
        let p = profile(&caps(&[]));
        let s: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(p).unwrap();
        assert!(s.syscalls().as_ref().is_some_and(|r| r.len() > 5));
    }
}
