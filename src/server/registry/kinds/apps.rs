//! apps/v1 workloads: Deployment, ReplicaSet, DaemonSet, StatefulSet. Their selectors
//! must pick their templates and cannot change (the workload would lose its pods).

use serde_json::{Value, json};

use super::fill::{object, or_set, spec};
use super::pod::template;
use super::rules::{immutable, not_negative, workload};
use super::{PLAIN, Problem, Strategy};

const WORKLOAD: Strategy = Strategy { status: true, categories: &["all"], ..PLAIN };

pub const DEPLOYMENT: Strategy = Strategy {
    scale: true,
    defaults: |obj, _| {
        if let Some(spec) = spec(obj) {
            or_set(spec, "replicas", json!(1));
            or_set(spec, "revisionHistoryLimit", json!(10));
            or_set(spec, "progressDeadlineSeconds", json!(600));
            if let Some(strategy) = object(spec, "strategy") {
                or_set(strategy, "type", json!("RollingUpdate"));
                if strategy["type"] == "RollingUpdate"
                    && let Some(ru) = object(strategy, "rollingUpdate")
                {
                    or_set(ru, "maxUnavailable", json!("25%"));
                    or_set(ru, "maxSurge", json!("25%"));
                }
            }
            template(spec);
        }
    },
    validate: |obj, old| {
        let mut out = validate(obj, old, "deployment");
        out.extend(strategy(&obj["spec"]["strategy"]));
        out
    },
    ..WORKLOAD
};

pub const REPLICA_SET: Strategy = Strategy {
    scale: true,
    defaults: |obj, _| {
        if let Some(spec) = spec(obj) {
            or_set(spec, "replicas", json!(1));
            template(spec);
        }
    },
    validate: |obj, old| validate(obj, old, "replicaset"),
    ..WORKLOAD
};

pub const DAEMON_SET: Strategy = Strategy {
    defaults: |obj, _| {
        if let Some(spec) = spec(obj) {
            or_set(spec, "revisionHistoryLimit", json!(10));
            if let Some(strategy) = object(spec, "updateStrategy") {
                or_set(strategy, "type", json!("RollingUpdate"));
                if strategy["type"] == "RollingUpdate"
                    && let Some(ru) = object(strategy, "rollingUpdate")
                {
                    or_set(ru, "maxUnavailable", json!(1));
                    or_set(ru, "maxSurge", json!(0));
                }
            }
            template(spec);
        }
    },
    validate: |obj, old| validate(obj, old, "daemonset"),
    ..WORKLOAD
};

pub const STATEFUL_SET: Strategy = Strategy {
    scale: true,
    defaults: |obj, _| {
        if let Some(spec) = spec(obj) {
            or_set(spec, "replicas", json!(1));
            or_set(spec, "podManagementPolicy", json!("OrderedReady"));
            or_set(spec, "revisionHistoryLimit", json!(10));
            if let Some(strategy) = object(spec, "updateStrategy") {
                or_set(strategy, "type", json!("RollingUpdate"));
                if strategy["type"] == "RollingUpdate"
                    && let Some(ru) = object(strategy, "rollingUpdate")
                {
                    or_set(ru, "partition", json!(0));
                }
            }
            if let Some(policy) = object(spec, "persistentVolumeClaimRetentionPolicy") {
                or_set(policy, "whenDeleted", json!("Retain"));
                or_set(policy, "whenScaled", json!("Retain"));
            }
            template(spec);
        }
    },
    validate: |obj, old| validate(obj, old, "statefulset"),
    ..WORKLOAD
};

fn validate(obj: &Value, old: Option<&Value>, kind: &str) -> Vec<Problem> {
    let spec = &obj["spec"];
    let mut out = workload(spec, kind);
    out.extend(not_negative(spec, "replicas", "spec"));
    out.extend(immutable(old, spec, "selector"));
    out
}

/// A Deployment's strategy, as kube's ValidateDeploymentStrategy words its problems.
fn strategy(strategy: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    let ru = &strategy["rollingUpdate"];
    match strategy["type"].as_str() {
        None | Some("RollingUpdate") => {}
        Some("Recreate") => {
            if !ru.is_null() {
                out.push((
                    "spec.strategy.rollingUpdate".into(),
                    "Forbidden: may not be specified when strategy `type` is 'Recreate'".into(),
                ));
            }
            return out;
        }
        Some(other) => {
            out.push((
                "spec.strategy.type".into(),
                format!("Unsupported value: {other:?}: supported values: \"Recreate\", \"RollingUpdate\""),
            ));
            return out;
        }
    }
    if ru.is_null() {
        return out;
    }
    // An int or a percentage; the percentage's number, and how kube prints the value.
    let amount = |field: &str| -> Option<(i64, bool, String)> {
        match &ru[field] {
            Value::Number(n) => n.as_i64().map(|n| (n, false, n.to_string())),
            Value::String(s) => s.strip_suffix('%').and_then(|p| p.parse().ok()).map(|p| (p, true, format!("{s:?}"))),
            _ => None,
        }
    };
    for field in ["maxUnavailable", "maxSurge"] {
        let path = format!("spec.strategy.rollingUpdate.{field}");
        match (&ru[field], amount(field)) {
            (Value::Null, _) => {}
            (v, None) => out.push((
                path,
                format!(
                    "Invalid value: {v}: a valid percent string must be a numeric string followed by an ending '%'"
                ),
            )),
            (_, Some((n, _, shown))) if n < 0 => {
                out.push((path, format!("Invalid value: {shown}: must be greater than or equal to 0")))
            }
            (_, Some((n, true, shown))) if field == "maxUnavailable" && n > 100 => {
                out.push((path, format!("Invalid value: {shown}: must not be greater than 100%")))
            }
            _ => {}
        }
    }
    if let (Some((0, _, shown)), Some((0, ..))) = (amount("maxUnavailable"), amount("maxSurge")) {
        out.push((
            "spec.strategy.rollingUpdate.maxUnavailable".into(),
            format!("Invalid value: {shown}: may not be 0 when `maxSurge` is 0"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_strategies_are_checked_as_kube_checks_them() {
        let msgs = |v: Value| strategy(&v).into_iter().map(|(p, m)| format!("{p}: {m}")).collect::<Vec<_>>();
        assert_eq!(
            msgs(json!({"type": "Sideways"})),
            ["spec.strategy.type: Unsupported value: \"Sideways\": supported values: \"Recreate\", \"RollingUpdate\""]
        );
        assert_eq!(
            msgs(json!({"type": "Recreate", "rollingUpdate": {}})),
            ["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"]
        );
        assert_eq!(
            msgs(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}})),
            ["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"]
        );
        assert_eq!(
            msgs(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "150%", "maxSurge": -1}})),
            [
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%",
                "spec.strategy.rollingUpdate.maxSurge: Invalid value: -1: must be greater than or equal to 0"
            ]
        );
        assert!(
            msgs(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}}))
                .is_empty()
        );
    }
}
