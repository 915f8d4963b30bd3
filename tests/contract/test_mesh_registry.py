"""The lab's mesh registry (istiod's and kube-proxy's view of Services) against the API stand-in:
a Service's endpoints are its namespace's Ready pods and matching WorkloadEntries, healthy ones
only when health checks are on; kube-proxy's view never holds WorkloadEntries."""

from __future__ import annotations

from kubernetes import client

from meshvm.kube import KubeClient
from meshvm.lab.mesh_registry import MeshRegistry
from tests.contract.kube_fixtures import *  # noqa: F403

SERVICE_RANGE = "10.96.0.0/24"


def service(ns: str, name: str, selector: dict, port: int = 9080, target: int | str = 9080) -> str:
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {selector}
  ports: [{{name: http, port: {port}, targetPort: {target if isinstance(target, int) else repr(target)}}}]
"""


def entry(ns: str, name: str, address: str, labels: dict, health_checks: bool = False) -> str:
    notes = '{"proxy.istio.io/health-checks-enabled": "true"}' if health_checks else "{}"
    return f"""apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: {ns}, annotations: {notes}}}
spec: {{address: {address}, labels: {labels}}}
"""


def running_pod(kube: KubeClient, raw: client.ApiClient, ns: str, name: str, labels: dict, ip: str,
                ready: bool = True) -> None:
    kube.apply(f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {labels}}}
spec: {{containers: [{{name: app, image: x, ports: [{{name: web, containerPort: 8080}}]}}]}}
""")
    client.CoreV1Api(raw).patch_namespaced_pod_status(name, ns, {"status": {"phase": "Running", "podIP": ip, "conditions": [
        {"type": "Ready", "status": str(ready)}]}})


def ports(table: dict, name: str, ns: str) -> list:
    return next(s["ports"] for s in table["services"] if (s["name"], s["namespace"]) == (name, ns))


def test_endpoints_are_pods_and_entries_of_the_namespace_matching_the_selector(kube, raw):
    for ns in ("default", "ratings"):
        kube.apply(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n")
    kube.apply(service("default", "details", {"app": "details"}))
    kube.apply(service("ratings", "ratings", {"app": "ratings"}))
    running_pod(kube, raw, "default", "details-0", {"app": "details"}, "10.0.0.5")
    running_pod(kube, raw, "default", "other-0", {"app": "other"}, "10.0.0.6")
    kube.apply(entry("ratings", "ratings-10.1.0.9", "10.1.0.9", {"app": "ratings"}))
    kube.apply(entry("default", "stray", "10.1.0.8", {"app": "ratings"}))  # wrong namespace
    reg = MeshRegistry(raw, SERVICE_RANGE, cache_s=0)
    mesh, kube_proxy = reg.table(with_entries=True), reg.table(with_entries=False)
    assert ports(mesh, "details", "default")[0]["endpoints"] == ["10.0.0.5:9080"]
    assert ports(mesh, "ratings", "ratings")[0]["endpoints"] == ["10.1.0.9:9080"]
    assert ports(kube_proxy, "ratings", "ratings")[0]["endpoints"] == []  # no sidecar, no VM
    assert reg.endpoints("ratings.ratings.svc.cluster.local", 9080) == ["10.1.0.9:9080"]
    vips = {s["host"]: s["vip"] for s in mesh["services"]}
    assert len(set(vips.values())) == len(vips) and all(v.startswith("10.96.0.") for v in vips.values())
    assert reg.lookup("ratings.ratings.svc.cluster.local") == vips["ratings.ratings.svc.cluster.local"]
    assert reg.lookup("ratings.ratings") is None  # kube-dns: the resolver's search path makes the FQDN


def test_a_running_pod_that_is_not_ready_is_no_endpoint(kube, raw):
    """As an EndpointSlice marks it: a pod being replaced in a rollout is not routed to before it is Ready."""
    kube.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n")
    kube.apply(service("default", "details", {"app": "details"}))
    running_pod(kube, raw, "default", "details-new", {"app": "details"}, "10.0.0.7", ready=False)
    running_pod(kube, raw, "default", "details-old", {"app": "details"}, "10.0.0.5")
    reg = MeshRegistry(raw, SERVICE_RANGE, cache_s=0)
    assert ports(reg.table(), "details", "default")[0]["endpoints"] == ["10.0.0.5:9080"]


def test_a_health_checked_entry_counts_only_while_healthy(kube, raw):
    kube.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: ratings}\n")
    kube.apply(service("ratings", "ratings", {"app": "ratings"}))
    kube.apply(entry("ratings", "ratings-10.1.0.9", "10.1.0.9", {"app": "ratings"}, health_checks=True))
    reg = MeshRegistry(raw, SERVICE_RANGE, cache_s=0)
    assert ports(reg.table(), "ratings", "ratings")[0]["endpoints"] == []
    api = client.CustomObjectsApi(raw)
    for status, expected in (("True", ["10.1.0.9:9080"]), ("False", [])):
        api.patch_namespaced_custom_object_status(
            "networking.istio.io", "v1", "ratings", "workloadentries", "ratings-10.1.0.9",
            {"status": {"conditions": [{"type": "Healthy", "status": status}]}})
        assert ports(reg.table(), "ratings", "ratings")[0]["endpoints"] == expected


def test_a_named_target_port_is_the_pods_container_port(kube, raw):
    kube.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n")
    kube.apply(service("default", "web", {"app": "web"}, port=80, target="web"))
    running_pod(kube, raw, "default", "web-0", {"app": "web"}, "10.0.0.7")
    assert ports(MeshRegistry(raw, SERVICE_RANGE, cache_s=0).table(), "web", "default")[0]["endpoints"] == ["10.0.0.7:8080"]
