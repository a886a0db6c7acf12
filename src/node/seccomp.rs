//! Which seccomp profile a container of a pod runs under, chosen as the kubelet chooses
//! it, and made into the spec's `linux.seccomp`.
//!
//! In order: the container's `securityContext.seccompProfile`, the container's annotation
//! `container.seccomp.security.alpha.kubernetes.io/NAME`, the pod's
//! `securityContext.seccompProfile`, the pod's annotation
//! `seccomp.security.alpha.kubernetes.io/pod`; then RuntimeDefault, as the kubelet's
//! `--seccomp-default`, Podman and Docker have it. A privileged container runs without a
//! filter, as with the kubelet. Localhost profiles are files under `ROOT/seccomp/`, looked
//! up beneath it and never outside.

use std::fs;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Component, Path};

use k8s_openapi::api::core::v1::{Container, Pod, SeccompProfile};
use serde_json::Value;

use super::PlanError;
use super::seccomp_default;
use crate::sys;

pub const POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
pub const CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

/// A Localhost profile larger than this is refused (containerd's profiles are ~20 KiB).
const MAX_PROFILE: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    RuntimeDefault,
    Unconfined,
    /// A path relative to `ROOT/seccomp/`.
    Localhost(String),
}

/// The profile and the field that chose it (for errors about it); None for the default.
pub type Choice = (Profile, Option<String>);

/// A Localhost name: relative, without `..`, so that it stays beneath the profile directory.
fn localhost(name: &str, field: &str) -> Result<Profile, PlanError> {
    let path = Path::new(name);
    if name.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(PlanError::invalid(
            field.to_string(),
            format!(
                "Invalid value: \"{name}\": must be a relative path without '..', below the node's seccomp directory"
            ),
        ));
    }
    Ok(Profile::Localhost(name.to_string()))
}

fn from_field(p: &SeccompProfile, field: &str) -> Result<Profile, PlanError> {
    match p.type_.as_str() {
        "RuntimeDefault" => Ok(Profile::RuntimeDefault),
        "Unconfined" => Ok(Profile::Unconfined),
        "Localhost" => {
            let name = p.localhost_profile.as_deref().ok_or_else(|| {
                PlanError::invalid(
                    format!("{field}.localhostProfile"),
                    "Required value: must be set when seccomp type is Localhost".into(),
                )
            })?;
            localhost(name, &format!("{field}.localhostProfile"))
        }
        other => Err(PlanError::invalid(
            format!("{field}.type"),
            format!(
                "Unsupported value: \"{other}\": supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\""
            ),
        )),
    }
}

/// The profile of a seccompProfile field at `f`, with the field that names it.
fn with_field(p: &SeccompProfile, f: String) -> Result<Choice, PlanError> {
    let profile = from_field(p, &f)?;
    let named = if matches!(profile, Profile::Localhost(_)) { format!("{f}.localhostProfile") } else { f };
    Ok((profile, Some(named)))
}

/// The annotations' spelling: `runtime/default` (and the older `docker/default`),
/// `unconfined`, `localhost/NAME`.
fn from_annotation(value: &str, field: &str) -> Result<Profile, PlanError> {
    match value {
        "runtime/default" | "docker/default" => Ok(Profile::RuntimeDefault),
        "unconfined" => Ok(Profile::Unconfined),
        _ => match value.strip_prefix("localhost/") {
            Some(name) => localhost(name, field),
            None => Err(PlanError::invalid(
                field.to_string(),
                format!("Invalid value: \"{value}\": must be a valid seccomp profile"),
            )),
        },
    }
}

/// The profile for container `c` of `pod` (see the module comment); `field` names the
/// container (`spec.containers[0]`).
pub fn choose(pod: &Pod, c: &Container, field: &str) -> Result<Choice, PlanError> {
    let annotations = pod.metadata.annotations.as_ref();
    if let Some(p) = c.security_context.as_ref().and_then(|s| s.seccomp_profile.as_ref()) {
        return with_field(p, format!("{field}.securityContext.seccompProfile"));
    }
    let key = format!("{CONTAINER_ANNOTATION_PREFIX}{}", c.name);
    if let Some(v) = annotations.and_then(|a| a.get(&key)) {
        let f = format!("metadata.annotations[{key}]");
        return Ok((from_annotation(v, &f)?, Some(f)));
    }
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    if let Some(p) = pod_sc.and_then(|s| s.seccomp_profile.as_ref()) {
        return with_field(p, "spec.securityContext.seccompProfile".to_string());
    }
    if let Some(v) = annotations.and_then(|a| a.get(POD_ANNOTATION)) {
        let f = format!("metadata.annotations[{POD_ANNOTATION}]");
        return Ok((from_annotation(v, &f)?, Some(f)));
    }
    Ok((Profile::RuntimeDefault, None))
}

/// Reads a Localhost profile from `dir` without leaving it (symlinks included) or
/// blocking on a fifo, and checks it is an OCI `linux.seccomp` object.
fn read_localhost(dir: &Path, name: &str, field: &str) -> Result<Value, PlanError> {
    let invalid = |m: String| PlanError::invalid(field.to_string(), m);
    let not_found =
        |e: std::io::Error| invalid(format!("Not found: seccomp profile \"{name}\" in {}: {e}", dir.display()));
    let root = fs::File::open(dir).map_err(not_found)?;
    if name.contains('\0') {
        return Err(invalid(format!("Invalid value: \"{name}\": contains NUL")));
    }
    let mut f = sys::resolve::open_regular(root.as_fd(), name, libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => {
                invalid(format!("Invalid value: \"{name}\": the seccomp profile is not a regular file"))
            }
            _ => not_found(e),
        })?;
    let mut text = String::new();
    f.by_ref().take(MAX_PROFILE + 1).read_to_string(&mut text).map_err(not_found)?;
    if text.len() as u64 > MAX_PROFILE {
        return Err(invalid(format!("Invalid value: \"{name}\": the seccomp profile is over {MAX_PROFILE} bytes")));
    }
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| invalid(format!("Invalid value: \"{name}\": the seccomp profile is not JSON: {e}")))?;
    // Docker's profile format has conditions (includes, excludes, archMap) that the OCI
    // form lacks; read as OCI, they would be dropped and the rules apply to everyone.
    let docker_only = value.get("archMap").is_some()
        || value["syscalls"]
            .as_array()
            .is_some_and(|rules| rules.iter().any(|r| r.get("includes").is_some() || r.get("excludes").is_some()));
    if docker_only {
        return Err(invalid(format!(
            "Invalid value: \"{name}\": Docker's profile format (archMap, includes, excludes) is not supported; write the OCI linux.seccomp form"
        )));
    }
    serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(value.clone())
        .map_err(|e| invalid(format!("Invalid value: \"{name}\": not an OCI seccomp profile: {e}")))?;
    Ok(value)
}

/// The spec's `linux.seccomp` for the choice: None for no filter. `caps` is the container's
/// bounding set; `dir` is `ROOT/seccomp`.
pub fn linux_seccomp(
    choice: &Choice,
    privileged: bool,
    caps: &[String],
    dir: &Path,
) -> Result<Option<Value>, PlanError> {
    if privileged {
        return Ok(None);
    }
    match &choice.0 {
        Profile::Unconfined => Ok(None),
        Profile::RuntimeDefault => Ok(Some(seccomp_default::profile(caps))),
        Profile::Localhost(name) => {
            let field = choice.1.as_deref().unwrap_or("seccompProfile");
            read_localhost(dir, name, field).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, SecurityContext};

    use super::*;

    fn field(type_: &str, name: Option<&str>) -> Option<SeccompProfile> {
        Some(SeccompProfile { type_: type_.into(), localhost_profile: name.map(String::from) })
    }

    fn pod(annotations: &[(&str, &str)], pod_field: Option<SeccompProfile>) -> Pod {
        let mut p = Pod::default();
        if !annotations.is_empty() {
            p.metadata.annotations =
                Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>());
        }
        p.spec = Some(PodSpec {
            security_context: Some(PodSecurityContext { seccomp_profile: pod_field, ..Default::default() }),
            ..Default::default()
        });
        p
    }

    fn container(name: &str, f: Option<SeccompProfile>) -> Container {
        Container {
            name: name.into(),
            security_context: Some(SecurityContext { seccomp_profile: f, ..Default::default() }),
            ..Default::default()
        }
    }

    fn chosen(pod: &Pod, c: &Container) -> Profile {
        choose(pod, c, "spec.containers[0]").unwrap().0
    }

    #[test]
    fn without_any_setting_a_container_gets_runtime_default() {
        assert_eq!(choose(&pod(&[], None), &container("c", None), "c").unwrap(), (Profile::RuntimeDefault, None));
    }

    #[test]
    fn the_container_field_wins_over_its_annotation_the_pod_field_and_the_pod_annotation() {
        let p = pod(
            &[(POD_ANNOTATION, "unconfined"), ("container.seccomp.security.alpha.kubernetes.io/c", "unconfined")],
            field("Unconfined", None),
        );
        assert_eq!(
            chosen(&p, &container("c", field("Localhost", Some("a.json")))),
            Profile::Localhost("a.json".into())
        );
    }

    #[test]
    fn the_container_annotation_wins_over_the_pod_field() {
        let p = pod(
            &[("container.seccomp.security.alpha.kubernetes.io/c", "localhost/x/y.json")],
            field("Unconfined", None),
        );
        assert_eq!(chosen(&p, &container("c", None)), Profile::Localhost("x/y.json".into()));
        // Another container's annotation is not this one's.
        assert_eq!(chosen(&p, &container("d", None)), Profile::Unconfined);
    }

    #[test]
    fn the_pod_field_wins_over_the_pod_annotation() {
        let p = pod(&[(POD_ANNOTATION, "unconfined")], field("RuntimeDefault", None));
        assert_eq!(chosen(&p, &container("c", None)), Profile::RuntimeDefault);
        assert_eq!(chosen(&pod(&[(POD_ANNOTATION, "unconfined")], None), &container("c", None)), Profile::Unconfined);
    }

    #[test]
    fn annotations_say_runtime_default_docker_default_unconfined_and_localhost() {
        let of = |v: &str| choose(&pod(&[(POD_ANNOTATION, v)], None), &container("c", None), "c").map(|c| c.0);
        assert_eq!(of("runtime/default").unwrap(), Profile::RuntimeDefault);
        assert_eq!(of("docker/default").unwrap(), Profile::RuntimeDefault);
        assert_eq!(of("unconfined").unwrap(), Profile::Unconfined);
        assert_eq!(of("localhost/p.json").unwrap(), Profile::Localhost("p.json".into()));
        let e = of("seccomp-please").unwrap_err().to_string();
        assert_eq!(
            e,
            "metadata.annotations[seccomp.security.alpha.kubernetes.io/pod]: Invalid value: \"seccomp-please\": must be a valid seccomp profile"
        );
    }

    #[test]
    fn a_localhost_profile_cannot_name_a_path_outside_the_seccomp_directory() {
        for bad in ["/etc/shadow", "../x.json", "a/../../x.json", ""] {
            let c = container("c", field("Localhost", Some(bad)));
            let e = choose(&pod(&[], None), &c, "spec.containers[0]").unwrap_err().to_string();
            assert!(
                e.starts_with("spec.containers[0].securityContext.seccompProfile.localhostProfile: Invalid value"),
                "{bad}: {e}"
            );
        }
        let e = choose(&pod(&[(POD_ANNOTATION, "localhost/../x")], None), &container("c", None), "c").unwrap_err();
        assert!(e.to_string().contains("must be a relative path"), "{e}");
    }

    #[test]
    fn localhost_without_a_profile_name_and_unknown_types_are_refused_naming_the_field() {
        let e = choose(&pod(&[], field("Localhost", None)), &container("c", None), "c").unwrap_err().to_string();
        assert_eq!(
            e,
            "spec.securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost"
        );
        let e = choose(&pod(&[], None), &container("c", field("Strict", None)), "spec.containers[1]").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("spec.containers[1].securityContext.seccompProfile.type: Unsupported value: \"Strict\""),
            "{e}"
        );
    }

    #[test]
    fn privileged_and_unconfined_containers_get_no_filter_and_the_default_is_the_runtime_default() {
        let d = Path::new("/nonexistent");
        let caps: Vec<String> = vec![];
        assert_eq!(linux_seccomp(&(Profile::RuntimeDefault, None), true, &caps, d).unwrap(), None);
        assert_eq!(linux_seccomp(&(Profile::Unconfined, None), false, &caps, d).unwrap(), None);
        let v = linux_seccomp(&(Profile::RuntimeDefault, None), false, &caps, d).unwrap().unwrap();
        assert_eq!(v, seccomp_default::profile(&caps));
    }

    #[test]
    fn a_localhost_profile_is_read_beneath_the_directory_and_a_missing_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("p.json"), r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#).unwrap();
        fs::write(
            dir.path().join("ok.json"),
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path().join("p.json"), dir.path().join("out.json")).unwrap();
        fs::write(dir.path().join("docker.json"), r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}"#).unwrap();
        let f = Some("spec.securityContext.seccompProfile.localhostProfile".to_string());
        let read = |n: &str| linux_seccomp(&(Profile::Localhost(n.into()), f.clone()), false, &[], dir.path());
        assert_eq!(read("ok.json").unwrap().unwrap()["syscalls"][0]["names"][0], "mkdir");
        let e = read("missing.json").unwrap_err().to_string();
        assert!(
            e.starts_with(
                "spec.securityContext.seccompProfile.localhostProfile: Not found: seccomp profile \"missing.json\""
            ),
            "{e}"
        );
        assert!(read("out.json").unwrap_err().to_string().contains("Not found"), "a symlink out is followed");
        assert!(read("docker.json").unwrap_err().to_string().contains("Docker's profile format"));
    }
}
