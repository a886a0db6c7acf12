//! The resources the API serves, and what discovery says of them.

use serde_json::{Value, json};

use super::kinds::Strategy;

#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// What a CustomResourceDefinition says of this version of its kind (None for the
    /// built-in kinds).
    pub custom: Option<&'static super::custom::Custom>,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// What the registry does differently for this resource's kind.
    pub fn strategy(&self) -> &'static Strategy {
        match self.custom {
            Some(_) => &super::kinds::PLAIN,
            None => super::kinds::of(self.kind),
        }
    }

    /// Discovery categories (`kubectl get all`).
    pub fn categories(&self) -> &'static [&'static str] {
        self.custom.map_or(self.strategy().categories, |c| c.categories)
    }

    /// Whether its status is written only through `/status`.
    pub fn has_status(&self) -> bool {
        self.custom.map_or(self.strategy().status, |c| c.status)
    }

    /// Whether it has a `/scale` subresource.
    pub fn has_scale(&self) -> bool {
        self.custom.map_or(self.strategy().scale, |c| c.scale.is_some())
    }

    /// Where the scale subresource reads and writes: (spec replicas, status replicas,
    /// label selector), as JSON pointers.
    pub fn scale_paths(&self) -> (&str, &str, Option<&str>) {
        match self.custom.and_then(|c| c.scale.as_ref()) {
            Some(s) => (&s.spec_replicas, &s.status_replicas, s.label_selector.as_deref()),
            None => ("/spec/replicas", "/status/replicas", None),
        }
    }

    /// The kind's defaults: its `SetDefaults_*`, or a custom kind's schema defaults.
    pub fn apply_defaults(&self, obj: &mut Value) {
        (self.strategy().defaults)(obj, self.version);
        if let Some(schema) = self.custom.and_then(|c| c.schema.as_ref()) {
            super::custom::schema::default(schema, obj);
        }
    }

    /// The problems of a defaulted object, created (`old` None) or replacing `old`: the
    /// kind's validation, or a custom kind's schema.
    pub fn problems(&self, obj: &Value, old: Option<&Value>) -> Vec<super::kinds::Problem> {
        let mut out = (self.strategy().validate)(obj, old);
        if let Some(schema) = self.custom.and_then(|c| c.schema.as_ref()) {
            let typed = super::custom::schema::validate(schema, obj);
            // As apiextensions-apiserver: CEL rules run on a well-typed object only.
            if typed.is_empty() {
                out.extend(super::custom::cel::validate(schema, obj, old));
            } else if super::custom::cel::has_rules(schema) {
                out.extend(typed);
                out.push((
                    "<nil>".into(),
                    "Invalid value: \"null\": some validation rules were not checked because the object was invalid; \
                     correct the existing errors to complete validation"
                        .into(),
                ));
            } else {
                out.extend(typed);
            }
        }
        out
    }

    /// Just before storing: the kind's normalisation, or the pruning of what a custom
    /// kind's schema does not describe.
    pub fn normalize(&self, obj: &mut Value) {
        (self.strategy().normalize)(obj);
        if let Some(schema) = self.custom.and_then(|c| c.schema.as_ref()) {
            super::custom::schema::prune(schema, obj);
        }
    }

    /// The kind as kube's messages name it (apimachinery's GroupKind): `Deployment.apps`,
    /// `Widget.example.com`, `Pod`.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() { self.kind.to_string() } else { format!("{}.{}", self.kind, self.group) }
    }

    /// The group whose part of the store holds this resource: events.k8s.io's Events are
    /// core Events seen through another version, as kube-apiserver stores them.
    fn store_group(&self) -> &'static str {
        match (self.group, self.plural) {
            ("" | "events.k8s.io", "events") | ("", _) => "core",
            (g, _) => g,
        }
    }

    /// The resource whose version the store holds for this one's objects (the first of
    /// [`RESOURCES`] kept under the same key): autoscaling/v2 for autoscaling/v1's
    /// HorizontalPodAutoscalers, core/v1 for events.k8s.io/v1's Events; itself otherwise.
    pub fn storage(&'static self) -> &'static Resource {
        if let Some(c) = self.custom {
            return super::custom::find(self.group, c.storage_version, self.plural).unwrap_or(self);
        }
        RESOURCES
            .iter()
            .find(|r| r.kind == self.kind && r.store_group() == self.store_group() && r.plural == self.plural)
            .unwrap_or(self)
    }

    /// Whether the store holds this resource's objects in its own version (a resource that
    /// is another's view is skipped by whoever walks all stored objects).
    pub fn is_storage(&'static self) -> bool {
        std::ptr::eq(self.storage(), self)
    }

    /// The store key of an object, or the prefix of a collection (`name` None; `ns` None
    /// for all namespaces).
    pub fn key(&self, ns: Option<&str>, name: Option<&str>) -> String {
        let mut k = format!("/registry/{}/{}/", self.store_group(), self.plural);
        if self.namespaced
            && let Some(ns) = ns
        {
            k.push_str(ns);
            k.push('/');
        }
        if let Some(n) = name {
            k.push_str(n);
        }
        k
    }

    /// Checks an object against the Kubernetes schema of its kind, as the typed structs of
    /// k8s-openapi have it: a wrong type anywhere is refused as (field path, problem).
    ///
    /// With `strict`, a field the schema does not have is refused too: the typed value is
    /// serialised again and every field of the input it lost is unknown.
    pub fn check_schema(&self, obj: &Value, strict: bool) -> Result<(), (String, String)> {
        let unknown = self.typed_check(obj)?;
        match unknown.first() {
            Some(first) if strict => {
                // All of them in one message, as the API server words it.
                let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
                Err((first.clone(), format!("strict decoding error: {}", list.join(", "))))
            }
            _ => Ok(()),
        }
    }

    /// The fields (dotted paths) of `obj` that the schema does not know, for
    /// fieldValidation=Warn; none if the object does not even decode (its error comes
    /// from `check_schema`).
    pub fn unknown_fields(&self, obj: &Value) -> Vec<String> {
        self.typed_check(obj).unwrap_or_default()
    }

    /// Decodes `obj` as its k8s-openapi type: a type error, or the unknown fields.
    fn typed_check(&self, obj: &Value) -> Result<Vec<String>, (String, String)> {
        if let Some(c) = self.custom {
            // A custom kind's type problems come from its schema's validation; what its
            // schema does not describe is unknown (and pruned before it is stored).
            let mut copy = obj.clone();
            return Ok(c.schema.as_ref().map(|s| super::custom::schema::prune(s, &mut copy)).unwrap_or_default());
        }
        struct Check<'a>(&'a Value);
        impl TypeVisitor for Check<'_> {
            type Out = Result<Vec<String>, (String, String)>;
            fn visit<T: KindType>(self) -> Self::Out {
                crate::model::schema::decode::<T>(self.0).map(|(_, unknown)| unknown)
            }
        }
        self.with_type(Check(obj)).unwrap_or_else(|| Ok(Vec::new()))
    }

    /// Does `v`'s work with the k8s-openapi type of this kind: the one table of which type
    /// each served kind is (decoding checks it, OpenAPI documents its schema). None for a
    /// kind without one.
    pub fn with_type<V: TypeVisitor>(&self, v: V) -> Option<V::Out> {
        use k8s_openapi::api::{
            apps::v1 as apps, autoscaling::v1 as autoscaling1, autoscaling::v2 as autoscaling2, batch::v1 as batch,
            coordination::v1 as coord, core::v1 as core, discovery::v1 as discovery, events::v1 as events,
            networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling,
            storage::v1 as storage,
        };
        if self.custom.is_some() {
            return None;
        }
        match self.kind {
            "Namespace" => Some(v.visit::<core::Namespace>()),
            "Pod" => Some(v.visit::<core::Pod>()),
            "Node" => Some(v.visit::<core::Node>()),
            "Service" => Some(v.visit::<core::Service>()),
            "Endpoints" => Some(v.visit::<core::Endpoints>()),
            "ConfigMap" => Some(v.visit::<core::ConfigMap>()),
            "Secret" => Some(v.visit::<core::Secret>()),
            "Event" if self.group == "events.k8s.io" => Some(v.visit::<events::Event>()),
            "Event" => Some(v.visit::<core::Event>()),
            "Deployment" => Some(v.visit::<apps::Deployment>()),
            "ReplicaSet" => Some(v.visit::<apps::ReplicaSet>()),
            "ControllerRevision" => Some(v.visit::<apps::ControllerRevision>()),
            "DaemonSet" => Some(v.visit::<apps::DaemonSet>()),
            "StatefulSet" => Some(v.visit::<apps::StatefulSet>()),
            "Job" => Some(v.visit::<batch::Job>()),
            "CronJob" => Some(v.visit::<batch::CronJob>()),
            "PersistentVolume" => Some(v.visit::<core::PersistentVolume>()),
            "PersistentVolumeClaim" => Some(v.visit::<core::PersistentVolumeClaim>()),
            "ServiceAccount" => Some(v.visit::<core::ServiceAccount>()),
            "StorageClass" => Some(v.visit::<storage::StorageClass>()),
            "Ingress" => Some(v.visit::<networking::Ingress>()),
            "IngressClass" => Some(v.visit::<networking::IngressClass>()),
            "NetworkPolicy" => Some(v.visit::<networking::NetworkPolicy>()),
            "Role" => Some(v.visit::<rbac::Role>()),
            "ClusterRole" => Some(v.visit::<rbac::ClusterRole>()),
            "RoleBinding" => Some(v.visit::<rbac::RoleBinding>()),
            "ClusterRoleBinding" => Some(v.visit::<rbac::ClusterRoleBinding>()),
            "HorizontalPodAutoscaler" if self.version == "v1" => {
                Some(v.visit::<autoscaling1::HorizontalPodAutoscaler>())
            }
            "HorizontalPodAutoscaler" => Some(v.visit::<autoscaling2::HorizontalPodAutoscaler>()),
            "PodDisruptionBudget" => Some(v.visit::<policy::PodDisruptionBudget>()),
            "Lease" => Some(v.visit::<coord::Lease>()),
            "EndpointSlice" => Some(v.visit::<discovery::EndpointSlice>()),
            "PriorityClass" => Some(v.visit::<scheduling::PriorityClass>()),
            "CustomResourceDefinition" => Some(v.visit::<
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
            >()),
            _ => None,
        }
    }
}

/// What a served kind's type can do.
pub trait KindType: serde::de::DeserializeOwned + serde::Serialize + schemars::JsonSchema {}
impl<T: serde::de::DeserializeOwned + serde::Serialize + schemars::JsonSchema> KindType for T {}

/// Work done with a kind's type, chosen by [`Resource::with_type`].
pub trait TypeVisitor {
    type Out;
    fn visit<T: KindType>(self) -> Self::Out;
}

macro_rules! resource {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr, [$($short:expr),*]) => {
        Resource { group: $group, version: $version, kind: $kind, plural: $plural, singular: $singular, namespaced: $namespaced, short_names: &[$($short),*], custom: None }
    };
}

/// What the API serves, grouped by group and version in the order kube-apiserver's
/// discovery lists them; of two versions of a group, the preferred one first.
pub static RESOURCES: &[Resource] = &[
    resource!("", "v1", "Namespace", "namespaces", "namespace", false, ["ns"]),
    resource!("", "v1", "Pod", "pods", "pod", true, ["po"]),
    resource!("", "v1", "Node", "nodes", "node", false, ["no"]),
    resource!("", "v1", "Service", "services", "service", true, ["svc"]),
    resource!("", "v1", "Endpoints", "endpoints", "endpoints", true, ["ep"]),
    resource!("", "v1", "ConfigMap", "configmaps", "configmap", true, ["cm"]),
    resource!("", "v1", "Secret", "secrets", "secret", true, []),
    resource!("", "v1", "Event", "events", "event", true, ["ev"]),
    resource!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", false, ["pv"]),
    resource!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true, ["pvc"]),
    resource!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, ["sa"]),
    resource!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", true, []),
    resource!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, ["ds"]),
    resource!("apps", "v1", "Deployment", "deployments", "deployment", true, ["deploy"]),
    resource!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, ["rs"]),
    resource!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, ["sts"]),
    resource!("events.k8s.io", "v1", "Event", "events", "event", true, ["ev"]),
    resource!(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        ["hpa"]
    ),
    resource!(
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        ["hpa"]
    ),
    resource!("batch", "v1", "CronJob", "cronjobs", "cronjob", true, ["cj"]),
    resource!("batch", "v1", "Job", "jobs", "job", true, []),
    resource!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", false, []),
    resource!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", true, ["ing"]),
    resource!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", true, ["netpol"]),
    resource!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", true, ["pdb"]),
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
        []
    ),
    resource!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", false, []),
    resource!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", true, []),
    resource!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true, []),
    resource!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", false, ["sc"]),
    resource!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, []),
    resource!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, []),
    resource!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", false, ["pc"]),
    resource!(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        false,
        ["crd", "crds"]
    ),
];

/// A served resource: built-in or custom.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .or_else(|| super::custom::find(group, version, plural))
}

/// Every resource served now: the built-in ones, then the custom ones.
pub fn all() -> Vec<&'static Resource> {
    RESOURCES.iter().chain(super::custom::all()).collect()
}

/// The resource whose objects are stored under `/registry/GROUP/PLURAL/` ("core" for "").
pub fn stored_as(group: &str, plural: &str) -> Option<&'static Resource> {
    all().into_iter().find(|r| r.group == group && r.plural == plural && r.is_storage())
}

const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// `/api/v1` or `/apis/GROUP/VERSION`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let rs: Vec<&Resource> = all().into_iter().filter(|r| r.group == group && r.version == version).collect();
    if rs.is_empty() {
        return None;
    }
    let api_version = rs[0].api_version();
    let mut resources: Vec<Value> = Vec::new();
    for r in &rs {
        resources.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": VERBS, "shortNames": r.short_names, "categories": r.categories(),
        }));
        // Subresources, listed as the API server lists them (kubectl api-resources hides them).
        let sub = |name: &str, kind: &str, verbs: &[&str]| json!({"name": format!("{}/{name}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
        if r.has_status() {
            resources.push(sub("status", r.kind, &["get", "patch", "update"]));
        }
        if r.has_scale() {
            let mut scale = sub("scale", "Scale", &["get", "patch", "update"]);
            scale["group"] = json!("autoscaling");
            scale["version"] = json!("v1");
            resources.push(scale);
        }
        if r.kind == "Pod" {
            resources.push(sub("binding", "Binding", &["create"]));
            // kubectl drain evicts only where discovery lists this, with its group and version.
            let mut eviction = sub("eviction", "Eviction", &["create"]);
            eviction["group"] = json!("policy");
            eviction["version"] = json!("v1");
            resources.push(eviction);
            resources.push(sub("log", "Pod", &["get"]));
            for (name, kind) in
                [("exec", "PodExecOptions"), ("attach", "PodAttachOptions"), ("portforward", "PodPortForwardOptions")]
            {
                resources.push(sub(name, kind, &["create", "get"]));
            }
        }
    }
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version, "resources": resources}))
}

/// `/apis`.
/// One group's discovery document (`/apis/GROUP`), as its entry in [`group_list`].
pub fn group(name: &str) -> Option<Value> {
    let list = group_list();
    let mut g = list["groups"].as_array()?.iter().find(|g| g["name"] == name)?.clone();
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

pub fn group_list() -> Value {
    // Each group once, with its versions in the order of RESOURCES: the first preferred.
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in all().into_iter().filter(|r| !r.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
            Some(_) => {}
            None => groups.push((r.group, vec![r.version])),
        }
    }
    let groups: Vec<Value> = groups
        .iter()
        .map(|(g, versions)| {
            let gvs: Vec<Value> =
                versions.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
            json!({"name": g, "versions": gvs, "preferredVersion": gvs[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}
