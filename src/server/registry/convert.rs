//! Conversion between the versions of a kind that share one stored object, as
//! kube-apiserver converts them: HorizontalPodAutoscalers are stored as autoscaling/v2 and
//! served as v1 too; Events are stored as core/v1 and served as events.k8s.io/v1 too.
//!
//! What one version cannot hold travels in annotations, as kube's conversions keep it, so
//! that reading in one version and writing back in it loses nothing of the other.

use serde_json::{Map, Value, json};

use super::resources::Resource;

/// The annotations kube's autoscaling v1 conversion keeps v2's fields in.
const HPA_METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const HPA_BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
const HPA_CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const HPA_CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";

/// `obj` (of `r`'s kind, in whichever served version it is) in `r`'s version.
pub fn to_version(r: &Resource, mut obj: Value) -> Value {
    let want = r.api_version();
    let have = obj.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
    if have == want || !obj.is_object() {
        return obj;
    }
    // A custom kind's versions differ in their apiVersion alone: the CRD's conversion
    // strategy None (the only one served here), as kube's nopConverter converts.
    if r.custom.is_some() {
        if have.split_once('/').is_some_and(|(group, _)| group == r.group) {
            obj["apiVersion"] = json!(want);
        }
        return obj;
    }
    match (r.kind, have.as_str(), want.as_str()) {
        ("HorizontalPodAutoscaler", "autoscaling/v1", "autoscaling/v2") => hpa_v1_to_v2(&mut obj),
        ("HorizontalPodAutoscaler", "autoscaling/v2", "autoscaling/v1") => hpa_v2_to_v1(&mut obj),
        ("Event", "v1", "events.k8s.io/v1") => rename(&mut obj, EVENT_FIELDS.iter().map(|(core, ev)| (*core, *ev))),
        ("Event", "events.k8s.io/v1", "v1") => rename(&mut obj, EVENT_FIELDS.iter().map(|(core, ev)| (*ev, *core))),
        // Not a version this kind is served in: left as it is, for the schema check to judge.
        _ => return obj,
    }
    obj["apiVersion"] = json!(want);
    obj
}

/// core/v1 Event fields and their events.k8s.io/v1 names; the others are the same.
const EVENT_FIELDS: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn rename<'a>(obj: &mut Value, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    let Some(o) = obj.as_object_mut() else { return };
    let moved: Vec<(&str, Value)> = pairs.filter_map(|(from, to)| o.remove(from).map(|v| (to, v))).collect();
    for (to, v) in moved {
        o.insert(to.to_string(), v);
    }
}

fn annotations(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let meta = obj.as_object_mut()?.entry("metadata").or_insert_with(|| json!({}));
    let meta = meta.as_object_mut()?;
    let a = meta.entry("annotations").or_insert_with(|| json!({}));
    if a.is_null() {
        *a = json!({});
    }
    a.as_object_mut()
}

/// Takes the annotation `key` (JSON text) out of `obj`, parsed.
fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let taken = obj.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut).and_then(|a| a.remove(key));
    drop_empty_annotations(obj);
    taken.and_then(|t| t.as_str().and_then(|s| serde_json::from_str(s).ok()))
}

/// An annotations map left empty is not kept, as Go's omitempty drops it.
fn drop_empty_annotations(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        && meta.get("annotations").and_then(Value::as_object).is_some_and(Map::is_empty)
    {
        meta.remove("annotations");
    }
}

fn put_annotation(obj: &mut Value, key: &str, v: &Value) {
    if let Some(a) = annotations(obj) {
        a.insert(key.to_string(), json!(v.to_string()));
    }
}

/// Whether a v2 metric is the one v1 has a field for: CPU utilization of the pods.
fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource" && m["resource"]["name"] == "cpu" && m["resource"]["target"]["type"] == "Utilization"
}

fn hpa_v1_to_v2(obj: &mut Value) {
    let extra_metrics = take_annotation(obj, HPA_METRICS);
    let behavior = take_annotation(obj, HPA_BEHAVIOR);
    let conditions = take_annotation(obj, HPA_CONDITIONS);
    let current = take_annotation(obj, HPA_CURRENT_METRICS);
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let mut metrics: Vec<Value> = Vec::new();
        if let Some(cpu) = spec.remove("targetCPUUtilizationPercentage").filter(|v| !v.is_null()) {
            metrics.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}));
        }
        metrics.extend(extra_metrics.and_then(|m| m.as_array().cloned()).unwrap_or_default());
        if !metrics.is_empty() {
            spec.insert("metrics".into(), json!(metrics));
        }
        if let Some(b) = behavior {
            spec.insert("behavior".into(), b);
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        let mut metrics: Vec<Value> = Vec::new();
        if let Some(cpu) = status.remove("currentCPUUtilizationPercentage").filter(|v| !v.is_null()) {
            metrics
                .push(json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}));
        }
        metrics.extend(current.and_then(|m| m.as_array().cloned()).unwrap_or_default());
        if !metrics.is_empty() {
            status.insert("currentMetrics".into(), json!(metrics));
        }
        if let Some(c) = conditions {
            status.insert("conditions".into(), c);
        }
    }
}

fn hpa_v2_to_v1(obj: &mut Value) {
    let mut extra = Vec::new();
    let mut behavior = None;
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        for m in spec.remove("metrics").and_then(|m| m.as_array().cloned()).unwrap_or_default() {
            if is_cpu_utilization(&m) && !spec.contains_key("targetCPUUtilizationPercentage") {
                spec.insert(
                    "targetCPUUtilizationPercentage".into(),
                    m["resource"]["target"]["averageUtilization"].clone(),
                );
            } else {
                extra.push(m);
            }
        }
        behavior = spec.remove("behavior").filter(|b| !b.is_null());
    }
    let mut current = Vec::new();
    let mut conditions = None;
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        for m in status.remove("currentMetrics").and_then(|m| m.as_array().cloned()).unwrap_or_default() {
            let cpu = m["type"] == "Resource" && m["resource"]["name"] == "cpu";
            match m["resource"]["current"].get("averageUtilization") {
                Some(u) if cpu && !status.contains_key("currentCPUUtilizationPercentage") => {
                    status.insert("currentCPUUtilizationPercentage".into(), u.clone());
                }
                _ => current.push(m),
            }
        }
        conditions = status.remove("conditions").filter(|c| c.as_array().is_some_and(|a| !a.is_empty()));
    }
    if !extra.is_empty() {
        put_annotation(obj, HPA_METRICS, &json!(extra));
    }
    if let Some(b) = behavior {
        put_annotation(obj, HPA_BEHAVIOR, &b);
    }
    if let Some(c) = conditions {
        put_annotation(obj, HPA_CONDITIONS, &c);
    }
    if !current.is_empty() {
        put_annotation(obj, HPA_CURRENT_METRICS, &json!(current));
    }
    drop_empty_annotations(obj);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::registry::resources::find;

    #[test]
    fn an_hpa_written_as_v2_reads_as_v1_and_back_unchanged() {
        let v1 = find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let v2 = find("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
        let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"}, "minReplicas": 1, "maxReplicas": 5,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                                 {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}],
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}});
        let old = to_version(v1, hpa.clone());
        assert_eq!(old["apiVersion"], "autoscaling/v1");
        assert_eq!(old["spec"]["targetCPUUtilizationPercentage"], 50);
        assert!(old["spec"].get("metrics").is_none());
        assert!(old["metadata"]["annotations"][HPA_METRICS].as_str().unwrap().contains("memory"));
        assert_eq!(to_version(v2, old), hpa);
    }

    #[test]
    fn a_core_event_reads_as_an_events_k8s_io_event_and_back() {
        let core = find("", "v1", "events").unwrap();
        let events = find("events.k8s.io", "v1", "events").unwrap();
        let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"},
            "message": "pulled", "reason": "Pulled", "count": 2, "source": {"component": "kubelet"}, "type": "Normal"});
        let new = to_version(events, ev.clone());
        assert_eq!(new["apiVersion"], "events.k8s.io/v1");
        assert_eq!(new["regarding"]["name"], "p");
        assert_eq!(new["note"], "pulled");
        assert_eq!(new["deprecatedCount"], 2);
        assert_eq!(to_version(core, new), ev);
        assert!(std::ptr::eq(events.storage(), core));
        assert_eq!(events.key(Some("ns"), Some("e")), core.key(Some("ns"), Some("e")));
    }
}
