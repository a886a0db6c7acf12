"""The official Python client (pip `kubernetes`) against `nodectl server`.

Run by tests/server_python.rs as `python3 client.py KUBECONFIG`; any failed check raises,
so the exit code tells. Prints one line per step, for the test's failure message.
"""
import sys
import threading

from kubernetes import client, config, watch
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
    print("OK", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
