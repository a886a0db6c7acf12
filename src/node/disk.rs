//! A full disk, told apart from other failures: a pod that cannot be made because the
//! node's disk is full fails with the reason [`OUT_OF_DISK`] (the kubelet's name for a
//! node without room), and keeps that status until it is deleted, where a pod refused for
//! its manifest is not kept at all.

use std::error::Error;

/// The pod status reason for a pod the node had no disk space for.
pub const OUT_OF_DISK: &str = "OutOfDisk";

/// Whether `err` or any error beneath it is ENOSPC or EDQUOT. Errors the pod's monitor
/// reports arrive as text, so their message is read too.
pub fn is_full(err: &(dyn Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        let errno = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .or_else(|| e.downcast_ref::<nix::errno::Errno>().map(|n| *n as i32));
        if matches!(errno, Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
            return true;
        }
        if e.source().is_none() {
            let text = e.to_string();
            return text.contains("No space left on device") || text.contains("Disk quota exceeded");
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::PlanError;

    #[test]
    fn enospc_anywhere_beneath_a_plan_error_is_a_full_disk_and_other_errors_are_not() {
        let full = PlanError::io("write pod.json")(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(is_full(&full));
        let store = PlanError::Store {
            what: "the image store".into(),
            source: crate::image::store::StoreError::Io {
                op: "write",
                path: "/x".into(),
                source: std::io::Error::from_raw_os_error(libc::EDQUOT),
            },
        };
        assert!(is_full(&store));
        assert!(is_full(&PlanError::Monitor("create /r/logs: No space left on device (os error 28)".into())));
        assert!(!is_full(&PlanError::io("open")(std::io::Error::from_raw_os_error(libc::ENOENT))));
        assert!(!is_full(&PlanError::invalid("spec.containers".into(), "Required value".into())));
    }
}
