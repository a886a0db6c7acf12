//! Why the registry refused or failed an operation, as data: the HTTP layer turns each
//! variant into the Status answer kube-apiserver gives ([`crate::server::api::status`]),
//! and the controllers match on the variants (a NotFound is "already gone", a Conflict
//! "read again"), never on message text.

use crate::server::store::StoreError;

/// One field at fault in an [`RegistryError::Invalid`]: its path (`spec.replicas`) and
/// what is wrong, worded as apimachinery's field errors begin ("Required value", "Invalid
/// value: …", "Unsupported value: …").
pub type Cause = (String, String);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    /// The object changed since the caller read it (a resourceVersion or uid precondition
    /// failed, or concurrent writes kept winning).
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict { resource: String, name: String },
    /// The object is in a state the operation cannot be applied to (a pod already bound).
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {why}")]
    ConflictWith { resource: String, name: String, why: String },
    /// A server-side apply would change fields other managers own: kube's message, and
    /// each field with its manager (`.spec.replicas`, `conflict with "kubectl" using apps/v1`).
    #[error("{message}")]
    ApplyConflict { message: String, causes: Vec<(String, String)> },
    /// Defaulted, the object breaks its kind's rules: every field at fault.
    #[error("{}", invalid_message(kind, name, causes))]
    Invalid { kind: String, name: String, causes: Vec<Cause> },
    /// The request cannot be understood (a body that is not its kind, a bad option).
    #[error("{0}")]
    BadRequest(String),
    /// Admission refused it: a protected namespace, a terminating one, a node writing
    /// what is not its own.
    #[error("{message}")]
    Forbidden { resource: String, name: String, group: String, message: String },
    /// A create in a namespace that is being deleted.
    #[error(
        "{resource} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated"
    )]
    NamespaceTerminating { resource: String, name: String, namespace: String },
    /// Refused for now, to be tried again (an eviction a disruption budget does not
    /// allow): the causes as (type, message), and the seconds to wait if known (0 if not).
    #[error("{message}")]
    TooManyRequests { message: String, causes: Vec<(String, String)>, retry_after: u64 },
    /// Larger than the store keeps (etcd's request limit).
    #[error("{0}")]
    TooLarge(String),
    /// Not allowed on this resource now (a create of a kind whose CRD is being deleted).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A revision (resourceVersion, continue token) that compaction has removed.
    #[error("{0}")]
    Expired(String),
    /// A revision the store has not reached yet.
    #[error("Too large resource version: {requested}, current: {current}")]
    FutureRevision { requested: i64, current: i64 },
    /// The store cannot be reached or has no leader: usually nothing was done.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer in time: a write may or may not have been applied.
    #[error("Timeout: the store did not answer in time: {0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
}

/// One cause as it is, several in brackets, as apimachinery's NewInvalid words them.
fn invalid_message(kind: &str, name: &str, causes: &[Cause]) -> String {
    let each: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
    match each.as_slice() {
        [one] => format!("{kind} \"{name}\" is invalid: {one}"),
        _ => format!("{kind} \"{name}\" is invalid: [{}]", each.join(", ")),
    }
}

impl RegistryError {
    pub fn not_found(resource: &str, name: &str) -> RegistryError {
        RegistryError::NotFound { resource: resource.into(), name: name.into() }
    }

    pub fn already_exists(resource: &str, name: &str) -> RegistryError {
        RegistryError::AlreadyExists { resource: resource.into(), name: name.into() }
    }

    pub fn conflict(resource: &str, name: &str) -> RegistryError {
        RegistryError::Conflict { resource: resource.into(), name: name.into() }
    }

    pub fn invalid(kind: &str, name: &str, causes: Vec<Cause>) -> RegistryError {
        RegistryError::Invalid { kind: kind.into(), name: name.into(), causes }
    }

    pub fn bad_request(message: impl Into<String>) -> RegistryError {
        RegistryError::BadRequest(message.into())
    }

    /// Refused by admission: `message` is the whole sentence ("pods \"x\" is forbidden: …").
    pub fn forbidden(resource: &str, name: &str, message: impl Into<String>) -> RegistryError {
        RegistryError::Forbidden {
            resource: resource.into(),
            name: name.into(),
            group: String::new(),
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> RegistryError {
        RegistryError::Internal(message.into())
    }

    /// A store error in the registry's terms; `resource` and `name` name the object.
    pub fn from_store(e: StoreError, resource: &str, name: &str) -> RegistryError {
        match e {
            StoreError::NotFound { .. } => Self::not_found(resource, name),
            StoreError::AlreadyExists { .. } => Self::already_exists(resource, name),
            StoreError::Conflict { .. } => Self::conflict(resource, name),
            StoreError::Compacted { requested, compacted } => {
                RegistryError::Expired(format!("too old resource version: {requested} ({compacted})"))
            }
            StoreError::FutureRevision { requested, current } => RegistryError::FutureRevision { requested, current },
            e @ StoreError::Closed => RegistryError::Unavailable(e.to_string()),
            e @ StoreError::EtcdUnreachable { .. } => RegistryError::Timeout(e.to_string()),
            StoreError::Etcd { ref source, .. } => match etcd_failure(source) {
                Failure::Unavailable => RegistryError::Unavailable(e.to_string()),
                Failure::Timeout => RegistryError::Timeout(e.to_string()),
                Failure::Other => RegistryError::Internal(e.to_string()),
            },
            StoreError::Sqlite { source: rusqlite::Error::SqliteFailure(ref f, _), .. }
                if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
            {
                RegistryError::Timeout(e.to_string())
            }
            other => RegistryError::Internal(other.to_string()),
        }
    }
}

enum Failure {
    Unavailable,
    Timeout,
    Other,
}

/// How etcd failed: no member reachable, no leader or a broken connection (Unavailable),
/// no answer in time (etcd's own "request timed out" is Unavailable on the wire, but it is
/// a timeout), or anything else.
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
