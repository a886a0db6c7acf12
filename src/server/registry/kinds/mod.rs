//! What the registry does differently for each kind, kept with the kind (as
//! kube-apiserver's per-kind REST strategies): what the server sets at creation, the
//! defaults of its `SetDefaults_*`, its validation, what an update carries over, its
//! subresources, how a delete of it behaves. [`of`] is the one place a kind name picks its
//! [`Strategy`]; the create/update/delete code in [`super::objects`] asks the strategy.

mod apps;
mod batch;
mod core;
mod fill;
mod namespace;
mod node;
mod pod;
mod policy;
mod rules;
mod service;

use serde_json::Value;

pub use pod::{image_pull_policy, set_default_tolerations};
pub use rules::selects;

use super::error::RegistryError;

/// A field problem: (path, message), as apimachinery's field errors.
pub use crate::model::podspec::Problem;

/// Which names a kind accepts (metadata.name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Names {
    /// RFC 1123 subdomain: most kinds.
    Subdomain,
    /// RFC 1123 label: namespaces.
    Label,
    /// Anything that can be a path segment: RBAC roles and bindings, PersistentVolumes.
    PathSegment,
}

pub struct Strategy {
    pub names: Names,
    /// Written only through `/status` (a write of the object keeps the stored status).
    pub status: bool,
    /// Has a `/scale` subresource (spec.replicas).
    pub scale: bool,
    /// Discovery categories (`kubectl get all`).
    pub categories: &'static [&'static str],
    /// What the server sets on a new object, before defaulting (a Namespace's finalizer,
    /// a Pod's Pending phase).
    pub on_create: fn(&mut Value),
    /// The defaults of `SetDefaults_*`, on create and on update, for this version.
    pub defaults: fn(&mut Value, version: &str),
    /// The problems of a defaulted object, created (`old` None) or replacing `old`.
    pub validate: fn(&Value, Option<&Value>) -> Vec<Problem>,
    /// On an update: what the server allocated that the new object leaves out, carried
    /// over from `old` (a Service's cluster IP and node ports).
    pub keep_allocated: fn(&mut Value, &Value),
    /// Just before storing: write-only fields folded in (a Secret's stringData).
    pub normalize: fn(&mut Value),
    /// A delete of this name refused outright (a protected namespace).
    pub refuse_delete: fn(&str) -> Option<RegistryError>,
    /// What marking the object for deletion changes beyond deletionTimestamp.
    pub on_mark: fn(&mut Value),
    /// The grace period of a delete, from the client's and the object's (0: at once).
    pub grace: fn(&Value, Option<i64>) -> i64,
    /// A marked object whose node must finish with it before it goes (a bound pod).
    pub awaits_node: fn(&Value) -> bool,
    /// A delete answers the object (pods, services), not a Status.
    pub delete_answers_object: bool,
}

fn nothing(_: &mut Value) {}
fn no_defaults(_: &mut Value, _: &str) {}
fn valid(_: &Value, _: Option<&Value>) -> Vec<Problem> {
    Vec::new()
}
fn keep_nothing(_: &mut Value, _: &Value) {}
fn never_refused(_: &str) -> Option<RegistryError> {
    None
}
fn at_once(_: &Value, _: Option<i64>) -> i64 {
    0
}
fn no_node(_: &Value) -> bool {
    false
}

/// A kind with no rules of its own: names are subdomains, nothing is defaulted.
pub const PLAIN: Strategy = Strategy {
    names: Names::Subdomain,
    status: false,
    scale: false,
    categories: &[],
    on_create: nothing,
    defaults: no_defaults,
    validate: valid,
    keep_allocated: keep_nothing,
    normalize: nothing,
    refuse_delete: never_refused,
    on_mark: nothing,
    grace: at_once,
    awaits_node: no_node,
    delete_answers_object: false,
};

/// [`PLAIN`] with a status subresource.
const WITH_STATUS: Strategy = Strategy { status: true, ..PLAIN };

/// CustomResourceDefinitions: their status is the server's (accepted names, conditions),
/// and deleting one waits for its objects to go.
const CUSTOM_RESOURCE_DEFINITION: Strategy = Strategy {
    status: true,
    on_create: super::custom::definition::on_create,
    defaults: super::custom::definition::defaults,
    validate: super::custom::definition::validate,
    normalize: super::custom::definition::normalize,
    on_mark: super::custom::definition::normalize,
    ..PLAIN
};

/// The strategy of `kind`.
pub fn of(kind: &str) -> &'static Strategy {
    match kind {
        "Pod" => &pod::POD,
        "Service" => &service::SERVICE,
        "Namespace" => &namespace::NAMESPACE,
        "Secret" => &core::SECRET,
        "Node" => &node::NODE,
        "PersistentVolume" => &core::PERSISTENT_VOLUME,
        "PersistentVolumeClaim" => &core::PERSISTENT_VOLUME_CLAIM,
        "Deployment" => &apps::DEPLOYMENT,
        "ReplicaSet" => &apps::REPLICA_SET,
        "DaemonSet" => &apps::DAEMON_SET,
        "StatefulSet" => &apps::STATEFUL_SET,
        "Job" => &batch::JOB,
        "CronJob" => &batch::CRON_JOB,
        "HorizontalPodAutoscaler" => &core::HORIZONTAL_POD_AUTOSCALER,
        "StorageClass" => &core::STORAGE_CLASS,
        "NetworkPolicy" => &core::NETWORK_POLICY,
        "EndpointSlice" => &core::ENDPOINT_SLICE,
        "PriorityClass" => &core::PRIORITY_CLASS,
        "PodDisruptionBudget" => &policy::POD_DISRUPTION_BUDGET,
        "Ingress" => &WITH_STATUS,
        "Role" | "ClusterRole" => &core::RBAC_ROLE,
        "RoleBinding" | "ClusterRoleBinding" => &core::RBAC_BINDING,
        "CustomResourceDefinition" => &CUSTOM_RESOURCE_DEFINITION,
        _ => &PLAIN,
    }
}
