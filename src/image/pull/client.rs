//! A client for one repository of a registry speaking the OCI distribution API, with the
//! two auth schemes registries use: basic, and bearer tokens from a token service.

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::PullError;
use super::auth::{Challenge, Credentials, parse_challenge};

pub struct Client {
    http: reqwest::Client,
    /// `http://host:port` or `https://host:port`.
    base: String,
    registry: String,
    repository: String,
    credentials: Option<Credentials>,
    /// The Authorization value that worked last; shared by concurrent downloads.
    authorization: Mutex<Option<String>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

/// Registries answer errors as `{"errors":[{"code","message"}]}`; keep the body short.
async fn error_body(resp: Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    let text = text.trim();
    if text.len() > 300 { format!("{}…", &text[..text.floor_char_boundary(300)]) } else { text.to_string() }
}

impl Client {
    pub fn new(
        registry: &str,
        repository: &str,
        insecure: bool,
        credentials: Option<Credentials>,
    ) -> Result<Client, PullError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("nodectl/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|source| super::http_error(registry, source))?;
        let scheme = if insecure { "http" } else { "https" };
        // Docker Hub's API lives on another host than its name.
        let host =
            if registry == super::super::reference::DEFAULT_REGISTRY { "registry-1.docker.io" } else { registry };
        Ok(Client {
            http,
            base: format!("{scheme}://{host}"),
            registry: registry.to_string(),
            repository: repository.to_string(),
            credentials,
            authorization: Mutex::new(None),
        })
    }

    pub fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}/v2/{}/{kind}/{reference}", self.base, self.repository)
    }

    /// GET with auth: on a 401, answers the challenge once and retries.
    pub async fn get(&self, url: &str, accept: &[&str]) -> Result<Response, PullError> {
        let mut answered = false;
        loop {
            let mut req = self.http.get(url);
            if !accept.is_empty() {
                req = req.header(ACCEPT, accept.join(", "));
            }
            if let Some(auth) = self.authorization.lock().await.clone() {
                req = req.header(AUTHORIZATION, auth);
            }
            let resp = req.send().await.map_err(|source| super::http_error(url, source))?;
            if resp.status() != StatusCode::UNAUTHORIZED || answered {
                return self.check(url, resp).await;
            }
            answered = true;
            self.answer(url, resp.headers()).await?;
        }
    }

    async fn check(&self, url: &str, resp: Response) -> Result<Response, PullError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = error_body(resp).await;
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => PullError::Denied {
                registry: self.registry.clone(),
                detail: if self.credentials.is_some() {
                    format!("the registry refused our credentials: {status} {body}")
                } else {
                    format!(
                        "{status} {body}; no credentials for {} were found (see `nodectl image pull --help`)",
                        self.registry
                    )
                },
            },
            _ => PullError::Status { url: url.to_string(), status: status.as_u16(), body },
        })
    }

    async fn answer(&self, url: &str, headers: &HeaderMap) -> Result<(), PullError> {
        let denied = |detail: String| PullError::Denied { registry: self.registry.clone(), detail };
        let challenge = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_challenge)
            .ok_or_else(|| denied("401 without a Basic or Bearer challenge".into()))?;
        let value = match challenge {
            Challenge::Basic => {
                let c = self.credentials.as_ref().ok_or_else(|| {
                    denied(format!("the registry asks for a user name and password, and no credentials for {} were found (see `nodectl image pull --help`)", self.registry))
                })?;
                basic(c)
            }
            Challenge::Bearer { realm, service, scope } => {
                let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                let mut params = vec![("scope", scope.as_str())];
                if let Some(s) = &service {
                    params.push(("service", s.as_str()));
                }
                let token_url = reqwest::Url::parse_with_params(&realm, &params)
                    .map_err(|e| denied(format!("token service realm {realm:?} is not a URL: {e}")))?;
                let mut req = self.http.get(token_url);
                if let Some(c) = &self.credentials {
                    req = req.header(AUTHORIZATION, basic(c));
                }
                let resp = req.send().await.map_err(|source| super::http_error(&realm, source))?;
                if !resp.status().is_success() {
                    let status = resp.status();
                    return Err(denied(format!("token service {realm} answered {status} {}", error_body(resp).await)));
                }
                let token: TokenResponse = resp.json().await.map_err(|source| super::http_error(&realm, source))?;
                let token = token
                    .token
                    .or(token.access_token)
                    .ok_or_else(|| denied(format!("token service {realm} sent no token")))?;
                format!("Bearer {token}")
            }
        };
        tracing::debug!(url, "answered an auth challenge");
        *self.authorization.lock().await = Some(value);
        Ok(())
    }
}

fn basic(c: &Credentials) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password)))
}
