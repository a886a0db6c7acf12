//! `/livez`, `/readyz` and `/healthz`, as kube-apiserver answers them: open to anyone (its
//! system:public-info-viewer role), `ok` when every check passes, `?verbose` for a line per
//! check, and a single check by name (`/readyz/store`). A failed check is a 500 whose body
//! names it; the reason is withheld, as the API server withholds it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::status::ApiError;
use crate::server::registry::objects::{Store, blocking};

/// The endpoints, and the checks each runs.
pub fn is_health_path(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    matches!(first, "livez" | "readyz" | "healthz")
}

/// One check's outcome.
struct Check {
    name: &'static str,
    ok: bool,
}

async fn store_answers(store: &Store) -> bool {
    let store = store.clone();
    blocking(move || store.current_revision().map_err(|e| ApiError::internal(e.to_string()))).await.is_ok()
}

/// Answers `path` (one of [`is_health_path`]'s) with `verbose` as `?verbose` asks.
pub async fn answer(store: &Store, path: &str, verbose: bool) -> Response {
    let mut parts = path.trim_matches('/').split('/');
    let endpoint = parts.next().unwrap_or_default();
    let only = parts.next();
    let mut checks = vec![Check { name: "ping", ok: true }];
    // Liveness is the process answering; readiness also needs the store.
    if endpoint != "livez" {
        checks.push(Check { name: "store", ok: store_answers(store).await });
    }
    if let Some(name) = only {
        return match checks.iter().find(|c| c.name == name) {
            Some(c) if c.ok => text(StatusCode::OK, "ok".into()),
            Some(c) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("internal server error: {} failed", c.name)),
            None => text(StatusCode::NOT_FOUND, "404 page not found\n".into()),
        };
    }
    let passed = checks.iter().all(|c| c.ok);
    let code = if passed { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    if passed && !verbose {
        return text(code, "ok".into());
    }
    let mut body: String = checks
        .iter()
        .map(|c| if c.ok { format!("[+]{} ok\n", c.name) } else { format!("[-]{} failed: reason withheld\n", c.name) })
        .collect();
    body.push_str(&format!("{endpoint} check {}\n", if passed { "passed" } else { "failed" }));
    text(code, body)
}

fn text(code: StatusCode, body: String) -> Response {
    (code, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}
