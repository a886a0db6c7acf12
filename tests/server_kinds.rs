//! The built-in kinds a tutorial uses, served as kube-apiserver 1.32 serves them: applied
//! from one manifest with the real kubectl, listed with their columns, read back, found in
//! discovery with their short names, scope and categories, and deleted.

mod common;

use std::fs;

use common::server::{Server, free_port};

/// One object of each kind, as a tutorial writes them.
const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {disk: ssd}
      containers: [{name: agent, image: busybox}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: postgres:16}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: pi}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: pi, image: perl}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: hello}
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: hello, image: busybox}]
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv1}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: manual
  hostPath: {path: /tmp/pv1}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  resources: {requests: {storage: 1Gi}}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: fast
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: example.com/fast
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: nginx
  rules:
  - host: web.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:tutorial-reader"}
rules: [{apiGroups: [""], resources: [nodes], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: read-pods}
subjects:
- {kind: User, name: jane, apiGroup: rbac.authorization.k8s.io}
- {kind: ServiceAccount, name: bot, namespace: default}
roleRef: {kind: Role, name: reader, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: read-nodes}
subjects: [{kind: Group, name: ops, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: ClusterRole, name: "system:tutorial-reader", apiGroup: rbac.authorization.k8s.io}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: bot}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 10
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: db}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: db}}
---
apiVersion: v1
kind: Event
metadata: {name: db.1}
involvedObject: {kind: Pod, name: db-0, namespace: default}
reason: Pulled
message: Pulled the image
type: Normal
source: {component: kubelet, host: n1}
firstTimestamp: "2025-01-01T00:00:00Z"
lastTimestamp: "2025-01-01T00:00:00Z"
count: 3
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: leader}
spec: {holderIdentity: me}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints: [{addresses: [10.1.0.5]}]
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000000
description: for tutorials
"#;

/// The words of a table's first line.
fn header(table: &str) -> Vec<String> {
    let line = table.lines().next().unwrap_or_default();
    // Column names may hold one space (ACCESS MODES): split on runs of two or more.
    line.split("  ").map(str::trim).filter(|w| !w.is_empty()).map(String::from).collect()
}

fn row(table: &str) -> Vec<String> {
    let line = table.lines().nth(1).unwrap_or_default();
    line.split("  ").map(str::trim).filter(|w| !w.is_empty()).map(String::from).collect()
}

#[test]
fn a_tutorial_manifest_of_every_built_in_kind_applies_lists_reads_and_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let file = tmp.path().join("tutorial.yaml");
    fs::write(&file, MANIFEST).unwrap();
    let applied = s.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(applied.lines().count(), 21, "{applied}");
    assert!(applied.contains("horizontalpodautoscaler.autoscaling/web created"), "{applied}");

    // Each kind by its short name, with the columns kubectl shows against kube-apiserver.
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (
            &["get", "ds", "-o", "wide"],
            &[
                "NAME",
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "NODE SELECTOR",
                "AGE",
                "CONTAINERS",
                "IMAGES",
                "SELECTOR",
            ],
            &["agent", "0", "0", "0", "0", "0", "disk=ssd"],
        ),
        (&["get", "sts", "-o", "wide"], &["NAME", "READY", "AGE", "CONTAINERS", "IMAGES"], &["db", "0/2"]),
        (&["get", "jobs"], &["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"], &["pi", "Running", "0/1"]),
        (
            &["get", "cj"],
            &["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"],
            &["hello", "*/5 * * * *", "<none>", "False", "0", "<none>"],
        ),
        (
            &["get", "pv"],
            &[
                "NAME",
                "CAPACITY",
                "ACCESS MODES",
                "RECLAIM POLICY",
                "STATUS",
                "CLAIM",
                "STORAGECLASS",
                "VOLUMEATTRIBUTESCLASS",
                "REASON",
                "AGE",
            ],
            &["pv1", "1Gi", "RWO", "Retain", "Pending", "manual", "<unset>"],
        ),
        (
            &["get", "pvc"],
            &["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "AGE"],
            &["data", "Pending", "manual", "<unset>"],
        ),
        (
            &["get", "sc"],
            &["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"],
            &["fast (default)", "example.com/fast", "Delete", "Immediate", "false"],
        ),
        (
            &["get", "ing"],
            &["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"],
            &["web", "nginx", "web.example.com", "80"],
        ),
        (
            &["get", "ingressclass"],
            &["NAME", "CONTROLLER", "PARAMETERS", "AGE"],
            &["nginx", "k8s.io/ingress-nginx", "<none>"],
        ),
        (&["get", "netpol"], &["NAME", "POD-SELECTOR", "AGE"], &["deny", "app=db"]),
        (&["get", "roles"], &["NAME", "CREATED AT"], &["reader"]),
        (&["get", "clusterrole", "system:tutorial-reader"], &["NAME", "CREATED AT"], &["system:tutorial-reader"]),
        (
            &["get", "rolebinding", "-o", "wide"],
            &["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"],
            &["read-pods", "Role/reader"],
        ),
        (
            &["get", "clusterrolebinding", "read-nodes"],
            &["NAME", "ROLE", "AGE"],
            &["read-nodes", "ClusterRole/system:tutorial-reader"],
        ),
        (&["get", "sa", "bot"], &["NAME", "SECRETS", "AGE"], &["bot", "0"]),
        (
            &["get", "hpa"],
            &["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"],
            &["web", "Deployment/web", "cpu: <unknown>/50%", "1", "10", "0"],
        ),
        (
            &["get", "pdb"],
            &["NAME", "MIN AVAILABLE", "MAX UNAVAILABLE", "ALLOWED DISRUPTIONS", "AGE"],
            &["db", "1", "N/A", "0"],
        ),
        (
            &["get", "ev"],
            &["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
            &["Normal", "Pulled", "pod/db-0", "Pulled the image"],
        ),
        (&["get", "leases"], &["NAME", "HOLDER", "AGE"], &["leader", "me"]),
        (
            &["get", "endpointslices", "web-abc"],
            &["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
            &["web-abc", "IPv4", "80", "10.1.0.5"],
        ),
        (
            &["get", "pc", "high"],
            &["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"],
            &["high", "1000000", "false"],
        ),
    ];
    for (args, want_header, want_cells) in cases {
        let out = s.ok(args);
        assert_eq!(header(&out), *want_header, "kubectl {args:?}:\n{out}");
        let cells = row(&out);
        for want in *want_cells {
            assert!(cells.iter().any(|c| c == want), "kubectl {args:?}: no cell {want:?} in:\n{out}");
        }
    }
    let rb = s.ok(&["get", "rolebinding", "read-pods", "-o", "wide"]);
    assert!(
        rb.lines().nth(1).unwrap().trim_end().ends_with("jane                      default/bot")
            || rb.contains("default/bot"),
        "{rb}"
    );

    // The same objects in the other versions they are served in.
    let ev = s.ok(&["get", "events.v1.events.k8s.io", "db.1", "-o", "yaml"]);
    assert!(ev.contains("apiVersion: events.k8s.io/v1") && ev.contains("note: Pulled the image"), "{ev}");
    assert!(ev.contains("regarding:") && ev.contains("deprecatedCount: 3"), "{ev}");
    let hpa1 = s.ok(&["get", "horizontalpodautoscalers.v1.autoscaling", "web", "-o", "yaml"]);
    assert!(
        hpa1.contains("apiVersion: autoscaling/v1") && hpa1.contains("targetCPUUtilizationPercentage: 50"),
        "{hpa1}"
    );

    // -o yaml of each, then delete of each, as the manifest names them.
    for kind in [
        "ds/agent",
        "sts/db",
        "job/pi",
        "cj/hello",
        "pv/pv1",
        "pvc/data",
        "sc/fast",
        "ingressclass/nginx",
        "ing/web",
        "netpol/deny",
        "role/reader",
        "clusterrole/system:tutorial-reader",
        "rolebinding/read-pods",
        "clusterrolebinding/read-nodes",
        "sa/bot",
        "hpa/web",
        "pdb/db",
        "ev/db.1",
        "lease/leader",
        "endpointslice/web-abc",
        "pc/high",
    ] {
        let yaml = s.ok(&["get", kind, "-o", "yaml"]);
        let name = kind.split_once('/').unwrap().1;
        assert!(yaml.contains(&format!("name: {name}")), "{kind}:\n{yaml}");
    }
    let deleted = s.ok(&["delete", "-f", file.to_str().unwrap()]);
    assert_eq!(deleted.lines().count(), 21, "{deleted}");
    let left =
        s.ok(&["get", "ds,sts,jobs,cj,pvc,ing,netpol,roles,rolebindings,hpa,pdb,leases,endpointslices", "-o", "name"]);
    // All gone but the `kubernetes` Service's slice, which every server keeps.
    assert_eq!(left.trim(), "endpointslice.discovery.k8s.io/kubernetes", "{left}");
}

#[test]
fn kubectl_api_resources_lists_every_kind_with_short_names_scope_and_get_all_the_category() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), free_port(), &[]);
    let out = s.ok(&["api-resources", "--no-headers"]);
    // name, short names, group/version, namespaced, kind, as kube-apiserver 1.32 lists them.
    let want = [
        "daemonsets ds apps/v1 true DaemonSet",
        "statefulsets sts apps/v1 true StatefulSet",
        "jobs batch/v1 true Job",
        "cronjobs cj batch/v1 true CronJob",
        "persistentvolumes pv v1 false PersistentVolume",
        "persistentvolumeclaims pvc v1 true PersistentVolumeClaim",
        "storageclasses sc storage.k8s.io/v1 false StorageClass",
        "ingresses ing networking.k8s.io/v1 true Ingress",
        "ingressclasses networking.k8s.io/v1 false IngressClass",
        "networkpolicies netpol networking.k8s.io/v1 true NetworkPolicy",
        "roles rbac.authorization.k8s.io/v1 true Role",
        "clusterroles rbac.authorization.k8s.io/v1 false ClusterRole",
        "rolebindings rbac.authorization.k8s.io/v1 true RoleBinding",
        "clusterrolebindings rbac.authorization.k8s.io/v1 false ClusterRoleBinding",
        "serviceaccounts sa v1 true ServiceAccount",
        "horizontalpodautoscalers hpa autoscaling/v2 true HorizontalPodAutoscaler",
        "poddisruptionbudgets pdb policy/v1 true PodDisruptionBudget",
        "events ev v1 true Event",
        "events ev events.k8s.io/v1 true Event",
        "leases coordination.k8s.io/v1 true Lease",
        "endpointslices discovery.k8s.io/v1 true EndpointSlice",
        "priorityclasses pc scheduling.k8s.io/v1 false PriorityClass",
    ];
    let lines: Vec<String> = out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    for w in want {
        assert!(lines.iter().any(|l| l == w), "{w:?} missing from:\n{out}");
    }
    // Both autoscaling versions are served; v2 is preferred.
    let versions = s.ok(&["api-versions"]);
    assert!(versions.contains("autoscaling/v1\n") && versions.contains("autoscaling/v2\n"), "{versions}");

    let all = s.ok(&["api-resources", "--categories=all", "-o", "name"]);
    let mut all: Vec<&str> = all.lines().collect();
    all.sort();
    assert_eq!(
        all,
        [
            "cronjobs.batch",
            "daemonsets.apps",
            "deployments.apps",
            "horizontalpodautoscalers.autoscaling",
            "jobs.batch",
            "pods",
            "replicasets.apps",
            "services",
            "statefulsets.apps"
        ]
    );
    let file = tmp.path().join("all.yaml");
    fs::write(&file, MANIFEST).unwrap();
    s.ok(&["apply", "-f", file.to_str().unwrap()]);
    let got = s.ok(&["get", "all", "-o", "name"]);
    for name in [
        "daemonset.apps/agent",
        "statefulset.apps/db",
        "job.batch/pi",
        "cronjob.batch/hello",
        "horizontalpodautoscaler.autoscaling/web",
    ] {
        assert!(got.lines().any(|l| l == name), "{name} missing from:\n{got}");
    }
    assert!(!got.contains("persistentvolumeclaim") && !got.contains("ingress"), "{got}");
    // The scale subresource of a StatefulSet, as kubectl scale uses it.
    s.ok(&["scale", "sts", "db", "--replicas=3"]);
    assert_eq!(s.ok(&["get", "sts", "db", "-o", "jsonpath={.spec.replicas}"]), "3");
}
