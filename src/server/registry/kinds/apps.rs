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
    validate: |obj, old| validate(obj, old, "deployment"),
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
