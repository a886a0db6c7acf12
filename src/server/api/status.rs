//! Errors as the Kubernetes API answers them: a `Status` object with the HTTP code, a
//! machine-readable reason and, for 422, the fields at fault.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::server::registry::RegistryError;
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
        RegistryError::invalid(kind, name, causes).into()
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
        RegistryError::from_store(e, resource, name).into()
    }
}

/// The registry's refusals as kube-apiserver answers them: code, reason and details.
impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        let message = e.to_string();
        match e {
            RegistryError::NotFound { resource, name } => ApiError::not_found(&resource, &name),
            RegistryError::AlreadyExists { resource, name } => ApiError::already_exists(&resource, &name),
            RegistryError::Conflict { resource, name } => ApiError::conflict(&resource, &name),
            RegistryError::ConflictWith { resource, name, .. } => {
                let mut e = ApiError::new(StatusCode::CONFLICT, "Conflict", message);
                e.details = Some(json!({"name": name, "kind": resource}));
                e
            }
            RegistryError::ApplyConflict { causes, .. } => {
                let causes: Vec<Value> = causes
                    .into_iter()
                    .map(|(field, message)| json!({"reason": "FieldManagerConflict", "message": message, "field": field}))
                    .collect();
                let mut e = ApiError::new(StatusCode::CONFLICT, "Conflict", message);
                e.details = Some(json!({"causes": causes}));
                e
            }
            RegistryError::Invalid { kind, name, causes } => {
                let causes: Vec<Value> = causes
                    .into_iter()
                    .map(|(field, message)| json!({"reason": cause_reason(&message), "field": field, "message": message}))
                    .collect();
                let mut e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message);
                // The message names the qualified kind (`Deployment.apps`); the details hold
                // kind and group apart, and kubectl prints "The Deployment \"x\" is invalid".
                let (kind, group) = kind.split_once('.').unwrap_or((&kind, ""));
                let mut details = json!({"name": name, "kind": kind, "causes": causes});
                if !group.is_empty() {
                    details["group"] = json!(group);
                }
                e.details = Some(details);
                e
            }
            RegistryError::BadRequest(m) => ApiError::bad_request(m),
            RegistryError::Forbidden { resource, name, group, message } => {
                let mut e = ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message);
                let mut details = json!({"name": name, "kind": resource});
                if !group.is_empty() {
                    details["group"] = json!(group);
                }
                e.details = Some(details);
                e
            }
            RegistryError::NamespaceTerminating { resource, name, namespace } => {
                let mut e = ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message);
                e.details = Some(json!({
                    "name": name, "kind": resource,
                    "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {namespace} is being terminated"), "field": "metadata.namespace"}],
                }));
                e
            }
            RegistryError::TooManyRequests { message, causes, retry_after } => {
                let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message);
                let causes: Vec<Value> =
                    causes.into_iter().map(|(reason, message)| json!({"reason": reason, "message": message})).collect();
                let mut details = json!({"causes": causes});
                if retry_after > 0 {
                    details["retryAfterSeconds"] = json!(retry_after);
                }
                e.details = Some(details);
                e
            }
            RegistryError::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", m),
            RegistryError::MethodNotAllowed(m) => ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", m),
            RegistryError::Expired(m) => ApiError::new(StatusCode::GONE, "Expired", m),
            RegistryError::FutureRevision { .. } | RegistryError::Timeout(_) => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", message)
            }
            RegistryError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message)
            }
            RegistryError::Internal(m) => ApiError::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.to_status().to_string();
        let mut response = (self.code, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response();
        // A refusal that says when to come back says it in the header too, as the API
        // server's error writer does.
        if let Some(after) = self.details.as_ref().and_then(|d| d["retryAfterSeconds"].as_u64()).filter(|s| *s > 0) {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, after.into());
        }
        response
    }
}
