//! Role-based access control, decided as kube-apiserver's RBAC authorizer decides it.
//!
//! Rules live in Roles and ClusterRoles; RoleBindings grant them in their own namespace,
//! ClusterRoleBindings everywhere, to User, Group and ServiceAccount subjects. A request is
//! allowed when some rule bound to the caller covers it; nothing denies.
//!
//! The bindings and roles are read from the store at every request RBAC decides, with no
//! cache: a binding takes effect for the very next request (kube-apiserver's informers
//! take up to about a second). The cost is a few store reads for such requests only: the
//! admin (system:masters) and what the Node authorizer allows never come here.
//!
//! Aggregated ClusterRoles: [`aggregate`] writes into each one's `rules` the rules of the
//! ClusterRoles its `aggregationRule` selects, as kube's clusterrole-aggregation controller
//! does, at start and after every write to a ClusterRole through this server; the
//! authorizer reads `rules` only, so `kubectl get clusterrole view -o yaml` shows what it
//! grants, as against kube.

use crate::server::registry::RegistryError;
use serde_json::{Value, json};

use super::status::ApiError;
use crate::server::registry::objects::{self, Store, blocking, decode};
use crate::server::registry::resources::{self, Resource};

pub const GROUP: &str = "rbac.authorization.k8s.io";

/// What a request asks, in RBAC's terms ("" for what it does not name).
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub verb: String,
    /// Set for a non-resource request (`/apis`, `/version`); the fields below are then "".
    pub path: Option<String>,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

/// Who asks: a user name and its groups.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    pub name: &'a str,
    pub groups: &'a [String],
}

/// The strings of the list at `key` in `v` (none if it is missing or not a list).
pub(super) fn strings<'v>(v: &'v Value, key: &str) -> Vec<&'v str> {
    v.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
}

fn has(list: &[&str], want: &str) -> bool {
    list.iter().any(|x| *x == "*" || *x == want)
}

/// Whether one PolicyRule covers `req` (kube's `RuleAllows`).
pub fn rule_allows(rule: &Value, req: &Request) -> bool {
    if !has(&strings(rule, "verbs"), &req.verb) {
        return false;
    }
    if let Some(path) = &req.path {
        return strings(rule, "nonResourceURLs")
            .iter()
            .any(|u| *u == "*" || u == path || u.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix)));
    }
    let combined =
        if req.subresource.is_empty() { req.resource.clone() } else { format!("{}/{}", req.resource, req.subresource) };
    let resource = strings(rule, "resources").iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!req.subresource.is_empty() && r.strip_prefix("*/") == Some(req.subresource.as_str()))
    });
    let names = strings(rule, "resourceNames");
    has(&strings(rule, "apiGroups"), &req.group) && resource && (names.is_empty() || names.contains(&req.name.as_str()))
}

/// Whether a binding's subject is the caller; `binding_ns` is the RoleBinding's namespace
/// ("" for a ClusterRoleBinding), where a ServiceAccount subject without one lives.
fn subject_is(subject: &Value, caller: Caller<'_>, binding_ns: &str) -> bool {
    let name = subject.get("name").and_then(Value::as_str).unwrap_or_default();
    match subject.get("kind").and_then(Value::as_str) {
        Some("User") => name == caller.name,
        Some("Group") => caller.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject.get("namespace").and_then(Value::as_str).filter(|n| !n.is_empty()).unwrap_or(binding_ns);
            caller.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// A subject as kube's reasons name it: `User "jane"`, `ServiceAccount "name/ns"`.
fn describe_subject(subject: &Value, binding_ns: &str) -> String {
    let kind = subject.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = subject.get("name").and_then(Value::as_str).unwrap_or_default();
    if kind == "ServiceAccount" {
        let ns = subject.get("namespace").and_then(Value::as_str).filter(|n| !n.is_empty()).unwrap_or(binding_ns);
        format!("{kind} \"{name}/{ns}\"")
    } else {
        format!("{kind} \"{name}\"")
    }
}

fn rbac_resource(plural: &str) -> Result<&'static Resource, ApiError> {
    resources::find(GROUP, "v1", plural).ok_or_else(|| ApiError::internal(format!("{plural} are not served")))
}

fn list_sync(store: &Store, r: &'static Resource, ns: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let list = store.list(&r.key(ns, None), None, 0, None).map_err(|e| ApiError::from_store(e, r.plural, ""))?;
    list.items.iter().map(|kv| decode(kv).map_err(ApiError::from)).collect()
}

fn get_sync(store: &Store, r: &'static Resource, ns: Option<&str>, name: &str) -> Result<Option<Value>, ApiError> {
    store
        .get(&r.key(ns, Some(name)))
        .map_err(|e| ApiError::from_store(e, r.plural, name))?
        .as_ref()
        .map(decode)
        .transpose()
        .map_err(ApiError::from)
}

/// The rules of the role a binding refers to (none if it is missing: kube ignores such a
/// binding).
fn role_rules(store: &Store, binding: &Value, binding_ns: &str) -> Result<(String, Vec<Value>), ApiError> {
    let kind = binding.pointer("/roleRef/kind").and_then(Value::as_str).unwrap_or_default();
    let name = binding.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or_default();
    let role = match kind {
        "ClusterRole" => get_sync(store, rbac_resource("clusterroles")?, None, name)?,
        "Role" if !binding_ns.is_empty() => get_sync(store, rbac_resource("roles")?, Some(binding_ns), name)?,
        _ => None,
    };
    let rules = role.and_then(|r| r.get("rules").and_then(Value::as_array).cloned()).unwrap_or_default();
    Ok((format!("{kind} \"{name}\""), rules))
}

/// Calls `f` with (why, rules) for each binding that names the caller and applies in
/// `namespace` (ClusterRoleBindings always, RoleBindings of that namespace) until `f`
/// answers true; whether it did.
fn visit(
    store: &Store,
    caller: Caller<'_>,
    namespace: &str,
    f: &mut dyn FnMut(String, &[Value]) -> bool,
) -> Result<bool, ApiError> {
    let mut bindings: Vec<(Value, String)> = list_sync(store, rbac_resource("clusterrolebindings")?, None)?
        .into_iter()
        .map(|b| (b, String::new()))
        .collect();
    if !namespace.is_empty() {
        let rbs = list_sync(store, rbac_resource("rolebindings")?, Some(namespace))?;
        bindings.extend(rbs.into_iter().map(|b| (b, namespace.to_string())));
    }
    for (binding, ns) in &bindings {
        let subjects = binding.get("subjects").and_then(Value::as_array).cloned().unwrap_or_default();
        let Some(subject) = subjects.iter().find(|s| subject_is(s, caller, ns)) else { continue };
        let (role, rules) = role_rules(store, binding, ns)?;
        let name = binding.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let what = if ns.is_empty() {
            format!("ClusterRoleBinding \"{name}\"")
        } else {
            format!("RoleBinding \"{name}/{ns}\"")
        };
        if f(format!("RBAC: allowed by {what} of {role} to {}", describe_subject(subject, ns)), &rules) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether RBAC allows `req` to the caller: the reason (naming the binding) if so.
pub async fn allows(store: &Store, caller: Caller<'_>, req: &Request) -> Result<Option<String>, ApiError> {
    let (store, name, groups, req) = (store.clone(), caller.name.to_string(), caller.groups.to_vec(), req.clone());
    blocking(move || {
        let caller = Caller { name: &name, groups: &groups };
        let mut reason = None;
        visit(&store, caller, &req.namespace, &mut |why, rules| {
            let hit = rules.iter().any(|r| rule_allows(r, &req));
            if hit {
                reason = Some(why);
            }
            hit
        })?;
        Ok(reason)
    })
    .await
}

/// Every rule bound to the caller that applies in `namespace` (for a
/// SelfSubjectRulesReview).
pub async fn rules_for(store: &Store, caller: Caller<'_>, namespace: &str) -> Result<Vec<Value>, ApiError> {
    let (store, name, groups, ns) =
        (store.clone(), caller.name.to_string(), caller.groups.to_vec(), namespace.to_string());
    blocking(move || {
        let mut all = Vec::new();
        visit(&store, Caller { name: &name, groups: &groups }, &ns, &mut |_, rules| {
            all.extend(rules.iter().cloned());
            false
        })?;
        Ok(all)
    })
    .await
}

/// The rules an aggregated ClusterRole gets: those of every other ClusterRole one of its
/// selectors picks, in name order, each once.
fn aggregated_rules(role: &Value, all: &[Value]) -> Option<Vec<Value>> {
    let selectors = role.pointer("/aggregationRule/clusterRoleSelectors")?.as_array()?;
    let me = role.pointer("/metadata/name");
    let mut sorted: Vec<&Value> = all.iter().filter(|r| r.pointer("/metadata/name") != me).collect();
    sorted.sort_by_key(|r| r.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string());
    let mut rules: Vec<Value> = Vec::new();
    for other in sorted {
        let labels = other.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
        if selectors.iter().any(|s| crate::server::registry::kinds::selects(s, &labels)) {
            for rule in other.get("rules").and_then(Value::as_array).into_iter().flatten() {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
    }
    Some(rules)
}

/// The clusterrole-aggregation controller's work, done at once: every ClusterRole with an
/// `aggregationRule` gets the rules of those it selects written into its `rules`. Repeated
/// until nothing changes (admin aggregates edit, which aggregates view), at most a few
/// rounds; a write that loses a race is done again in the next round.
pub async fn aggregate(store: &Store) -> Result<(), ApiError> {
    let r = rbac_resource("clusterroles")?;
    for _ in 0..5 {
        let s = store.clone();
        let all = blocking(move || list_sync(&s, r, None)).await?;
        let mut changed = false;
        for role in &all {
            let Some(rules) = aggregated_rules(role, &all) else { continue };
            if role.get("rules").and_then(Value::as_array).cloned().unwrap_or_default() == rules {
                continue;
            }
            let mut updated = role.clone();
            updated["rules"] = Value::Array(rules);
            let name = role.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            let body = updated.to_string().into_bytes();
            let validation = (objects::FieldValidation::Lenient, None, false);
            match objects::update(store.clone(), r, None, name, objects::Part::Main, &body, validation).await {
                Ok(_) => changed = true,
                Err(RegistryError::Conflict { .. }) => changed = true,
                Err(e) => return Err(e.into()),
            }
        }
        if !changed {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(verb: &str, sub: &str, name: &str) -> Request {
        Request {
            verb: verb.into(),
            resource: "pods".into(),
            subresource: sub.into(),
            namespace: "dev".into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_rule_covers_its_verbs_groups_resources_subresources_and_names() {
        let rule = json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]});
        assert!(rule_allows(&rule, &pods("get", "", "")));
        assert!(rule_allows(&rule, &pods("get", "log", "p")));
        assert!(!rule_allows(&rule, &pods("get", "exec", "p")), "another subresource");
        assert!(!rule_allows(&rule, &pods("delete", "", "p")), "another verb");
        assert!(!rule_allows(&rule, &Request { group: "apps".into(), ..pods("get", "", "") }), "another group");
        let star = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]});
        assert!(rule_allows(&star, &pods("delete", "exec", "p")));
        let any_status = json!({"apiGroups": [""], "resources": ["*/status"], "verbs": ["update"]});
        assert!(rule_allows(&any_status, &pods("update", "status", "p")));
        assert!(!rule_allows(&any_status, &pods("update", "", "p")));
        let named = json!({"apiGroups": [""], "resources": ["pods"], "resourceNames": ["p"], "verbs": ["get", "list"]});
        assert!(rule_allows(&named, &pods("get", "", "p")));
        assert!(!rule_allows(&named, &pods("get", "", "q")));
        assert!(!rule_allows(&named, &pods("list", "", "")), "resourceNames never cover a list");
        let urls = json!({"nonResourceURLs": ["/apis", "/apis/*", "/version"], "verbs": ["get"]});
        let path = |p: &str| Request { verb: "get".into(), path: Some(p.into()), ..Default::default() };
        assert!(rule_allows(&urls, &path("/apis")));
        assert!(rule_allows(&urls, &path("/apis/apps/v1")));
        assert!(!rule_allows(&urls, &path("/api")));
        assert!(!rule_allows(&urls, &pods("get", "", "")), "a URL rule covers no resource");
        assert!(!rule_allows(&rule, &path("/apis")), "a resource rule covers no URL");
    }

    #[test]
    fn subjects_name_users_groups_and_service_accounts() {
        let groups = vec!["devs".to_string(), "system:serviceaccounts".to_string()];
        let jane = Caller { name: "jane", groups: &groups };
        assert!(subject_is(&json!({"kind": "User", "name": "jane"}), jane, ""));
        assert!(!subject_is(&json!({"kind": "User", "name": "bob"}), jane, ""));
        assert!(subject_is(&json!({"kind": "Group", "name": "devs"}), jane, ""));
        let sa = Caller { name: "system:serviceaccount:dev:builder", groups: &groups };
        assert!(subject_is(&json!({"kind": "ServiceAccount", "name": "builder", "namespace": "dev"}), sa, ""));
        assert!(subject_is(&json!({"kind": "ServiceAccount", "name": "builder"}), sa, "dev"));
        assert!(!subject_is(&json!({"kind": "ServiceAccount", "name": "builder"}), sa, "prod"));
        assert_eq!(
            describe_subject(&json!({"kind": "ServiceAccount", "name": "builder"}), "dev"),
            "ServiceAccount \"builder/dev\""
        );
    }

    #[test]
    fn an_aggregated_role_gets_the_rules_of_the_roles_it_selects_once_each() {
        let rule = json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]});
        let all = vec![
            json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"to-view": "true"}}]}}),
            json!({"metadata": {"name": "b", "labels": {"to-view": "true"}}, "rules": [rule]}),
            json!({"metadata": {"name": "a", "labels": {"to-view": "true"}}, "rules": [rule, {"nonResourceURLs": ["/x"], "verbs": ["get"]}]}),
            json!({"metadata": {"name": "c", "labels": {"to-view": "false"}}, "rules": [{"verbs": ["*"]}]}),
        ];
        let rules = aggregated_rules(&all[0], &all).unwrap();
        assert_eq!(rules, vec![rule.clone(), json!({"nonResourceURLs": ["/x"], "verbs": ["get"]})]);
        assert_eq!(aggregated_rules(&all[1], &all), None);
    }
}
