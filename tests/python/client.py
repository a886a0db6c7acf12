"""The official Python client (pip `kubernetes`) against `nodectl server`.

Run by tests/server_python.rs as `python3 client.py KUBECONFIG`; any failed check raises,
so the exit code tells. Prints one line per step, for the test's failure message.
"""
import json
import sys
import threading

from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException

NS = "default"


def step(message):
    print(message, flush=True)


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()

    names = [n.metadata.name for n in v1.list_namespace().items]
    assert {"default", "kube-system", "kube-node-lease"} <= set(names), names
    assert v1.list_namespaced_pod(NS).items == []
    v1.list_pod_for_all_namespaces()
    step("listed namespaces and pods")

    cm = v1.create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-cm", labels={"app": "py"}), data={"a": "1"}))
    assert cm.metadata.uid and cm.metadata.resource_version, cm.metadata
    assert v1.read_namespaced_config_map("py-cm", NS).data == {"a": "1"}
    step("created a ConfigMap at resourceVersion %s" % cm.metadata.resource_version)

    pod = v1.create_namespaced_pod(NS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "py-pod", "labels": {"app": "py"}},
        "spec": {"containers": [
            {"name": "a", "image": "busybox", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "keep"}]},
            {"name": "b", "image": "busybox"},
        ]},
    })
    assert pod.status.phase == "Pending", pod.status
    step("created a Pod")

    # A dict body goes as a strategic merge patch: containers merge by name, env by name.
    patched = v1.patch_namespaced_pod("py-pod", NS, {
        "metadata": {"labels": {"tier": "web"}},
        "spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "2"}]}]},
    })
    assert patched.metadata.labels == {"app": "py", "tier": "web"}, patched.metadata.labels
    assert [c.name for c in patched.spec.containers] == ["a", "b"], patched.spec.containers
    env = {e.name: e.value for e in patched.spec.containers[0].env}
    assert env == {"X": "2", "Y": "keep"}, env
    assert int(patched.metadata.resource_version) > int(pod.metadata.resource_version)
    step("patched the Pod (strategic merge)")

    # Watch with resume: from the ConfigMap's resourceVersion, the writes after it arrive,
    # in order, and nothing from before.
    since = cm.metadata.resource_version
    v1.patch_namespaced_config_map("py-cm", NS, {"data": {"a": "2"}})
    v1.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-cm2")))
    v1.delete_namespaced_config_map("py-cm2", NS)
    w = watch.Watch()
    seen = [(e["type"], e["object"].metadata.name, int(e["object"].metadata.resource_version))
            for e in w.stream(v1.list_namespaced_config_map, NS, resource_version=since, timeout_seconds=1)]
    assert [(t, n) for t, n, _ in seen] == [("MODIFIED", "py-cm"), ("ADDED", "py-cm2"), ("DELETED", "py-cm2")], seen
    revisions = [rv for _, _, rv in seen]
    assert revisions == sorted(revisions) and revisions[0] > int(since), seen
    step("watch resumed from %s: %s" % (since, seen))

    # And live: a watch from the present sees a write made after it started, and only it.
    now = v1.list_namespaced_config_map(NS).metadata.resource_version
    w = watch.Watch()
    live = []
    writer = threading.Timer(0.5, lambda: v1.create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-live"))))
    writer.start()
    for e in w.stream(v1.list_namespaced_config_map, NS, resource_version=now, timeout_seconds=30):
        live.append((e["type"], e["object"].metadata.name))
        w.stop()
    writer.join()
    assert live == [("ADDED", "py-live")], live
    step("a live watch from %s saw %s" % (now, live))

    # Label selectors through the client.
    assert [p.metadata.name for p in v1.list_namespaced_pod(NS, label_selector="app=py,tier in (web)").items] == ["py-pod"]
    assert v1.list_namespaced_pod(NS, label_selector="tier!=web").items == []

    status = v1.delete_namespaced_config_map("py-cm", NS)
    assert status.status == "Success", status
    deleted = v1.delete_namespaced_pod("py-pod", NS)
    assert deleted.metadata.name == "py-pod", deleted
    for read in (lambda: v1.read_namespaced_pod("py-pod", NS), lambda: v1.read_namespaced_config_map("py-cm", NS)):
        try:
            read()
            raise AssertionError("still there after delete")
        except ApiException as e:
            assert e.status == 404, e
    step("deleted both")

    server_side_apply(v1)
    custom_resources()
    kinds_and_validation()
    rbac_and_events(v1)
    print("OK", flush=True)


def server_side_apply(v1):
    """Server-side apply (through the dynamic client, which sends apply patches) and dry
    runs, as the client sends them."""
    maps = dynamic.DynamicClient(client.ApiClient()).resources.get(api_version="v1", kind="ConfigMap")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "py-ssa"}, "data": {"a": "1", "b": "2"}}
    cm = maps.server_side_apply(body=body, namespace=NS, field_manager="py-apply")
    managers = [(m.manager, m.operation) for m in cm.metadata.managedFields]
    assert managers == [("py-apply", "Apply")], managers
    # Another manager changing a field py-apply owns: kube's conflict, unless forced.
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "py-ssa"}, "data": {"a": "9"}}
    try:
        maps.server_side_apply(body=other, namespace=NS, field_manager="py-other")
        raise AssertionError("a conflicting apply was accepted")
    except ApiException as e:
        assert e.status == 409 and "FieldManagerConflict" in str(e.body), e.body
    forced = maps.server_side_apply(body=other, namespace=NS, field_manager="py-other", force_conflicts=True)
    assert dict(forced.data) == {"a": "9", "b": "2"}, forced.data
    # A dry run answers the result and stores nothing.
    dry = v1.patch_namespaced_config_map("py-ssa", NS, {"data": {"b": "dry"}}, dry_run="All")
    assert dry.data["b"] == "dry", dry.data
    assert v1.read_namespaced_config_map("py-ssa", NS).data["b"] == "2"
    v1.delete_namespaced_config_map("py-ssa", NS)
    step("server-side apply: managers, a 409 conflict, forced, and a dry run")


def custom_resources():
    """A CRD through ApiextensionsV1Api, its objects through CustomObjectsApi."""
    ext = client.ApiextensionsV1Api()
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "pythings.py.example.com"},
        "spec": {
            "group": "py.example.com", "scope": "Namespaced",
            "names": {"plural": "pythings", "singular": "pything", "kind": "PyThing"},
            "versions": [{
                "name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer", "default": 1}}},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                }}},
            }],
        },
    }
    made = ext.create_custom_resource_definition(crd)
    conditions = {c.type: c.status for c in made.status.conditions}
    assert conditions.get("Established") == "True", conditions
    objects = client.CustomObjectsApi()
    args = ("py.example.com", "v1", NS, "pythings")
    thing = objects.create_namespaced_custom_object(
        *args, {"apiVersion": "py.example.com/v1", "kind": "PyThing", "metadata": {"name": "t"}, "spec": {}})
    assert thing["spec"] == {"size": 1}, thing
    objects.patch_namespaced_custom_object_status(*args, "t", {"status": {"phase": "Ready"}})
    got = objects.get_namespaced_custom_object(*args, "t")
    assert got["status"] == {"phase": "Ready"}, got
    assert [i["metadata"]["name"] for i in objects.list_namespaced_custom_object(*args)["items"]] == ["t"]
    try:
        objects.create_namespaced_custom_object(*args, {
            "apiVersion": "py.example.com/v1", "kind": "PyThing", "metadata": {"name": "bad"}, "spec": {"size": "x"}})
        raise AssertionError("a wrong type was accepted")
    except ApiException as e:
        assert e.status == 422 and "spec.size" in e.body, e.body
    ext.delete_custom_resource_definition("pythings.py.example.com")
    step("a CRD: established, defaulted, its status written, a 422 naming the field, deleted")


def kinds_and_validation():
    """Health and version, built-in kinds through their typed APIs with kube's defaults, and
    a 422 whose details.causes name each field."""
    api = client.ApiClient()
    info = client.VersionApi().get_code()
    assert (info.major, info.minor) == ("1", "32"), info
    ready = api.call_api("/readyz", "GET", query_params=[("verbose", "true")], response_type="str",
                         auth_settings=["BearerToken"], _return_http_data_only=True)
    assert "readyz check passed" in ready, ready
    apps, batch = client.AppsV1Api(), client.BatchV1Api()
    template = {"metadata": {"labels": {"app": "py-web"}},
                "spec": {"containers": [{"name": "web", "image": "busybox"}]}}
    dep = apps.create_namespaced_deployment(NS, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "py-web"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "py-web"}}, "template": template}})
    assert dep.spec.strategy.type == "RollingUpdate", dep.spec.strategy
    assert dep.spec.revision_history_limit == 10, dep.spec
    job = batch.create_namespaced_job(NS, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "py-job"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "j", "image": "busybox", "command": ["true"]}]}}}})
    assert job.spec.backoff_limit == 6 and job.spec.completions == 1, job.spec
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "py-bad"},
           "spec": {"selector": {"matchLabels": {"app": "other"}}, "template": {
               "metadata": {"labels": {"app": "py-bad"}},
               "spec": {"containers": [{"name": "Web_1", "image": ""}]}}}}
    try:
        apps.create_namespaced_deployment(NS, bad)
        raise AssertionError("an invalid Deployment was accepted")
    except ApiException as e:
        assert e.status == 422, e.body
        status = json.loads(e.body)
        assert status["reason"] == "Invalid", status
        fields = {c["field"] for c in status["details"]["causes"]}
        want = {"spec.template.metadata.labels", "spec.template.spec.containers[0].name",
                "spec.template.spec.containers[0].image"}
        assert want <= fields, fields
    batch.delete_namespaced_job("py-job", NS)
    step("version, /readyz, a Deployment and a Job with kube's defaults, a 422 naming each field")


def rbac_and_events(v1):
    """A ServiceAccount's token: 403 until a RoleBinding grants view, then 200; a
    SelfSubjectAccessReview as that account; an Event written and found by its object."""
    v1.create_namespaced_service_account(NS, {"metadata": {"name": "py-reader"}})
    token = v1.create_namespaced_service_account_token(
        "py-reader", NS, {"spec": {"expirationSeconds": 3600}}).status.token
    conf = client.Configuration.get_default_copy()
    conf.api_key = {"authorization": "Bearer " + token}
    conf.api_key_prefix = {}
    # The kubeconfig loader's hook would put the admin's token back before each request.
    conf.refresh_api_key_hook = None
    as_reader = client.ApiClient(conf)
    reader = client.CoreV1Api(as_reader)
    try:
        reader.list_namespaced_config_map(NS)
        raise AssertionError("a ServiceAccount without a binding listed ConfigMaps")
    except ApiException as e:
        assert e.status == 403, e.body
        assert 'User \\"system:serviceaccount:default:py-reader\\" cannot list resource \\"configmaps\\"' in e.body, e.body
    client.RbacAuthorizationV1Api().create_namespaced_role_binding(NS, {
        "metadata": {"name": "py-reader-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "py-reader", "namespace": NS}]})
    reader.list_namespaced_config_map(NS)
    review = client.AuthorizationV1Api(as_reader).create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"verb": "delete", "resource": "configmaps", "namespace": NS}}})
    assert review.status.allowed is False, review.status
    review = client.AuthorizationV1Api(as_reader).create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"verb": "list", "resource": "configmaps", "namespace": NS}}})
    assert review.status.allowed is True, review.status
    v1.create_namespaced_event(NS, {
        "metadata": {"name": "py-ev"}, "reason": "Tested", "message": "from python", "type": "Normal",
        "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "py-web", "namespace": NS}})
    found = v1.list_namespaced_event(NS, field_selector="involvedObject.name=py-web").items
    assert [e.reason for e in found] == ["Tested"], found
    client.AppsV1Api().delete_namespaced_deployment("py-web", NS)
    step("RBAC: 403, a RoleBinding, 200, SelfSubjectAccessReviews; an Event found by its object")


if __name__ == "__main__":
    main(sys.argv[1])
