//! Errors as the Kubernetes API answers them: a `Status` object with the HTTP code, a
//! machine-readable reason and, for 422, the fields at fault.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::server::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// The reason of a field error (metav1.CauseType), from how its message begins, as
/// apimachinery's field.Error types begin theirs.
fn cause_reason(message: &str) -> &'static str {
    [
        ("Required value", "FieldValueRequired"),
        ("Duplicate value", "FieldValueDuplicate"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Forbidden", "FieldValueForbidden"),
        ("Too long", "FieldValueTooLong"),
        ("Too many", "FieldValueTooMany"),
        ("Not found", "FieldValueNotFound"),
    ]
    .iter()
    .find(|(prefix, _)| message.starts_with(prefix))
    .map_or("FieldValueInvalid", |(_, reason)| reason)
}

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: None }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn not_found(resource: &str, name: &str) -> ApiError {
        let mut e = Self::new(StatusCode::NOT_FOUND, "NotFound", format!("{resource} \"{name}\" not found"));
        e.details = Some(json!({"name": name, "kind": resource}));
        e
    }

    pub fn already_exists(resource: &str, name: &str) -> ApiError {
        let mut e = Self::new(StatusCode::CONFLICT, "AlreadyExists", format!("{resource} \"{name}\" already exists"));
        e.details = Some(json!({"name": name, "kind": resource}));
        e
    }

    pub fn conflict(resource: &str, name: &str) -> ApiError {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
        e.details = Some(json!({"name": name, "kind": resource}));
        e
    }

    /// 422 with one cause per field, as `kubectl` prints them.
    pub fn invalid(kind: &str, name: &str, causes: Vec<(String, String)>) -> ApiError {
        let each: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        // One cause as it is, several in brackets, as apimachinery's NewInvalid words them.
        let message = match each.as_slice() {
            [one] => format!("{kind} \"{name}\" is invalid: {one}"),
            _ => format!("{kind} \"{name}\" is invalid: [{}]", each.join(", ")),
        };
        let causes: Vec<Value> = causes
            .into_iter()
            .map(|(field, message)| json!({"reason": cause_reason(&message), "field": field, "message": message}))
            .collect();
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message);
        e.details = Some(json!({"name": name, "kind": kind, "causes": causes}));
        e
    }

    /// A continue token whose revision compaction has removed, as the API server words it.
    pub fn continue_expired() -> ApiError {
        Self::new(
            StatusCode::GONE,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        )
    }

    pub fn unauthorized() -> ApiError {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code.as_u16(),
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    /// A store error in the API's terms; `resource` and `name` name the object.
    pub fn from_store(e: StoreError, resource: &str, name: &str) -> ApiError {
        match e {
            StoreError::NotFound { .. } => Self::not_found(resource, name),
            StoreError::AlreadyExists { .. } => Self::already_exists(resource, name),
            StoreError::Conflict { .. } => Self::conflict(resource, name),
            StoreError::Compacted { requested, compacted } => {
                Self::new(StatusCode::GONE, "Expired", format!("too old resource version: {requested} ({compacted})"))
            }
            StoreError::FutureRevision { requested, current } => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            ),
            e @ StoreError::Closed => Self::unavailable(e.to_string()),
            e @ StoreError::EtcdUnreachable { .. } => Self::timeout(e.to_string()),
            StoreError::Etcd { ref source, .. } => match etcd_failure(source) {
                Failure::Unavailable => Self::unavailable(e.to_string()),
                Failure::Timeout => Self::timeout(e.to_string()),
                Failure::Other => Self::internal(e.to_string()),
            },
            StoreError::Sqlite { source: rusqlite::Error::SqliteFailure(ref f, _), .. }
                if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
            {
                Self::timeout(e.to_string())
            }
            other => Self::internal(other.to_string()),
        }
    }

    /// 503: the store cannot be reached, or has no leader. Usually nothing was done; a
    /// write whose connection broke in flight may have been applied, as with kube-apiserver.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("the store is unavailable: {}", message.into()),
        )
    }

    /// 504: the store did not answer in time; a write may or may not have been applied, as
    /// with kube-apiserver's "request did not complete within the allotted timeout".
    pub fn timeout(message: impl Into<String>) -> ApiError {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("Timeout: the store did not answer in time: {}", message.into()),
        )
    }
}

enum Failure {
    Unavailable,
    Timeout,
    Other,
}

/// How etcd failed, in the API's terms: no member reachable, no leader or a broken
/// connection (Unavailable), no answer in time (etcd's own "request timed out" is
/// Unavailable on the wire, but it is a timeout), or anything else.
fn etcd_failure(e: &etcd_client::Error) -> Failure {
    match e {
        etcd_client::Error::GRpcStatus(s) => match s.code() {
            tonic::Code::DeadlineExceeded => Failure::Timeout,
            tonic::Code::Unavailable if s.message().contains("timed out") => Failure::Timeout,
            tonic::Code::Unavailable | tonic::Code::Cancelled => Failure::Unavailable,
            _ => Failure::Other,
        },
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => Failure::Unavailable,
        _ => Failure::Other,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.to_status().to_string();
        (self.code, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}
