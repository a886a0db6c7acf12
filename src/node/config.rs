//! A node's settings from flags, the environment and a config file. This is the one place
//! their order is decided (docs/architecture.md, decision 10): a flag wins over the
//! environment, the environment over the file, the file over the defaults.

use std::path::{Path, PathBuf};

use crate::network::{self, NetConfig};

/// What the command line said; None where it said nothing.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub bridge: Option<String>,
    pub pod_cidr: Option<String>,
    /// The config file; without it, `ROOT/config.yaml` if it exists.
    pub config: Option<PathBuf>,
    /// Sysctls (or `prefix*` patterns) pods may set beyond the safe set.
    pub allowed_unsafe_sysctls: Option<Vec<String>>,
}

/// The environment variable behind each setting.
pub const ENV_BRIDGE: &str = "NODECTL_BRIDGE";
pub const ENV_POD_CIDR: &str = "NODECTL_POD_CIDR";
pub const ENV_CONFIG: &str = "NODECTL_CONFIG";

/// `ROOT/config.yaml` (or `--config`): YAML or JSON.
#[derive(serde::Deserialize, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    pub bridge: Option<String>,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    /// As the kubelet's configuration field of that name.
    pub allowed_unsafe_sysctls: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {}: {source}", path.display())]
    Parse { path: PathBuf, source: serde_yaml_ng::Error },
    #[error(transparent)]
    Network(#[from] network::Error),
    #[error("{0}")]
    Sysctls(String),
}

/// A node's settings, as its owners take them.
#[derive(Debug)]
pub struct Settings {
    pub network: NetConfig,
    /// Sysctls pods may set beyond the safe set, each of a pod's own namespace.
    pub allowed_unsafe_sysctls: Vec<String>,
    /// Whether the pod CIDR was configured (flag, environment or file) rather than the
    /// default: a joined daemon asks for a configured one and otherwise takes its Node's.
    pub pod_cidr_configured: bool,
}

/// The settings of a node whose state lives in `root`, from the real environment.
pub fn settings(root: &Path, flags: &Flags) -> Result<Settings, ConfigError> {
    settings_from(root, flags, |k| std::env::var(k).ok())
}

/// The config file the flag, the environment or the default names (none is empty).
fn config_file(root: &Path, flags: &Flags, env: impl Fn(&str) -> Option<String>) -> Result<ConfigFile, ConfigError> {
    let (path, explicit) = match pick(flags.config.clone(), env(ENV_CONFIG).map(PathBuf::from), None) {
        Some(p) => (p, true),
        None => (root.join("config.yaml"), false),
    };
    read_file(&path, explicit)
}

fn settings_from(root: &Path, flags: &Flags, env: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
    // An empty variable counts as unset, as the shell's ${VAR:-default} has it.
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    let file = config_file(root, flags, env)?;
    let bridge =
        pick(flags.bridge.clone(), env(ENV_BRIDGE), file.bridge).unwrap_or_else(|| network::DEFAULT_BRIDGE.into());
    let configured = pick(flags.pod_cidr.clone(), env(ENV_POD_CIDR), file.pod_cidr);
    let pod_cidr_configured = configured.is_some();
    let cidr = configured.unwrap_or_else(|| network::DEFAULT_POD_CIDR.into());
    let network = NetConfig::new(&bridge, &cidr, root.join("network"))?;
    let allowed_unsafe_sysctls =
        pick(flags.allowed_unsafe_sysctls.clone(), None, file.allowed_unsafe_sysctls).unwrap_or_default();
    super::sysctls::check_allowed(&allowed_unsafe_sysctls).map_err(ConfigError::Sysctls)?;
    Ok(Settings { network, allowed_unsafe_sysctls, pod_cidr_configured })
}

/// The order itself.
fn pick<T>(flag: Option<T>, env: Option<T>, file: Option<T>) -> Option<T> {
    flag.or(env).or(file)
}

/// A missing default file is no file; a missing file that was asked for is an error.
fn read_file(path: &Path, explicit: bool) -> Result<ConfigFile, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_yaml_ng::from_str::<Option<ConfigFile>>(&text)
            .map(Option::unwrap_or_default)
            .map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(ConfigFile::default()),
        Err(source) => Err(ConfigError::Read { path: path.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn flags_win_over_the_environment_which_wins_over_the_file_and_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("config.yaml"), "bridge: filebr\npodCIDR: 10.7.0.0/24\n").unwrap();
        let env = env_of(&[(ENV_BRIDGE, "envbr"), (ENV_POD_CIDR, "10.5.0.0/24")]);

        let s = settings_from(root, &Flags::default(), env_of(&[])).unwrap();
        assert!(s.pod_cidr_configured, "the file configures it");
        let c = s.network;
        assert_eq!((c.bridge.as_str(), c.cidr.to_string()), ("filebr", "10.7.0.0/24".into()));
        let c = settings_from(root, &Flags::default(), &env).unwrap().network;
        assert_eq!((c.bridge.as_str(), c.cidr.to_string()), ("envbr", "10.5.0.0/24".into()));
        let flags = Flags { bridge: Some("flagbr".into()), pod_cidr: Some("10.6.0.0/24".into()), ..Flags::default() };
        let c = settings_from(root, &flags, &env).unwrap().network;
        assert_eq!((c.bridge.as_str(), c.cidr.to_string()), ("flagbr", "10.6.0.0/24".into()));
        assert_eq!(c.state_dir, root.join("network"));

        std::fs::remove_file(root.join("config.yaml")).unwrap();
        let s = settings_from(root, &Flags::default(), env_of(&[(ENV_BRIDGE, "")])).unwrap();
        assert!(!s.pod_cidr_configured);
        let c = s.network;
        assert_eq!(
            (c.bridge.as_str(), c.cidr.to_string()),
            (network::DEFAULT_BRIDGE, network::DEFAULT_POD_CIDR.into())
        );
    }

    #[test]
    fn the_config_file_comes_from_the_flag_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        std::fs::write(&a, "bridge: fromflag\n").unwrap();
        std::fs::write(&b, "bridge: fromenv\n").unwrap();
        let env = |k: &str| (k == ENV_CONFIG).then(|| b.to_str().unwrap().to_string());
        let c = settings_from(dir.path(), &Flags { config: Some(a.clone()), ..Flags::default() }, env).unwrap().network;
        assert_eq!(c.bridge, "fromflag");
        let c = settings_from(dir.path(), &Flags::default(), env).unwrap().network;
        assert_eq!(c.bridge, "fromenv");
    }

    #[test]
    fn a_bad_or_missing_config_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "bridgee: x\n").unwrap();
        let e = settings_from(dir.path(), &Flags { config: Some(bad), ..Flags::default() }, env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.yaml") && e.contains("bridgee"), "{e}");
        let missing = dir.path().join("missing.yaml");
        let e = settings_from(dir.path(), &Flags { config: Some(missing), ..Flags::default() }, env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.yaml"), "{e}");
    }
}
