//! The kinds whose rules are only defaults or a name rule: Secret, volumes and storage
//! classes, autoscalers, network policies, endpoint slices, priority classes, RBAC.

use base64::Engine as _;
use serde_json::{Value, json};

use super::fill::{each, or_set, spec};
use super::pod::pending;
use super::{Names, PLAIN, Strategy};

pub const SECRET: Strategy = Strategy {
    on_create: |obj| {
        if obj.get("type").is_none_or(|t| t.as_str() == Some("")) {
            obj["type"] = json!("Opaque");
        }
    },
    normalize: fold_string_data,
    ..PLAIN
};

/// A Secret's `stringData` is write-only: the API server folds it into `data`.
fn fold_string_data(obj: &mut Value) {
    if let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        for (k, v) in strings {
            let encoded = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
            obj["data"][k] = json!(encoded);
        }
    }
}

pub const PERSISTENT_VOLUME: Strategy = Strategy {
    names: Names::PathSegment,
    status: true,
    on_create: pending,
    defaults: |obj, _| {
        if let Some(spec) = spec(obj) {
            or_set(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            or_set(spec, "volumeMode", json!("Filesystem"));
        }
    },
    ..PLAIN
};

pub const PERSISTENT_VOLUME_CLAIM: Strategy = Strategy {
    status: true,
    on_create: pending,
    defaults: |obj, _| {
        if let Some(spec) = spec(obj) {
            or_set(spec, "volumeMode", json!("Filesystem"));
        }
    },
    ..PLAIN
};

pub const STORAGE_CLASS: Strategy = Strategy {
    defaults: |obj, _| {
        or_set(obj, "reclaimPolicy", json!("Delete"));
        or_set(obj, "volumeBindingMode", json!("Immediate"));
    },
    ..PLAIN
};

pub const HORIZONTAL_POD_AUTOSCALER: Strategy = Strategy {
    status: true,
    categories: &["all"],
    defaults: |obj, version| {
        if let Some(spec) = spec(obj) {
            or_set(spec, "minReplicas", json!(1));
            // autoscaling/v2 spells the v1 default (80% CPU) out as a metric.
            if version == "v2" && spec.get("metrics").and_then(Value::as_array).is_none_or(Vec::is_empty) {
                spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]);
            }
        }
    },
    ..PLAIN
};

pub const NETWORK_POLICY: Strategy = Strategy {
    defaults: |obj, _| {
        if let Some(spec) = spec(obj) {
            // Ingress always, Egress when egress rules are given.
            let egress = spec.get("egress").and_then(Value::as_array).is_some_and(|e| !e.is_empty());
            or_set(spec, "policyTypes", if egress { json!(["Ingress", "Egress"]) } else { json!(["Ingress"]) });
            for direction in ["ingress", "egress"] {
                for rule in each(spec, direction) {
                    for p in each(rule, "ports") {
                        or_set(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    },
    ..PLAIN
};

pub const ENDPOINT_SLICE: Strategy = Strategy {
    defaults: |obj, _| {
        for p in each(obj, "ports") {
            or_set(p, "protocol", json!("TCP"));
        }
    },
    ..PLAIN
};

pub const PRIORITY_CLASS: Strategy =
    Strategy { defaults: |obj, _| or_set(obj, "preemptionPolicy", json!("PreemptLowerPriority")), ..PLAIN };

pub const RBAC_ROLE: Strategy = Strategy { names: Names::PathSegment, ..PLAIN };

pub const RBAC_BINDING: Strategy = Strategy {
    names: Names::PathSegment,
    defaults: |obj, _| {
        // Users and groups are RBAC's; service accounts are core's.
        for s in each(obj, "subjects") {
            if s["kind"] != "ServiceAccount" {
                or_set(s, "apiGroup", json!("rbac.authorization.k8s.io"));
            }
        }
    },
    ..PLAIN
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secrets_string_data_is_folded_into_data_and_its_type_defaults_to_opaque() {
        let mut s = json!({"stringData": {"user": "admin"}});
        (SECRET.on_create)(&mut s);
        (SECRET.normalize)(&mut s);
        assert_eq!(s, json!({"type": "Opaque", "data": {"user": "YWRtaW4="}}));
    }

    #[test]
    fn autoscaling_v2_spells_out_the_cpu_default_and_v1_does_not() {
        let mut v2 = json!({"spec": {}});
        (HORIZONTAL_POD_AUTOSCALER.defaults)(&mut v2, "v2");
        assert_eq!(v2["spec"]["metrics"][0]["resource"]["name"], "cpu");
        let mut v1 = json!({"spec": {}});
        (HORIZONTAL_POD_AUTOSCALER.defaults)(&mut v1, "v1");
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["spec"]["minReplicas"], 1);
    }
}
