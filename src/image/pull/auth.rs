//! Registry credentials and the WWW-Authenticate challenge.
//!
//! Credentials are read from the first of these files that has an entry for the registry,
//! the places podman and docker users already keep them:
//! `$REGISTRY_AUTH_FILE`, `<state root>/auth.json`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.docker/config.json`. Each is `{"auths": {"HOST[:PORT]": {"auth": base64("user:pass")}}}`
//! (or `"username"` and `"password"` in place of `"auth"`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The files searched for credentials, in order.
pub fn default_files(state_root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(p));
    }
    files.push(state_root.join("auth.json"));
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(Path::new(&run).join("containers/auth.json"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        files.push(Path::new(&home).join(".docker/config.json"));
    }
    files
}

/// Credentials for `registry` from the first file that names it. Unreadable or malformed
/// files are reported in the log and skipped, as podman does.
pub fn lookup(files: &[PathBuf], registry: &str) -> Option<Credentials> {
    for file in files {
        let Ok(data) = std::fs::read(file) else { continue };
        let parsed: AuthFile = match serde_json::from_slice(&data) {
            Ok(p) => p,
            Err(err) => {
                tracing::warn!(file = %file.display(), %err, "ignoring malformed credentials file");
                continue;
            }
        };
        let entry = parsed.auths.iter().find(|(k, _)| host_of(k) == registry).map(|(_, v)| v);
        if let Some(entry) = entry {
            if let Some(c) = decode(entry) {
                return Some(c);
            }
            tracing::warn!(file = %file.display(), registry, "credentials entry is not usable");
        }
    }
    None
}

/// Keys may be written as URLs (`https://host/v1/`), as docker once did.
fn host_of(key: &str) -> &str {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

fn decode(e: &AuthEntry) -> Option<Credentials> {
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Some(Credentials { username: u.clone(), password: p.clone() });
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(e.auth.as_ref()?.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some(Credentials { username: u.to_string(), password: p.to_string() })
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// Parses `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"` (RFC 7235
/// auth-params; quoted values may contain commas, as scopes do).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect::<String>().trim().to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect::<String>().trim().to_string();
        }
        params.insert(key, value);
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None, "a bearer challenge needs a realm");
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn reads_docker_and_podman_credential_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        std::fs::write(&a, r#"{"auths":{"other:5000":{"auth":"eDp5"}}}"#).unwrap();
        std::fs::write(&b, r#"{"auths":{"https://127.0.0.1:5000/v1/":{"auth":"YWxpY2U6czNjcjN0"}}}"#).unwrap();
        let files = [dir.path().join("missing.json"), a.clone(), b];
        assert_eq!(
            lookup(&files, "127.0.0.1:5000"),
            Some(Credentials { username: "alice".into(), password: "s3cr3t".into() })
        );
        assert_eq!(lookup(&files, "other:5000"), Some(Credentials { username: "x".into(), password: "y".into() }));
        assert_eq!(lookup(&files, "nowhere"), None);
    }
}
