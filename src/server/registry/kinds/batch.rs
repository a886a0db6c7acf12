//! batch/v1: Jobs and CronJobs. A Job's pods must end (restartPolicy OnFailure or Never),
//! and its template cannot change once created.

use serde_json::{Value, json};

use super::fill::{object, or_set, spec};
use super::pod::template;
use super::rules::{immutable, not_negative, selects, unmatched_template};
use super::{PLAIN, Problem, Strategy};

pub const JOB: Strategy = Strategy {
    status: true,
    categories: &["all"],
    defaults: |obj, _| {
        if let Some(spec) = spec(obj) {
            job_spec(spec);
        }
    },
    validate: |obj, old| {
        let mut out = job(&obj["spec"], "spec");
        out.extend(immutable(old, &obj["spec"], "template"));
        out
    },
    ..PLAIN
};

pub const CRON_JOB: Strategy = Strategy {
    status: true,
    categories: &["all"],
    defaults: |obj, _| {
        if let Some(spec) = spec(obj) {
            or_set(spec, "concurrencyPolicy", json!("Allow"));
            or_set(spec, "suspend", json!(false));
            or_set(spec, "successfulJobsHistoryLimit", json!(3));
            or_set(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(job) = object(spec, "jobTemplate").and_then(|t| object(t, "spec")) {
                job_spec(job);
            }
        }
    },
    validate: |obj, _| {
        let spec = &obj["spec"];
        let mut out = Vec::new();
        if spec["schedule"].as_str().is_none_or(str::is_empty) {
            out.push(("spec.schedule".into(), "Required value".into()));
        }
        out.extend(job(&spec["jobTemplate"]["spec"], "spec.jobTemplate.spec"));
        out
    },
    ..PLAIN
};

fn job_spec(spec: &mut Value) {
    if spec.get("completions").is_none_or(Value::is_null) && spec.get("parallelism").is_none_or(Value::is_null) {
        spec["completions"] = json!(1);
    }
    or_set(spec, "parallelism", json!(1));
    or_set(spec, "backoffLimit", json!(6));
    or_set(spec, "completionMode", json!("NonIndexed"));
    or_set(spec, "suspend", json!(false));
    or_set(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    template(spec);
}

/// A Job's spec (or a CronJob's job template's) at `path`.
fn job(spec: &Value, path: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    // A Job's selector is the server's to make unless manualSelector; one given must match.
    let labels = &spec["template"]["metadata"]["labels"];
    if spec["selector"].is_object() && !selects(&spec["selector"], labels) {
        out.push(unmatched_template(labels, path));
    }
    let pod = format!("{path}.template.spec");
    out.extend(crate::model::podspec::problems(&spec["template"]["spec"], &pod));
    // The restart policy was defaulted to Always: a Job's pods must end.
    let policy = spec["template"]["spec"]["restartPolicy"].as_str().unwrap_or_default();
    if !matches!(policy, "OnFailure" | "Never") && !out.iter().any(|(f, _)| f.ends_with("restartPolicy")) {
        out.push((
            format!("{pod}.restartPolicy"),
            format!("Unsupported value: \"{policy}\": supported values: \"OnFailure\", \"Never\""),
        ));
    }
    for field in ["parallelism", "completions", "backoffLimit"] {
        out.extend(not_negative(spec, field, path));
    }
    out
}
