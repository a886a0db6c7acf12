//! Which AppArmor profile a container of a pod runs under, chosen as the kubelet (1.30+)
//! and containerd choose it, and made into the spec's `process.apparmorProfile`.
//!
//! In order: the container's `securityContext.appArmorProfile`, the container's annotation
//! `container.apparmor.security.beta.kubernetes.io/NAME`, the pod's
//! `securityContext.appArmorProfile`. With none, a container gets RuntimeDefault where the
//! host enforces AppArmor and can load profiles, and nothing elsewhere, as with containerd;
//! a privileged container gets nothing unless it asks.
//!
//! RuntimeDefault is nodectl's own profile, `nodectl-default`, loaded with apparmor_parser
//! the first time a container needs it (containerd loads its `cri-containerd.apparmor.d`
//! the same way). A pod that asks for RuntimeDefault or Localhost on a host without
//! AppArmor is refused in the kubelet's words, rather than run unconfined.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Once, OnceLock};

use k8s_openapi::api::core::v1::{AppArmorProfile, Container, Pod};

use super::PlanError;
use crate::runtime::apparmor::host_enabled;

pub const CONTAINER_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";
pub const DEFAULT_PROFILE: &str = "nodectl-default";

/// The kubelet's refusal where the host has no AppArmor.
const NOT_ENABLED: &str = "Cannot enforce AppArmor: AppArmor is not enabled on the host";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    RuntimeDefault,
    Unconfined,
    Localhost(String),
}

/// The profile and the field that chose it; None when nothing chose one.
pub type Choice = Option<(Profile, String)>;

fn from_field(p: &AppArmorProfile, field: &str) -> Result<Profile, PlanError> {
    match (p.type_.as_str(), p.localhost_profile.as_deref()) {
        ("RuntimeDefault", _) => Ok(Profile::RuntimeDefault),
        ("Unconfined", _) => Ok(Profile::Unconfined),
        ("Localhost", Some(name)) if !name.trim().is_empty() => Ok(Profile::Localhost(name.to_string())),
        ("Localhost", _) => Err(PlanError::invalid(
            format!("{field}.localhostProfile"),
            "Required value: must be set when AppArmor type is Localhost".into(),
        )),
        (other, _) => Err(PlanError::invalid(
            format!("{field}.type"),
            format!(
                "Unsupported value: \"{other}\": supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\""
            ),
        )),
    }
}

/// The annotation's spelling: `runtime/default`, `unconfined`, `localhost/NAME`.
fn from_annotation(value: &str, field: &str) -> Result<Profile, PlanError> {
    match value {
        "runtime/default" => Ok(Profile::RuntimeDefault),
        "unconfined" => Ok(Profile::Unconfined),
        _ => match value.strip_prefix("localhost/").filter(|n| !n.is_empty()) {
            Some(name) => Ok(Profile::Localhost(name.to_string())),
            None => Err(PlanError::invalid(
                field.to_string(),
                format!(
                    "Invalid value: \"{value}\": invalid AppArmor profile name: must be runtime/default, unconfined or localhost/NAME"
                ),
            )),
        },
    }
}

/// The choice for container `c` of `pod` (see the module comment); `field` names the
/// container (`spec.containers[0]`).
pub fn choose(pod: &Pod, c: &Container, field: &str) -> Result<Choice, PlanError> {
    if let Some(p) = c.security_context.as_ref().and_then(|s| s.app_armor_profile.as_ref()) {
        let f = format!("{field}.securityContext.appArmorProfile");
        return Ok(Some((from_field(p, &f)?, f)));
    }
    let key = format!("{CONTAINER_ANNOTATION_PREFIX}{}", c.name);
    if let Some(v) = pod.metadata.annotations.as_ref().and_then(|a| a.get(&key)) {
        let f = format!("metadata.annotations[{key}]");
        return Ok(Some((from_annotation(v, &f)?, f)));
    }
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    if let Some(p) = pod_sc.and_then(|s| s.app_armor_profile.as_ref()) {
        let f = "spec.securityContext.appArmorProfile".to_string();
        return Ok(Some((from_field(p, &f)?, f)));
    }
    Ok(None)
}

/// The spec's `process.apparmorProfile` for the choice (None: none), loading nodectl's
/// default profile when it is needed and not loaded yet.
pub fn process_profile(choice: &Choice, privileged: bool) -> Result<Option<String>, PlanError> {
    let Some((profile, field)) = choice else {
        if privileged || !host_enabled() {
            return Ok(None);
        }
        return match ensure_default_loaded() {
            Ok(()) => Ok(Some(DEFAULT_PROFILE.to_string())),
            Err(e) => {
                // As containerd on a host without apparmor_parser: no default profile.
                static WARNED: Once = Once::new();
                WARNED.call_once(|| tracing::warn!("pods run without an AppArmor profile: {e}"));
                Ok(None)
            }
        };
    };
    let field = match profile {
        Profile::Localhost(_) if !field.starts_with("metadata.") => format!("{field}.localhostProfile"),
        _ => field.clone(),
    };
    match profile {
        Profile::Unconfined => Ok(None),
        _ if !host_enabled() => Err(PlanError::invalid(field, NOT_ENABLED.to_string())),
        Profile::RuntimeDefault => ensure_default_loaded()
            .map(|()| Some(DEFAULT_PROFILE.to_string()))
            .map_err(|e| PlanError::invalid(field, format!("Invalid value: \"RuntimeDefault\": {e}"))),
        Profile::Localhost(name) => {
            if !loaded(name) {
                return Err(PlanError::invalid(
                    field,
                    format!("Not found: AppArmor profile \"{name}\" is not loaded on the host"),
                ));
            }
            Ok(Some(name.clone()))
        }
    }
}

/// Whether the kernel has a profile by that name (the names in AppArmor's `profiles` list,
/// each followed by its mode: `nodectl-default (enforce)`).
pub fn loaded(name: &str) -> bool {
    std::fs::read_to_string("/sys/kernel/security/apparmor/profiles")
        .is_ok_and(|list| list.lines().any(|l| l.rsplit_once(" (").is_some_and(|(n, _)| n == name)))
}

fn parser() -> Option<PathBuf> {
    ["/sbin/apparmor_parser", "/usr/sbin/apparmor_parser"].iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Loads nodectl's default profile unless the kernel has it; the outcome is kept for the
/// process's life (a profile an administrator replaces by hand keeps its name).
pub fn ensure_default_loaded() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            if loaded(DEFAULT_PROFILE) {
                return Ok(());
            }
            let parser = parser().ok_or_else(|| {
                format!("loading AppArmor profile {DEFAULT_PROFILE} needs apparmor_parser (Debian's apparmor package)")
            })?;
            load(&parser, &default_profile())
        })
        .clone()
}

/// Replaces (or adds) the profile in `text` with apparmor_parser, from stdin.
fn load(parser: &Path, text: &str) -> Result<(), String> {
    let mut child = Command::new(parser)
        .args(["--replace", "--skip-cache"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run {}: {e}", parser.display()))?;
    let wrote = child.stdin.take().map(|mut s| s.write_all(text.as_bytes()));
    let out = child.wait_with_output().map_err(|e| format!("run {}: {e}", parser.display()))?;
    if let Some(Err(e)) = wrote {
        return Err(format!("write the profile to {}: {e}", parser.display()));
    }
    if !out.status.success() {
        return Err(format!(
            "{} could not load {DEFAULT_PROFILE} ({}): {}",
            parser.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// nodectl's RuntimeDefault profile. Docker's and containerd's default profiles are the
/// model: everything a program ordinarily does is allowed; mounting, the kernel's
/// knobs under /proc and /sys, and tracing or signalling processes of other profiles are not.
pub fn default_profile() -> String {
    format!(
        r#"profile {DEFAULT_PROFILE} flags=(attach_disconnected,mediate_deleted) {{
  network,
  capability,
  file,
  umount,
  unix,
  # Signals from the runtime and the node (unconfined), and within the profile.
  signal (receive) peer=unconfined,
  signal (send,receive) peer={DEFAULT_PROFILE},
  ptrace (trace,read,tracedby,readby) peer={DEFAULT_PROFILE},

  deny mount,
  deny /proc/sysrq-trigger rwklx,
  deny /proc/kcore rwklx,
  deny /proc/kmem rwklx,
  deny /proc/mem rwklx,
  # The kernel's and the devices' settings (mounted read-only as well).
  deny /proc/sys/** wklx,
  deny /sys/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/security/** rwklx,
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, SecurityContext};

    use super::*;

    fn field(type_: &str, name: Option<&str>) -> Option<AppArmorProfile> {
        Some(AppArmorProfile { type_: type_.into(), localhost_profile: name.map(String::from) })
    }

    fn pod(annotations: &[(&str, &str)], pod_field: Option<AppArmorProfile>) -> Pod {
        let mut p = Pod::default();
        if !annotations.is_empty() {
            p.metadata.annotations =
                Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>());
        }
        p.spec = Some(PodSpec {
            security_context: Some(PodSecurityContext { app_armor_profile: pod_field, ..Default::default() }),
            ..Default::default()
        });
        p
    }

    fn container(f: Option<AppArmorProfile>) -> Container {
        Container {
            name: "web".into(),
            security_context: Some(SecurityContext { app_armor_profile: f, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn the_container_field_wins_then_its_annotation_then_the_pod_field() {
        let f = "spec.containers[0]";
        let annotation = ("container.apparmor.security.beta.kubernetes.io/web", "localhost/from-annotation");
        let p = pod(&[annotation], field("Localhost", Some("from-pod")));
        let chosen = choose(&p, &container(field("Unconfined", None)), f).unwrap();
        assert_eq!(chosen, Some((Profile::Unconfined, "spec.containers[0].securityContext.appArmorProfile".into())));
        let chosen = choose(&p, &container(None), f).unwrap().unwrap();
        assert_eq!(chosen.0, Profile::Localhost("from-annotation".into()));
        let chosen = choose(&pod(&[], field("Localhost", Some("from-pod"))), &container(None), f).unwrap().unwrap();
        assert_eq!(chosen, (Profile::Localhost("from-pod".into()), "spec.securityContext.appArmorProfile".into()));
        assert_eq!(choose(&pod(&[], None), &container(None), f).unwrap(), None);
    }

    #[test]
    fn bad_types_names_and_annotations_are_refused_naming_the_field() {
        let f = "spec.containers[0]";
        let e = choose(&pod(&[], None), &container(field("Strict", None)), f).unwrap_err().to_string();
        assert!(
            e.starts_with("spec.containers[0].securityContext.appArmorProfile.type: Unsupported value: \"Strict\""),
            "{e}"
        );
        let e = choose(&pod(&[], field("Localhost", None)), &container(None), f).unwrap_err().to_string();
        assert!(e.starts_with("spec.securityContext.appArmorProfile.localhostProfile: Required value"), "{e}");
        let a = ("container.apparmor.security.beta.kubernetes.io/web", "docker-default");
        let e = choose(&pod(&[a], None), &container(None), f).unwrap_err().to_string();
        assert!(e.contains("metadata.annotations[container.apparmor.security.beta.kubernetes.io/web]"), "{e}");
    }

    #[test]
    fn where_the_host_has_no_apparmor_only_unconfined_or_nothing_is_taken() {
        if host_enabled() {
            return;
        }
        let unconfined = Some((Profile::Unconfined, "f".to_string()));
        assert_eq!(process_profile(&unconfined, false).unwrap(), None);
        assert_eq!(process_profile(&None, false).unwrap(), None);
        for p in [Profile::RuntimeDefault, Profile::Localhost("x".into())] {
            let e = process_profile(&Some((p, "spec.securityContext.appArmorProfile".into())), false).unwrap_err();
            assert!(e.to_string().contains(NOT_ENABLED), "{e}");
        }
    }

    #[test]
    fn the_default_profile_names_itself_and_denies_mount() {
        let text = default_profile();
        assert!(text.starts_with("profile nodectl-default "));
        assert!(text.contains("deny mount,"));
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }
}
