//! CustomResourceDefinitions, followed as Kubernetes' "Extend the Kubernetes API with
//! CustomResourceDefinitions" tutorial does with the real kubectl 1.32: a CRD serves its
//! kind at once (discovery, short names, printer columns), the structural schema prunes,
//! defaults and validates in kube's words, status and scale subresources, watches, a
//! restart, and deleting the CRD deletes its objects (waiting for their finalizers) and
//! stops serving the kind.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::server::{Server, free_port, wait_until};
use serde_json::Value;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames: [ct]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.labelSelector
    additionalPrinterColumns:
    - name: Spec
      type: string
      jsonPath: .spec.cronSpec
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [cronSpec]
            properties:
              cronSpec:
                type: string
                pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'
              image:
                type: string
                default: busybox
              replicas:
                type: integer
                minimum: 0
                maximum: 10
                default: 1
          status:
            type: object
            properties:
              replicas: {type: integer}
              labelSelector: {type: string}
"#;

fn write(dir: &Path, name: &str, yaml: &str) -> String {
    let file = dir.join(name);
    fs::write(&file, yaml).unwrap();
    file.to_str().unwrap().to_string()
}

fn raw(s: &Server, path: &str) -> Value {
    serde_json::from_str(&s.ok(&["get", "--raw", path])).unwrap()
}

fn crontab(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {{name: {name}, namespace: default}}\nspec: {spec}\n"
    )
}

#[test]
fn a_crd_serves_its_kind_as_kube_apiserver_does() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let s = Server::start(&data, port, &[]);
    let crd = write(tmp.path(), "crd.yaml", CRD);
    s.ok(&["apply", "-f", &crd]);
    s.ok(&["wait", "--for", "condition=established", "--timeout=30s", "crd/crontabs.stable.example.com"]);
    let got = s.json(&["get", "crd", "crontabs.stable.example.com"]);
    assert_eq!(got["status"]["acceptedNames"]["kind"], "CronTab");
    assert_eq!(got["status"]["storedVersions"], serde_json::json!(["v1"]));
    assert_eq!(got["spec"]["names"]["listKind"], "CronTabList");
    assert!(got["metadata"]["finalizers"].to_string().contains("customresourcecleanup.apiextensions.k8s.io"));

    // Discovery: the kind, its short name and category, its subresources.
    let api = s.ok(&["api-resources", "--api-group=stable.example.com", "--no-headers"]);
    assert!(api.contains("crontabs") && api.contains("ct") && api.contains("CronTab"), "{api}");
    let list = raw(&s, "/apis/stable.example.com/v1");
    let names: Vec<&str> = list["resources"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["crontabs", "crontabs/status", "crontabs/scale"]);

    // kubectl explain reads the CRD's schema from /openapi/v3.
    let explained = s.ok(&["explain", "crontab.spec.replicas"]);
    assert!(explained.contains("FIELD: replicas <integer>"), "{explained}");

    // Created with its defaults; listed with its printer columns, also by short name.
    s.ok(&["create", "-f", &write(tmp.path(), "a.yaml", &crontab("a", "{cronSpec: '* * * * */5'}"))]);
    let a = s.json(&["get", "crontab", "a"]);
    assert_eq!(a["spec"]["image"], "busybox");
    assert_eq!(a["spec"]["replicas"], 1);
    let table = s.ok(&["get", "ct"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SPEC", "REPLICAS", "AGE"], "{table}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..2], ["a", "*"], "{table}");
    assert!(s.ok(&["get", "all", "-o", "name"]).contains("crontab.stable.example.com/a"));

    // Unknown fields: refused by default (strict), pruned when validation is off.
    let extra = write(tmp.path(), "extra.yaml", &crontab("extra", "{cronSpec: '* * * * *', bogus: 1}"));
    let err = s.fails(&["create", "-f", &extra]);
    assert!(err.contains("unknown field \"spec.bogus\""), "{err}");
    s.ok(&["create", "--validate=false", "-f", &extra]);
    assert!(s.json(&["get", "ct", "extra"])["spec"].get("bogus").is_none());

    // The schema's rules, in kube's words, each field named.
    let bad = write(tmp.path(), "bad.yaml", &crontab("bad", "{cronSpec: 'never', replicas: 11, image: 3}"));
    let err = s.fails(&["create", "-f", &bad]);
    assert!(err.contains("The CronTab \"bad\" is invalid"), "{err}");
    assert!(err.contains("spec.cronSpec in body should match"), "{err}");
    assert!(
        err.contains("spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"),
        "{err}"
    );
    assert!(err.contains("spec.image in body must be of type string"), "{err}");
    let missing = write(tmp.path(), "missing.yaml", &crontab("missing", "{image: x}"));
    assert!(s.fails(&["create", "-f", &missing]).contains("spec.cronSpec: Required value"));

    // The status subresource: a write of the object keeps the status; /status writes it.
    s.ok(&["patch", "ct", "a", "--type=merge", "-p", r#"{"status": {"replicas": 9}}"#]);
    assert!(s.json(&["get", "ct", "a"])["status"].get("replicas").is_none());
    s.ok(&[
        "patch",
        "ct",
        "a",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status": {"replicas": 2, "labelSelector": "app=cron"}}"#,
    ]);
    // The scale subresource, at the CRD's paths.
    s.ok(&["scale", "ct", "a", "--replicas=5"]);
    assert_eq!(s.json(&["get", "ct", "a"])["spec"]["replicas"], 5);
    let scale = raw(&s, "/apis/stable.example.com/v1/namespaces/default/crontabs/a/scale");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=cron");
    // A strategic merge patch is not for custom kinds; merge and JSON patches are.
    let err = s.fails(&["patch", "ct", "a", "--type=strategic", "-p", r#"{"spec": {"image": "x"}}"#]);
    assert!(err.contains("UnsupportedMediaType") || err.contains("unknown format"), "{err}");
    s.ok(&["patch", "ct", "a", "--type=json", "-p", r#"[{"op": "replace", "path": "/spec/image", "value": "nginx"}]"#]);
    assert_eq!(s.json(&["get", "ct", "a"])["spec"]["image"], "nginx");
    // Server-side apply.
    let applied = write(tmp.path(), "applied.yaml", &crontab("applied", "{cronSpec: '0 * * * *', replicas: 3}"));
    s.ok(&["apply", "--server-side", "-f", &applied]);
    assert_eq!(s.json(&["get", "ct", "applied"])["spec"]["replicas"], 3);

    // A watch sees objects come and go.
    let rv = s.json(&["get", "ct"])["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(s.dir.join("admin.kubeconfig"))
        .args([
            "get",
            "--raw",
            &format!("/apis/stable.example.com/v1/namespaces/default/crontabs?watch=true&resourceVersion={rv}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(watch.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
    let reader = std::thread::spawn(move || {
        for line in lines.lines() {
            let Ok(line) = line else { break };
            let Ok(e) = serde_json::from_str::<Value>(&line) else { continue };
            let seen = (
                e["type"].as_str().unwrap_or("").to_string(),
                e["object"]["metadata"]["name"].as_str().unwrap_or("").to_string(),
            );
            if tx.send(seen).is_err() {
                break;
            }
        }
    });
    s.ok(&["create", "-f", &write(tmp.path(), "w.yaml", &crontab("watched", "{cronSpec: '* * * * *'}"))]);
    s.ok(&["delete", "ct", "watched"]);
    let mut seen = Vec::new();
    wait_until("the watch sees the CronTab added and deleted", 60, || {
        seen.extend(rx.try_iter());
        let has = |kind: &str| seen.iter().any(|(k, n)| k == kind && n == "watched");
        (has("ADDED") && has("DELETED")).then_some(())
    });
    watch.kill().unwrap();
    watch.wait().unwrap();
    reader.join().unwrap();

    // A restarted server serves the kind from its first request.
    s.terminate();
    let s = Server::start(&data, port, &[]);
    assert_eq!(s.json(&["get", "ct", "a"])["spec"]["replicas"], 5);

    // A second CRD claiming the same kind in the group is not established.
    let clash = CRD
        .replace("crontabs.stable.example.com", "crontabs2.stable.example.com")
        .replace("plural: crontabs", "plural: crontabs2")
        .replace("shortNames: [ct]", "shortNames: [ct2]");
    s.ok(&["create", "-f", &write(tmp.path(), "clash.yaml", &clash)]);
    let clash = s.json(&["get", "crd", "crontabs2.stable.example.com"]);
    let conditions = clash["status"]["conditions"].to_string();
    assert!(conditions.contains("NamesAccepted") && conditions.contains("\"False\""), "{conditions}");
    assert!(!s.kubectl(&["get", "crontabs2"]).status.success());
    s.ok(&["delete", "crd", "crontabs2.stable.example.com"]);

    // Deleting a namespace deletes the custom objects in it.
    s.ok(&["create", "namespace", "crns"]);
    let in_ns = crontab("in-ns", "{cronSpec: '* * * * *'}").replace("namespace: default", "namespace: crns");
    s.ok(&["create", "-f", &write(tmp.path(), "in-ns.yaml", &in_ns)]);
    s.ok(&["delete", "namespace", "crns", "--wait=false"]);
    wait_until("the namespace and its CronTab go", 60, || {
        (!s.kubectl(&["get", "namespace", "crns"]).status.success()).then_some(())
    });
    assert_eq!(
        s.ok(&["get", "ct", "-A", "-o", "name"]).trim(),
        "crontab.stable.example.com/a\ncrontab.stable.example.com/applied\ncrontab.stable.example.com/extra"
    );

    // A CRD without a storage version, or with a name that is not PLURAL.GROUP, is refused.
    let bad_crd = CRD.replace("storage: true", "storage: false");
    let err = s.fails(&["create", "-f", &write(tmp.path(), "badcrd.yaml", &bad_crd)]);
    assert!(
        err.contains("spec.versions") && err.contains("must have exactly one version marked as storage version"),
        "{err}"
    );

    // Deleting the CRD deletes its objects, waiting for their finalizers, and refuses new
    // ones meanwhile; then the kind is no longer served.
    s.ok(&["patch", "ct", "a", "--type=merge", "-p", r#"{"metadata": {"finalizers": ["example.com/hold"]}}"#]);
    s.ok(&["delete", "crd", "crontabs.stable.example.com", "--wait=false"]);
    wait_until("the CronTabs without finalizers go", 60, || {
        let left = s.ok(&["get", "ct", "-o", "name"]);
        (left.trim() == "crontab.stable.example.com/a").then_some(())
    });
    let terminating = s.json(&["get", "crd", "crontabs.stable.example.com"]);
    assert!(terminating["status"]["conditions"].to_string().contains("InstanceDeletionInProgress"));
    let err = s.fails(&["create", "-f", &write(tmp.path(), "late.yaml", &crontab("late", "{cronSpec: '* * * * *'}"))]);
    assert!(err.contains("create not allowed while custom resource definition is terminating"), "{err}");
    s.ok(&["patch", "ct", "a", "--type=merge", "-p", r#"{"metadata": {"finalizers": null}}"#]);
    wait_until("the CRD is gone", 60, || {
        let out = s.kubectl(&["get", "crd", "crontabs.stable.example.com"]);
        (!out.status.success()).then_some(())
    });
    let err = s.fails(&["get", "crontabs"]);
    // kubectl's discovery cache may still name the kind; the list itself is not found.
    assert!(err.contains("the server doesn't have a resource type \"crontabs\"") || err.contains("NotFound"), "{err}");
    assert!(s.fails(&["get", "--raw", "/apis/stable.example.com/v1"]).contains("NotFound"));
    // Created again, the kind starts empty.
    s.ok(&["apply", "-f", &crd]);
    s.ok(&["wait", "--for", "condition=established", "--timeout=30s", "crd/crontabs.stable.example.com"]);
    wait_until("the kind is served again", 30, || s.kubectl(&["get", "ct"]).status.success().then_some(()));
    assert_eq!(s.ok(&["get", "ct", "-o", "name"]).trim(), "");
}

/// A CRD with two served versions: each object is stored in the storage version and
/// read in whichever version is asked for (conversion strategy None: only apiVersion
/// differs), as kube-apiserver serves them.
#[test]
fn each_version_of_a_custom_kind_is_served_in_its_own_apiversion() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let two = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
               metadata: {name: widgets.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  \
               names: {plural: widgets, singular: widget, kind: Widget}\n  versions:\n";
    let version = |name: &str, storage: bool| {
        format!(
            "  - name: {name}\n    served: true\n    storage: {storage}\n    schema: {{openAPIV3Schema: {{type: object, \
             properties: {{spec: {{type: object, properties: {{size: {{type: integer}}}}}}}}}}}}\n"
        )
    };
    let crd = format!("{two}{}{}", version("v1", true), version("v1beta1", false));
    s.ok(&["create", "-f", &write(tmp.path(), "widgets.yaml", &crd)]);
    let widget =
        "apiVersion: example.com/v1beta1\nkind: Widget\nmetadata: {name: w, namespace: default}\nspec: {size: 3}\n";
    wait_until("widgets served", 30, || {
        s.kubectl(&["create", "-f", &write(tmp.path(), "w.yaml", widget)]).status.success().then_some(())
    });
    for v in ["v1", "v1beta1"] {
        let one = raw(&s, &format!("/apis/example.com/{v}/namespaces/default/widgets/w"));
        assert_eq!(one["apiVersion"], format!("example.com/{v}"), "{one}");
        assert_eq!(one["spec"]["size"], 3);
        let list = raw(&s, &format!("/apis/example.com/{v}/namespaces/default/widgets"));
        assert_eq!(list["apiVersion"], format!("example.com/{v}"), "{list}");
        assert_eq!(list["items"][0]["apiVersion"], format!("example.com/{v}"), "{list}");
    }
    // A conversion webhook is not something this server calls: refused, named.
    let webhook = crd.replace("widgets.example.com}", "gadgets.example.com}").replace(
        "names: {plural: widgets, singular: widget, kind: Widget}",
        "names: {plural: gadgets, singular: gadget, kind: Gadget}\n  conversion: {strategy: Webhook, webhook: {conversionReviewVersions: [v1], clientConfig: {url: 'https://127.0.0.1:1/convert'}}}",
    );
    let err = s.fails(&["create", "-f", &write(tmp.path(), "gadgets.yaml", &webhook)]);
    assert!(err.contains("spec.conversion.strategy: Unsupported value: \"Webhook\""), "{err}");
}

/// The "Validation rules" section of Kubernetes' CRD documentation: CEL rules in
/// `x-kubernetes-validations` on create, transition rules (`oldSelf`) on update only, and
/// a rule that does not compile refused with the CRD.
#[test]
fn cel_validation_rules_are_checked_as_kube_checks_them() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
               metadata: {name: scalers.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  \
               names: {plural: scalers, singular: scaler, kind: Scaler}\n  versions:\n  \
               - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        \
               type: object\n        properties:\n          spec:\n            type: object\n            \
               x-kubernetes-validations:\n            \
               - rule: self.minReplicas <= self.replicas\n              \
                 message: replicas should be greater than or equal to minReplicas.\n            \
               - rule: self.replicas <= self.maxReplicas\n              \
                 messageExpression: \"'replicas (' + string(self.replicas) + ') should be at most ' + string(self.maxReplicas)\"\n            \
               properties:\n              minReplicas: {type: integer}\n              replicas: {type: integer}\n              \
               maxReplicas: {type: integer}\n              \
               mode:\n                type: string\n                x-kubernetes-validations:\n                \
               - {rule: self == oldSelf, message: Value is immutable}\n";
    s.ok(&["create", "-f", &write(tmp.path(), "scalers.yaml", crd)]);
    let scaler = |name: &str, spec: &str| {
        format!(
            "apiVersion: example.com/v1\nkind: Scaler\nmetadata: {{name: {name}, namespace: default}}\nspec: {spec}\n"
        )
    };
    let good =
        write(tmp.path(), "good.yaml", &scaler("good", "{minReplicas: 1, replicas: 2, maxReplicas: 3, mode: fast}"));
    wait_until("scalers served", 30, || s.kubectl(&["create", "-f", &good]).status.success().then_some(()));

    let err = s.fails(&[
        "create",
        "-f",
        &write(tmp.path(), "bad.yaml", &scaler("bad", "{minReplicas: 1, replicas: 5, maxReplicas: 3}")),
    ]);
    assert!(
        err.contains(r#"The Scaler "bad" is invalid: spec: Invalid value: "object": replicas (5) should be at most 3"#),
        "{err}"
    );
    let err = s.fails(&[
        "create",
        "-f",
        &write(tmp.path(), "low.yaml", &scaler("low", "{minReplicas: 2, replicas: 1, maxReplicas: 3}")),
    ]);
    assert!(
        err.contains(r#"spec: Invalid value: "object": replicas should be greater than or equal to minReplicas."#),
        "{err}"
    );
    // A type error stops the rules, in kube's words.
    let err = s.fails(&[
        "create",
        "-f",
        &write(tmp.path(), "typed.yaml", &scaler("typed", "{minReplicas: one, replicas: 1, maxReplicas: 3}")),
    ]);
    assert!(err.contains("some validation rules were not checked because the object was invalid"), "{err}");

    // The transition rule: nothing to compare on create, the old value on update.
    let err = s.fails(&["patch", "scaler", "good", "--type=merge", "-p", r#"{"spec":{"mode":"slow"}}"#]);
    assert!(err.contains(r#"spec.mode: Invalid value: "string": Value is immutable"#), "{err}");
    s.ok(&["patch", "scaler", "good", "--type=merge", "-p", r#"{"spec":{"replicas":3}}"#]);
    assert_eq!(s.json(&["get", "scaler", "good"])["spec"]["replicas"], 3);
    // Dry runs check the rules too, and store nothing either way.
    let err =
        s.fails(&["patch", "scaler", "good", "--type=merge", "--dry-run=server", "-p", r#"{"spec":{"replicas":9}}"#]);
    assert!(err.contains("replicas (9) should be at most 3"), "{err}");

    // A rule that does not compile, or names a variable CEL is not given, is the CRD's error.
    let broken = crd
        .replace("scalers.example.com}", "brokens.example.com}")
        .replace(
            "{plural: scalers, singular: scaler, kind: Scaler}",
            "{plural: brokens, singular: broken, kind: Broken}",
        )
        .replace("self.minReplicas <= self.replicas", "self.minReplicas <=")
        .replace("self == oldSelf", "spec.mode == 'x'");
    let err = s.fails(&["create", "-f", &write(tmp.path(), "broken.yaml", &broken)]);
    assert!(
        err.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: \"self.minReplicas <=\": compilation failed"),
        "{err}"
    );
    assert!(err.contains("undeclared reference to 'spec'"), "{err}");
}

/// Server-side apply on a custom kind merges its lists as the CRD's schema marks them
/// (`x-kubernetes-list-type: map` by key, `set` by value) and replaces unmarked lists whole,
/// as kube-apiserver does; two managers' items of one keyed list live side by side.
#[test]
fn server_side_apply_merges_a_custom_kinds_lists_as_its_schema_marks_them() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
               metadata: {name: gateways.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  \
               names: {plural: gateways, singular: gateway, kind: Gateway}\n  versions:\n  \
               - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        \
               type: object\n        properties:\n          spec:\n            type: object\n            \
               properties:\n              \
               listeners:\n                type: array\n                x-kubernetes-list-type: map\n                \
               x-kubernetes-list-map-keys: [name]\n                items:\n                  type: object\n                  \
               required: [name]\n                  properties: {name: {type: string}, port: {type: integer}}\n              \
               hosts:\n                type: array\n                x-kubernetes-list-type: set\n                \
               items: {type: string}\n              \
               ports:\n                type: array\n                \
               items: {type: object, properties: {containerPort: {type: integer}}}\n";
    s.ok(&["create", "-f", &write(tmp.path(), "gateways.yaml", crd)]);
    let gateway = |spec: &str| {
        format!("apiVersion: example.com/v1\nkind: Gateway\nmetadata: {{name: g, namespace: default}}\nspec: {spec}\n")
    };
    let a = write(
        tmp.path(),
        "a.yaml",
        &gateway("{listeners: [{name: http, port: 80}], hosts: [a.example], ports: [{containerPort: 1}]}"),
    );
    wait_until("gateways served", 30, || {
        s.kubectl(&["apply", "--server-side", "--field-manager=team-a", "-f", &a]).status.success().then_some(())
    });
    let b = write(tmp.path(), "b.yaml", &gateway("{listeners: [{name: https, port: 443}], hosts: [b.example]}"));
    s.ok(&["apply", "--server-side", "--field-manager=team-b", "-f", &b]);
    let got = s.json(&["get", "gateway", "g"]);
    assert_eq!(
        got["spec"]["listeners"],
        serde_json::json!([{"name": "http", "port": 80}, {"name": "https", "port": 443}]),
        "{got}"
    );
    assert_eq!(got["spec"]["hosts"], serde_json::json!(["a.example", "b.example"]), "{got}");
    let got = s.json(&["get", "gateway", "g", "--show-managed-fields"]);
    let b_fields = got["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == "team-b")
        .unwrap()["fieldsV1"]
        .to_string();
    assert!(b_fields.contains(r#"k:{\"name\":\"https\"}"#), "{b_fields}");
    assert!(b_fields.contains(r#"v:\"b.example\""#), "{b_fields}");

    // The same item's port from the other manager conflicts; so does the whole unmarked list.
    let clash =
        write(tmp.path(), "c.yaml", &gateway("{listeners: [{name: http, port: 8080}], ports: [{containerPort: 2}]}"));
    let err = s.fails(&["apply", "--server-side", "--field-manager=team-b", "-f", &clash]);
    assert!(err.contains("Apply failed with 2 conflicts"), "{err}");
    assert!(err.contains(r#".spec.listeners[name="http"].port"#), "{err}");
    assert!(err.contains(".spec.ports"), "{err}");
    s.ok(&["apply", "--server-side", "--field-manager=team-b", "--force-conflicts", "-f", &clash]);
    let got = s.json(&["get", "gateway", "g"]);
    assert_eq!(got["spec"]["ports"], serde_json::json!([{"containerPort": 2}]), "{got}");
    // team-b's apply no longer names https: the item it alone owned is gone, http stays.
    assert_eq!(got["spec"]["listeners"], serde_json::json!([{"name": "http", "port": 8080}]), "{got}");
    assert_eq!(got["spec"]["hosts"], serde_json::json!(["a.example"]), "{got}");
}
