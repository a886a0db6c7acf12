//! AppArmor: the profile a container's process runs under (`process.apparmorProfile`).
//!
//! As runc does, the init asks the kernel to switch to the profile at its next execve
//! (`exec NAME` to /proc/PID/attr/apparmor/exec, or the older /proc/PID/attr/exec), so
//! everything up to the program, our own set-up included, runs as before and the program
//! starts confined. The write goes through `rootfs::write_proc`, which refuses a fake
//! /proc (runc's CVE-2019-16884).
//!
//! Where the kernel has no AppArmor (this build machine's kernel has none), a profile
//! cannot be applied: the container runs unconfined, which is said once in the log, as
//! containerd and podman do on such hosts.

use std::sync::{Once, OnceLock};

/// Whether the running kernel enforces AppArmor: its securityfs directory is there and the
/// module says it is enabled (runc's and containerd's test).
pub fn host_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        std::path::Path::new("/sys/kernel/security/apparmor").is_dir()
            && std::fs::read("/sys/module/apparmor/parameters/enabled").is_ok_and(|b| b.starts_with(b"Y"))
    })
}

/// The profile the init is to apply: `profile` where the host enforces AppArmor, else
/// None, with a warning the first time a profile is dropped.
pub fn effective(profile: Option<&str>) -> Option<String> {
    let profile = profile.filter(|p| !p.is_empty())?;
    if host_enabled() {
        return Some(profile.to_string());
    }
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "AppArmor is not enabled on this host: apparmorProfile {profile:?} (and any later one) is not applied"
        )
    });
    None
}

/// Called by the init (single-threaded, in the container's pid namespace and root):
/// `profile` confines the process from its next execve on.
pub fn change_on_exec(profile: &str) -> Result<(), String> {
    if profile.contains(['\0', '\n']) {
        return Err(format!("apparmor profile {profile:?}: a name holds no NUL or newline"));
    }
    let pid = nix::unistd::getpid();
    let value = format!("exec {profile}");
    // attr/apparmor/ is Linux 5.8's LSM-specific directory; older kernels have only the
    // shared attr/exec, which is AppArmor's where AppArmor is the major LSM.
    let dir =
        if std::path::Path::new(&format!("/proc/{pid}/attr/apparmor")).is_dir() { "attr/apparmor" } else { "attr" };
    let result = super::rootfs::write_proc(&format!("{pid}/{dir}/exec"), &value);
    result.map_err(|e| format!("apply apparmor profile {profile:?} (is it loaded?): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_profile_is_no_profile_and_names_with_newlines_are_refused() {
        assert_eq!(effective(None), None);
        assert_eq!(effective(Some("")), None);
        assert!(change_on_exec("a\nchangeprofile b").unwrap_err().contains("newline"));
    }
}
