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
            format!("Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
        );
        e.details = Some(json!({"name": name, "kind": resource}));
        e
    }

    /// 422 with one cause per field, as `kubectl` prints them.
    pub fn invalid(kind: &str, name: &str, causes: Vec<(String, String)>) -> ApiError {
        let message = format!(
            "{kind} \"{name}\" is invalid: {}",
            causes.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join(", ")
        );
        let causes: Vec<Value> = causes.into_iter().map(|(field, message)| json!({"reason": "FieldValueInvalid", "field": field, "message": message})).collect();
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message);
        e.details = Some(json!({"name": name, "kind": kind, "causes": causes}));
        e
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
            StoreError::Compacted { requested, compacted } => Self::new(
                StatusCode::GONE,
                "Expired",
                format!("too old resource version: {requested} ({compacted})"),
            ),
            StoreError::FutureRevision { requested, current } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", format!("Too large resource version: {requested}, current: {current}"))
            }
            other => Self::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.to_status()).expect("status serialises");
        (self.code, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}
