//! The default roles and bindings kube-apiserver creates at start (its bootstrap policy):
//! cluster-admin, the aggregated admin, edit and view with the system:aggregate-to-* roles
//! whose rules they gather, system:discovery, system:basic-user and
//! system:public-info-viewer, system:monitoring (metrics and health checks, for the group of
//! that name), and the bindings that give them to system:masters and to
//! everyone signed in. Each is created only when absent, so a user's edits survive a
//! restart (kube-apiserver reconciles those annotated autoupdate; this server does not
//! yet, so a deleted default stays deleted only until the next start).

use crate::server::registry::RegistryError;
use serde_json::{Value, json};

use super::rbac::{self, GROUP};
use super::status::ApiError;
use crate::server::registry::objects::{self, Store};
use crate::server::registry::resources;

/// (apiGroups, resources, verbs).
type Rule = (&'static [&'static str], &'static [&'static str], &'static [&'static str]);

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const ALL: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// system:aggregate-to-view: read everything but secrets and RBAC.
const VIEW: &[Rule] = &[
    (
        &[""],
        &[
            "configmaps",
            "endpoints",
            "persistentvolumeclaims",
            "persistentvolumeclaims/status",
            "pods",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "serviceaccounts",
            "services",
            "services/status",
        ],
        READ,
    ),
    (
        &[""],
        &[
            "bindings",
            "events",
            "limitranges",
            "namespaces/status",
            "pods/log",
            "pods/status",
            "replicationcontrollers/status",
            "resourcequotas",
            "resourcequotas/status",
        ],
        READ,
    ),
    (&[""], &["namespaces"], READ),
    (&["discovery.k8s.io"], &["endpointslices"], READ),
    (
        &["apps"],
        &[
            "controllerrevisions",
            "daemonsets",
            "daemonsets/status",
            "deployments",
            "deployments/scale",
            "deployments/status",
            "replicasets",
            "replicasets/scale",
            "replicasets/status",
            "statefulsets",
            "statefulsets/scale",
            "statefulsets/status",
        ],
        READ,
    ),
    (&["autoscaling"], &["horizontalpodautoscalers", "horizontalpodautoscalers/status"], READ),
    (&["batch"], &["cronjobs", "cronjobs/status", "jobs", "jobs/status"], READ),
    (&["policy"], &["poddisruptionbudgets", "poddisruptionbudgets/status"], READ),
    (&["networking.k8s.io"], &["ingresses", "ingresses/status", "networkpolicies"], READ),
];

/// system:aggregate-to-edit: write workloads, and read and write secrets.
const EDIT: &[Rule] = &[
    (&[""], &["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"], READ),
    (&[""], &["serviceaccounts"], &["impersonate"]),
    (&[""], &["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"], WRITE),
    (&[""], &["pods/eviction"], &["create"]),
    (
        &[""],
        &[
            "configmaps",
            "events",
            "persistentvolumeclaims",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "secrets",
            "serviceaccounts",
            "services",
            "services/proxy",
        ],
        WRITE,
    ),
    (&[""], &["serviceaccounts/token"], &["create"]),
    (
        &["apps"],
        &[
            "daemonsets",
            "deployments",
            "deployments/rollback",
            "deployments/scale",
            "replicasets",
            "replicasets/scale",
            "statefulsets",
            "statefulsets/scale",
        ],
        WRITE,
    ),
    (&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
    (&["batch"], &["cronjobs", "jobs"], WRITE),
    (&["policy"], &["poddisruptionbudgets"], WRITE),
    (&["networking.k8s.io"], &["ingresses", "networkpolicies"], WRITE),
    (&["coordination.k8s.io"], &["leases"], ALL),
];

/// system:aggregate-to-admin: a namespace's RBAC, and local access reviews.
const ADMIN: &[Rule] = &[
    (&["authorization.k8s.io"], &["localsubjectaccessreviews"], &["create"]),
    (&[GROUP], &["rolebindings", "roles"], ALL),
];

const BASIC_USER: &[Rule] = &[
    (&["authorization.k8s.io"], &["selfsubjectaccessreviews", "selfsubjectrulesreviews"], &["create"]),
    (&["authentication.k8s.io"], &["selfsubjectreviews"], &["create"]),
];

const DISCOVERY_URLS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/openapi",
    "/openapi/*",
    "/readyz",
    "/version",
    "/version/",
];
/// What system:monitoring may read: metrics and every health check, one by one.
const MONITORING_URLS: &[&str] =
    &["/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics", "/metrics/slis", "/readyz", "/readyz/*"];

const PUBLIC_INFO_URLS: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/version/"];

fn rules(list: &[Rule]) -> Vec<Value> {
    list.iter()
        .map(|(groups, resources, verbs)| json!({"apiGroups": groups, "resources": resources, "verbs": verbs}))
        .collect()
}

fn metadata(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut l = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    for (k, v) in labels {
        l[*k] = json!(v);
    }
    json!({"name": name, "labels": l, "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
}

fn role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": metadata(name, labels), "rules": rules})
}

/// An aggregated role: its rules are those of the roles labelled `aggregate-to-NAME`.
fn aggregated(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut r = role(name, labels, Vec::new());
    r["aggregationRule"] = json!({"clusterRoleSelectors": [
        {"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{name}"): "true"}}
    ]});
    r
}

fn binding(role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups.iter().map(|g| json!({"apiGroup": GROUP, "kind": "Group", "name": g})).collect();
    bound(role, subjects)
}

/// A binding of `role` to the controllers' user.
fn controller_binding(role: &str) -> Value {
    bound(role, vec![json!({"apiGroup": GROUP, "kind": "User", "name": crate::server::controllers::client::USER})])
}

fn bound(role: &str, subjects: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": metadata(role, &[]),
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role}, "subjects": subjects,
    })
}

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let to = |what: &'static str| (what, "true");
    vec![
        role(
            "cluster-admin",
            &[],
            vec![
                json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
                json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
            ],
        ),
        aggregated("admin", &[]),
        aggregated("edit", &[to("rbac.authorization.k8s.io/aggregate-to-admin")]),
        aggregated("view", &[to("rbac.authorization.k8s.io/aggregate-to-edit")]),
        role("system:aggregate-to-admin", &[to("rbac.authorization.k8s.io/aggregate-to-admin")], rules(ADMIN)),
        role("system:aggregate-to-edit", &[to("rbac.authorization.k8s.io/aggregate-to-edit")], rules(EDIT)),
        role("system:aggregate-to-view", &[to("rbac.authorization.k8s.io/aggregate-to-view")], rules(VIEW)),
        role("system:basic-user", &[], rules(BASIC_USER)),
        role("system:discovery", &[], vec![json!({"nonResourceURLs": DISCOVERY_URLS, "verbs": ["get"]})]),
        role("system:public-info-viewer", &[], vec![json!({"nonResourceURLs": PUBLIC_INFO_URLS, "verbs": ["get"]})]),
        role("system:monitoring", &[], vec![json!({"nonResourceURLs": MONITORING_URLS, "verbs": ["get"]})]),
        role(REPLICASET_CONTROLLER, &[], rules(REPLICASET_RULES)),
        role(DEPLOYMENT_CONTROLLER, &[], rules(DEPLOYMENT_RULES)),
        role(ENDPOINT_CONTROLLER, &[], rules(ENDPOINT_RULES)),
        role(ENDPOINTSLICE_CONTROLLER, &[], rules(ENDPOINTSLICE_RULES)),
        role(NODE_CONTROLLER, &[], rules(NODE_RULES)),
        role(DISRUPTION_CONTROLLER, &[], rules(DISRUPTION_RULES)),
        role(SERVICE_CONTROLLER, &[], rules(SERVICE_RULES)),
        role(SERVICE_ACCOUNT_CONTROLLER, &[], rules(SERVICE_ACCOUNT_RULES)),
        role(ROOT_CA_PUBLISHER, &[], rules(ROOT_CA_RULES)),
        role(CONTROLLER_MANAGER, &[], leader_rules()),
    ]
}

const CONTROLLER_MANAGER: &str = "system:kube-controller-manager";

/// The leader Leases (crate::server::leader): kube gives kube-controller-manager and
/// kube-scheduler one each; here the one user stands for both.
fn leader_rules() -> Vec<Value> {
    vec![
        json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]}),
        json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
               "resourceNames": ["kube-controller-manager", "kube-scheduler"], "verbs": ["get", "update"]}),
    ]
}

/// kube's controller roles are bound to one service account per controller; ours run as one
/// user (`--use-service-account-credentials=false` in kube's terms), with each role bound.
const REPLICASET_CONTROLLER: &str = "system:controller:replicaset-controller";

const DEPLOYMENT_CONTROLLER: &str = "system:controller:deployment-controller";

/// kube's rules for the Deployment controller, with `patch` where it writes merge patches
/// (its revision annotation, its status).
const DEPLOYMENT_RULES: &[Rule] = &[
    (&["apps", "extensions"], &["deployments"], &["get", "list", "watch", "update", "patch"]),
    (&["apps", "extensions"], &["deployments/status"], &["update", "patch"]),
    (&["apps", "extensions"], &["deployments/finalizers"], &["update"]),
    (&["apps", "extensions"], &["replicasets"], &["get", "list", "watch", "create", "update", "patch", "delete"]),
    (&[""], &["pods"], &["get", "list", "watch", "update"]),
    (&["", "events.k8s.io"], &["events"], &["create", "update", "patch"]),
];

/// kube's rules for the ReplicaSet controller, with `patch` on the status (written as a
/// merge patch here, where kube's controller updates it).
const REPLICASET_RULES: &[Rule] = &[
    (&["apps", "extensions"], &["replicasets"], &["get", "list", "watch", "update"]),
    (&["apps", "extensions"], &["replicasets/status"], &["update", "patch"]),
    (&["apps", "extensions"], &["replicasets/finalizers"], &["update"]),
    (&[""], &["pods"], &["list", "watch", "patch", "create", "delete"]),
    (&["", "events.k8s.io"], &["events"], &["create", "update", "patch"]),
];

const ENDPOINT_CONTROLLER: &str = "system:controller:endpoint-controller";

/// kube's rules for the endpoint controller, with `watch` on endpoints (it follows them to
/// write back a deleted one, where kube's uses a shared informer's list).
const ENDPOINT_RULES: &[Rule] = &[
    (&[""], &["services", "pods"], READ),
    (&[""], &["endpoints"], &["get", "list", "watch", "create", "update", "delete"]),
    (&[""], &["endpoints/restricted"], &["create"]),
    (&["", "events.k8s.io"], &["events"], &["create", "update", "patch"]),
];

const ENDPOINTSLICE_CONTROLLER: &str = "system:controller:endpointslice-controller";

/// kube's rules for the EndpointSlice controller, with `watch` on the slices it owns.
const ENDPOINTSLICE_RULES: &[Rule] = &[
    (&[""], &["services", "pods", "nodes"], READ),
    (&[""], &["services/finalizers"], &["update"]),
    (&["discovery.k8s.io"], &["endpointslices"], &["get", "list", "watch", "create", "update", "delete"]),
    (&["", "events.k8s.io"], &["events"], &["create", "update", "patch"]),
];

const NODE_CONTROLLER: &str = "system:controller:node-controller";

/// kube's rules for the node lifecycle controller, with `watch` on nodes, pods and the
/// nodes' Leases, which it follows through informers of its own.
const NODE_RULES: &[Rule] = &[
    (&[""], &["nodes"], &["get", "list", "watch", "delete", "patch", "update"]),
    (&[""], &["nodes/status"], &["patch", "update"]),
    (&[""], &["pods/status"], &["patch", "update"]),
    (&[""], &["pods"], &["list", "watch", "delete"]),
    (&["coordination.k8s.io"], &["leases"], READ),
    (&["", "events.k8s.io"], &["events"], &["create", "update", "patch"]),
];

const DISRUPTION_CONTROLLER: &str = "system:controller:disruption-controller";

/// kube's rules for the disruption controller, with `watch` on the pods it follows through
/// the shared informer.
const DISRUPTION_RULES: &[Rule] = &[
    (&["apps", "extensions"], &["deployments"], READ),
    (&["apps", "extensions"], &["replicasets"], READ),
    (&[""], &["replicationcontrollers"], READ),
    (&["policy"], &["poddisruptionbudgets"], READ),
    (&["apps"], &["statefulsets"], READ),
    (&["policy"], &["poddisruptionbudgets/status"], &["update"]),
    (&["*"], &["*/scale"], &["get"]),
    (&[""], &["pods/status"], &["patch", "update"]),
    (&[""], &["pods"], READ),
    (&["", "events.k8s.io"], &["events"], &["create", "update", "patch"]),
];

const SERVICE_CONTROLLER: &str = "system:controller:service-controller";

/// kube's rules for the service (load-balancer) controller, which ServiceLB stands for,
/// with `patch` on the status it writes as a merge patch.
const SERVICE_RULES: &[Rule] = &[
    (&[""], &["services"], &["get", "list", "watch"]),
    (&[""], &["services/status"], &["patch", "update"]),
    (&[""], &["nodes"], &["list", "watch"]),
    (&["", "events.k8s.io"], &["events"], &["create", "update", "patch"]),
];

const SERVICE_ACCOUNT_CONTROLLER: &str = "system:controller:service-account-controller";

/// kube's rules for the ServiceAccount controller, with the reads of the namespaces and
/// accounts it follows (kube's controller reads them through kube-controller-manager's
/// shared informers).
const SERVICE_ACCOUNT_RULES: &[Rule] = &[
    (&[""], &["serviceaccounts"], &["create", "get", "list", "watch"]),
    (&[""], &["namespaces"], READ),
    (&["", "events.k8s.io"], &["events"], &["create", "update", "patch"]),
];

const ROOT_CA_PUBLISHER: &str = "system:controller:root-ca-cert-publisher";

/// kube's rules for the root CA publisher, with the reads of what it follows.
const ROOT_CA_RULES: &[Rule] = &[
    (&[""], &["configmaps"], &["create", "update", "get", "list", "watch"]),
    (&[""], &["namespaces"], READ),
    (&["", "events.k8s.io"], &["events"], &["create", "update", "patch"]),
];

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding("cluster-admin", &["system:masters"]),
        binding("system:basic-user", &["system:authenticated"]),
        binding("system:discovery", &["system:authenticated"]),
        binding("system:public-info-viewer", &["system:authenticated", "system:unauthenticated"]),
        binding("system:monitoring", &["system:monitoring"]),
        controller_binding(REPLICASET_CONTROLLER),
        controller_binding(DEPLOYMENT_CONTROLLER),
        controller_binding(ENDPOINT_CONTROLLER),
        controller_binding(ENDPOINTSLICE_CONTROLLER),
        controller_binding(NODE_CONTROLLER),
        controller_binding(DISRUPTION_CONTROLLER),
        controller_binding(SERVICE_CONTROLLER),
        controller_binding(SERVICE_ACCOUNT_CONTROLLER),
        controller_binding(ROOT_CA_PUBLISHER),
        controller_binding(CONTROLLER_MANAGER),
    ]
}

/// Creates each default role and binding that is absent, then aggregates.
pub async fn bootstrap(store: &Store) -> Result<(), ApiError> {
    let find = |plural: &str| {
        resources::find(GROUP, "v1", plural).ok_or_else(|| ApiError::internal(format!("{plural} are not served")))
    };
    let (roles, bindings) = (find("clusterroles")?, find("clusterrolebindings")?);
    let all = cluster_roles()
        .into_iter()
        .map(|o| (roles, o))
        .chain(cluster_role_bindings().into_iter().map(|o| (bindings, o)));
    for (r, obj) in all {
        let checks = (objects::FieldValidation::Strict, None, false);
        match objects::create_value(store.clone(), r, None, obj, checks).await {
            Ok(_) => {}
            Err(RegistryError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    rbac::aggregate(store).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_edit_and_view_aggregate_as_in_kube() {
        let roles = cluster_roles();
        let named = |n: &str| roles.iter().find(|r| r["metadata"]["name"] == n).unwrap();
        assert_eq!(named("edit")["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"], "true");
        assert_eq!(named("view")["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"], "true");
        for r in &roles {
            assert_eq!(r["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"], "true");
            let kind = r.clone();
            assert!(resources::find(GROUP, "v1", "clusterroles").unwrap().check_schema(&kind, true).is_ok(), "{r}");
        }
        for b in cluster_role_bindings() {
            assert!(resources::find(GROUP, "v1", "clusterrolebindings").unwrap().check_schema(&b, true).is_ok(), "{b}");
        }
    }
}
