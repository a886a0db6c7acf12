//! Defaulting and validation as kube-apiserver applies them on create and update, driven
//! with the real kubectl: what comes back has the defaults Kubernetes fills in, and what
//! Kubernetes refuses is refused with its words and a cause naming each field.

mod common;

use std::fs;

use common::server::{Server, free_port};

fn apply(s: &Server, dir: &std::path::Path, name: &str, yaml: &str) -> std::process::Output {
    let file = dir.join(name);
    fs::write(&file, yaml).unwrap();
    s.kubectl(&["apply", "-f", file.to_str().unwrap()])
}

fn jsonpath(s: &Server, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let expr = format!("jsonpath={path}");
    args.extend(["-o", &expr]);
    s.ok(&args)
}

#[test]
fn created_objects_come_back_with_the_defaults_kube_apiserver_fills_in() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let out = apply(
        &s,
        tmp.path(),
        "defaults.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  \
         template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx:1.27, ports: [{containerPort: 80}]}]\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: box}\nspec:\n  containers: [{name: box, image: busybox}]\n---\n\
         apiVersion: batch/v1\nkind: Job\nmetadata: {name: once}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      \
         containers: [{name: c, image: busybox:1.36}]\n",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let svc = jsonpath(
        &s,
        &["svc", "web"],
        "{.spec.type} {.spec.sessionAffinity} {.spec.ports[0].protocol} {.spec.ports[0].targetPort} {.spec.internalTrafficPolicy}",
    );
    assert_eq!(svc, "ClusterIP None TCP 80 Cluster");
    let deploy = jsonpath(
        &s,
        &["deploy", "web"],
        "{.spec.replicas} {.spec.strategy.type} {.spec.strategy.rollingUpdate.maxUnavailable} \
         {.spec.strategy.rollingUpdate.maxSurge} {.spec.revisionHistoryLimit} {.spec.progressDeadlineSeconds} \
         {.spec.template.spec.containers[0].imagePullPolicy} {.spec.template.spec.containers[0].ports[0].protocol}",
    );
    assert_eq!(deploy, "1 RollingUpdate 25% 25% 10 600 IfNotPresent TCP");
    let pod = jsonpath(
        &s,
        &["pod", "box"],
        "{.spec.restartPolicy} {.spec.dnsPolicy} {.spec.terminationGracePeriodSeconds} {.spec.schedulerName} \
         {.spec.containers[0].terminationMessagePath} {.spec.containers[0].terminationMessagePolicy} \
         {.spec.containers[0].imagePullPolicy}",
    );
    assert_eq!(pod, "Always ClusterFirst 30 default-scheduler /dev/termination-log File Always");
    let job = jsonpath(
        &s,
        &["job", "once"],
        "{.spec.completions} {.spec.parallelism} {.spec.backoffLimit} {.spec.completionMode}",
    );
    assert_eq!(job, "1 1 6 NonIndexed");

    // An update that leaves the defaults out gets them again, and applying the same file
    // twice changes nothing.
    let again = apply(
        &s,
        tmp.path(),
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("service/web unchanged"), "{again:?}");
}

#[test]
fn invalid_objects_are_refused_with_kube_apiservers_words_and_a_cause_per_field() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let refused = |name: &str, yaml: &str, want: &str| {
        let out = apply(&s, tmp.path(), name, yaml);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success() && err.contains(want), "{name}: want {want:?} in:\n{err}");
    };
    refused(
        "selector.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad}\nspec:\n  selector: {matchLabels: {app: web}}\n  \
         template:\n    metadata: {labels: {app: other}}\n    spec:\n      containers: [{name: web, image: nginx}]\n",
        "The Deployment \"bad\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`",
    );
    refused(
        "name.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers: [{name: Web_1, image: nginx}]\n",
        "The Pod \"bad\" is invalid: spec.containers[0].name: Invalid value: \"Web_1\": a lowercase RFC 1123 label",
    );
    refused(
        "image.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers: [{name: web, image: \"\"}]\n",
        "The Pod \"bad\" is invalid: spec.containers[0].image: Required value",
    );
    refused(
        "port.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers: [{name: web, image: nginx, ports: [{containerPort: 70000}]}]\n",
        "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
    );
    refused(
        "nodeport.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  type: NodePort\n  ports: [{port: 80, nodePort: 80}]\n",
        "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
    );
    refused(
        "job.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: bad}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: busybox}]\n",
        "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
    );
    // Security profiles and sysctls: the same rules as `nodectl run`'s (model::podspec).
    refused(
        "apparmor.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  securityContext: {appArmorProfile: {type: Localhost}}\n  containers: [{name: web, image: nginx}]\n",
        "spec.securityContext.appArmorProfile.localhostProfile: Required value: must be set when AppArmor type is Localhost",
    );
    refused(
        "seccomp.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad}\nspec:\n  selector: {matchLabels: {app: web}}\n  \
         template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx, securityContext: {seccompProfile: {type: Strict}}}]\n",
        "spec.template.spec.containers[0].securityContext.seccompProfile.type: Unsupported value: \"Strict\"",
    );
    refused(
        "sysctl.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  securityContext: {sysctls: [{name: Net.IPv4, value: \"1\"}]}\n  containers: [{name: web, image: nginx}]\n",
        "spec.securityContext.sysctls[0].name: Invalid value: \"Net.IPv4\"",
    );
    // Nothing was stored (but the `kubernetes` Service, which every server keeps).
    assert_eq!(s.ok(&["get", "deploy,pods,svc,jobs", "-o", "name"]).trim(), "service/kubernetes");

    // Immutable fields: a Service's cluster IP, a Job's template.
    let svc = |ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: db}}\nspec:\n  clusterIP: {ip}\n  ports: [{{port: 5432}}]\n"
        )
    };
    assert!(apply(&s, tmp.path(), "svc1.yaml", &svc("10.96.0.10")).status.success());
    refused(
        "svc2.yaml",
        &svc("10.96.0.11"),
        "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.11\"}: may not change once set",
    );
    let job = |image: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: once}}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      \
             containers: [{{name: c, image: {image}}}]\n"
        )
    };
    assert!(apply(&s, tmp.path(), "job1.yaml", &job("busybox:1.36")).status.success());
    refused("job2.yaml", &job("busybox:1.37"), "The Job \"once\" is invalid: spec.template: Invalid value:");
    assert!(s.ok(&["get", "job", "once", "-o", "yaml"]).contains("busybox:1.36"));

    // Over the wire: a 422 Status whose causes name each field, with kube's reasons.
    let body = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"two"},"spec":{"containers":[{"name":"Web_1","image":""}]}}"#;
    let (code, text) =
        s.request("POST", "/api/v1/namespaces/default/pods", Some(&s.admin_token()), Some(("application/json", body)));
    assert_eq!(code, 422, "{text}");
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["reason"], "Invalid");
    assert!(
        status["message"].as_str().unwrap().starts_with("Pod \"two\" is invalid: [spec.containers[0].name: "),
        "{text}"
    );
    let causes: Vec<(&str, &str)> = status["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["field"].as_str().unwrap(), c["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        causes,
        [("spec.containers[0].name", "FieldValueInvalid"), ("spec.containers[0].image", "FieldValueRequired")]
    );
    // A kind of a named group: the message qualifies it, the details hold kind and group.
    let body = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"three"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"c"}},"spec":{"containers":[{"name":"c","image":"busybox"}]}}}}"#;
    let (code, text) = s.request(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        Some(&s.admin_token()),
        Some(("application/json", body)),
    );
    assert_eq!(code, 422, "{text}");
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("Deployment.apps \"three\" is invalid: spec.template.metadata.labels"),
        "{text}"
    );
    assert_eq!(
        (&status["details"]["kind"], &status["details"]["group"]),
        (&serde_json::json!("Deployment"), &serde_json::json!("apps")),
        "{text}"
    );
}
