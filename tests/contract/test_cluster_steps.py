"""The cluster half of the recipe, step by step, against the Kubernetes API stand-in and the
stand-in istioctl; after each step the objects are what the recipe requires."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from meshvm import lifecycle, retry
from meshvm.deadlines import Deadline
from meshvm.istioctl import IstioctlCli
from meshvm.kube import KubeClient
from meshvm.kube_auth import Token
from meshvm.lab.controllers import ClusterControllers
from meshvm.lab.istioctl_standin import install_istioctl_standin
from meshvm.lab.kubeapi import KubeApiStandIn
from meshvm.lab.mesh_registry import pod_ready
from meshvm.recipe import bookinfo, eastwest, istio, waits, workload
from meshvm.seams import CommandFailed

RUNNER = ["203.0.113.7/32"]
HUB = "docker.io/istio"
VM_IP = "172.29.100.10"
LB_POOL = ["172.29.101.10", "172.29.101.11", "172.29.101.12"]
EW = "istio-system/istio-eastwestgateway"


class Cluster:
    def __init__(self, tmp: Path):
        self.api = KubeApiStandIn()
        self.api.start()
        (tmp / "ca.crt").write_text(self.api.ca_pem)
        self.kube = KubeClient(self.api.endpoint, tmp / "ca.crt",
                               lambda: Token(self.api.issue_token(600), time.time() + 600), call_timeout=10)
        cfg = client.Configuration()
        cfg.host, cfg.ssl_ca_cert = self.api.endpoint, str(tmp / "ca.crt")
        cfg.api_key, cfg.api_key_prefix = {"BearerToken": self.api.issue_token(3600)}, {"BearerToken": "Bearer"}
        self.raw = client.ApiClient(cfg)
        self.controllers = ClusterControllers(self.raw, "172.29.102.0/24", list(LB_POOL),
                                              "-----BEGIN CERTIFICATE-----\nMIIlab\n-----END CERTIFICATE-----\n")
        self.controllers.start()
        self.calls: list[list[str]] = []
        secrets = tmp / "secrets"
        secrets.mkdir(mode=0o700)
        binary = install_istioctl_standin("1.30.3", tmp / "bin")
        self.istioctl = IstioctlCli(binary, lambda: self.kube.write_kubeconfig(secrets), {"PATH": "/usr/bin:/bin"})
        self.tmp = tmp
        self.state: dict[str, str] = {}

    def close(self) -> None:
        self.controllers.stop()
        self.raw.close()
        self.kube.close()
        self.api.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    assert c.controllers.errors == []
    c.close()


def deadline(s: float = 30) -> Deadline:
    return Deadline.after(s, "test")


def env_of(d: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])}


def test_vm_files_before_istio_is_a_hard_error(cluster: Cluster):
    wg = cluster.tmp / "early.yaml"
    wg.write_text(yaml.safe_dump({"apiVersion": "networking.istio.io/v1alpha3", "kind": "WorkloadGroup",
                                  "metadata": {"name": "x", "namespace": "default"}, "spec": {}}))
    with pytest.raises(CommandFailed, match="configmap istio was not found"):
        cluster.istioctl.run(["x", "workload", "entry", "configure", "-f", str(wg), "-o", str(cluster.tmp / "o"),
                              "--clusterID=Kubernetes"], step="early")


class Recording:
    """The istioctl seam, keeping the arguments of every call."""

    def __init__(self, istioctl: IstioctlCli):
        self.istioctl, self.calls = istioctl, []

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.istioctl, name)

    def run(self, args: list[str], **kwargs):  # noqa: ANN003, ANN201
        self.calls.append(list(args))
        return self.istioctl.run(args, **kwargs)


def test_install_istio(cluster: Cluster):
    cli = Recording(cluster.istioctl)
    cid = istio.install_istio(cli, cluster.kube, RUNNER, HUB, cluster.tmp, deadline())
    (args,) = cli.calls  # what istioctl received: the recipe's settings and the pinned hub
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    assert sets == [f"hub={HUB}", *istio.PILOT_SETTINGS], args
    istiod = cluster.kube.get("apps/v1", "Deployment", "istiod", "istio-system")
    assert istiod["spec"]["template"]["spec"]["containers"][0]["image"].startswith(f"{HUB}/pilot:")
    env = env_of(istiod)
    assert env["PILOT_ENABLE_WORKLOAD_ENTRY_AUTOREGISTRATION"] == "true"
    assert env["PILOT_ENABLE_WORKLOAD_ENTRY_HEALTHCHECKS"] == "true"
    assert cid == env["CLUSTER_ID"] == "Kubernetes"
    ingress = cluster.kube.get("v1", "Service", "istio-ingressgateway", "istio-system")
    assert ingress["spec"]["type"] == "LoadBalancer" and ingress["spec"]["loadBalancerSourceRanges"] == RUNNER
    cluster.state["cluster_id"] = cid


def test_cluster_id_prefers_istiod_env_then_injector_then_default(cluster: Cluster):
    fake = FakeKube({"istiod": {"spec": {"template": {"spec": {"containers": [
        {"env": [{"name": "CLUSTER_ID", "value": "c-env"}]}]}}}},
        "istio-sidecar-injector": {"data": {"values": '{"global": {"multiCluster": {"clusterName": "c-inj"}}}'}}})
    assert istio.cluster_id(fake) == "c-env"
    del fake.objects["istiod"]
    assert istio.cluster_id(fake) == "c-inj"
    del fake.objects["istio-sidecar-injector"]
    assert istio.cluster_id(fake) == "Kubernetes"


class FakeKube:
    """Only `get` by name, for the cluster-ID precedence rules."""

    def __init__(self, objects: dict[str, dict]):
        self.objects = objects

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        return self.objects.get(name)


def test_an_unpinned_hub_is_refused_by_the_image_check(cluster: Cluster):
    """Without --set hub, the charts' default registry: the stage says which image, before any wait."""
    class Unpinned(Recording):
        def run(self, args: list[str], **kwargs):  # noqa: ANN003, ANN201
            i = args.index(f"hub={HUB}")
            return super().run(args[:i - 1] + args[i + 1:], **kwargs)  # `--set hub=...` left out

    try:
        with pytest.raises(istio.HubMismatch, match=r"Deployment istio-system/istiod runs registry\.istio\.io/"
                                                     r"release/pilot:1\.30\.3, not from --istio-hub docker\.io/istio"):
            istio.install_istio(Unpinned(cluster.istioctl), cluster.kube, RUNNER, HUB, cluster.tmp, deadline())
    finally:
        istio.install_istio(cluster.istioctl, cluster.kube, RUNNER, HUB, cluster.tmp, deadline())


def test_deploy_bookinfo_sans_ratings(cluster: Cluster):
    bookinfo.deploy_bookinfo(cluster.kube, "docker.io/istio/examples-bookinfo", "1.20.3", HUB, deadline())
    for pod in cluster.kube.list("v1", "Pod", "default"):  # injected, from the pinned hub
        assert [c["image"] for c in pod["spec"]["containers"] if c["name"] == "istio-proxy"] == \
            [f"{HUB}/proxyv2:1.30.3"], pod["metadata"]["name"]
    ns = cluster.kube.get("v1", "Namespace", "default")
    assert ns["metadata"]["labels"]["istio-injection"] == "enabled"
    for name in bookinfo.DEPLOYMENTS:
        d = cluster.kube.get("apps/v1", "Deployment", name, "default")
        image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == f"docker.io/istio/examples-bookinfo-{name}:1.20.3"
        assert env_of(d).get("SERVICES_DOMAIN") == ("ratings" if name in ("reviews-v2", "reviews-v3") else None)
    for svc in ("details", "productpage", "reviews"):
        s = cluster.kube.get("v1", "Service", svc, "default")
        assert s["spec"]["ports"][0]["port"] == 9080 and s["spec"]["ports"][0]["name"] == "http"
    everything = cluster.kube.list("v1", "Service") + cluster.kube.list("apps/v1", "Deployment")
    assert not [o for o in everything if o["metadata"]["name"].startswith("ratings")]


def test_an_image_the_registry_lacks_never_rolls_out(cluster: Cluster):
    """A wrong --bookinfo-image-tag: the pod stays in ImagePullBackOff and the rollout times out."""
    cluster.kube.apply("""apiVersion: apps/v1
kind: Deployment
metadata: {name: details-typo, namespace: default}
spec:
  selector: {matchLabels: {app: details-typo}}
  template:
    metadata: {labels: {app: details-typo}}
    spec: {containers: [{name: details, image: "docker.io/istio/examples-bookinfo-details-v1:9.9.9"}]}
""")
    with pytest.raises(TimeoutError, match="rolled out"):
        waits.rollout(cluster.kube, "default", "details-typo", deadline(2))
    pods = retry.until("a pod of details-typo", lambda: cluster.kube.list("v1", "Pod", "default",
                                                                         label_selector="app=details-typo"),
                       deadline(10))  # the controllers may not have made it yet on a loaded machine
    pod = pods[0]
    assert pod["status"]["phase"] == "Pending"
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"
    cluster.kube.delete("apps/v1", "Deployment", "details-typo", "default", deadline=deadline())


def deployment(name: str, replicas: int, container: str, image: str) -> str:
    """A Deployment in default whose pods are labelled app=<name>."""
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{containers: [{{name: {container}, image: "{image}"}}]}}
"""


def test_a_rollout_restart_replaces_every_pod_and_keeps_the_rest(cluster: Cluster):
    """`kubectl rollout restart` as the VM lifecycle exercise does it (a server-side apply of one
    annotation): the lab's Deployment controller makes new pods, removes the old ones, and says so."""
    heard: list[list[str]] = []
    cluster.controllers._on_pods = lambda ns, name, pods: heard.append(pods) if name == "roller" else None
    cluster.kube.apply(deployment("roller", 2, "discovery", "docker.io/istio/pilot:1.30.3"))
    waits.rollout(cluster.kube, "default", "roller", deadline())

    def pods() -> list[str]:
        return sorted(p["metadata"]["name"] for p in cluster.kube.list("v1", "Pod", "default", label_selector="app=roller"))

    before = retry.until("two pods of roller", pods, deadline(), accept=lambda p: len(p) == 2)
    lifecycle.rollout_restart(cluster.kube, "default", "roller")
    after = retry.until("two new pods of roller", pods, deadline(), accept=lambda p: len(p) == 2 and not set(p) & set(before))
    d = cluster.kube.get("apps/v1", "Deployment", "roller", "default") or {}
    assert d["spec"]["selector"] == {"matchLabels": {"app": "roller"}}, "the apply kept the rest of the Deployment"
    assert lifecycle.RESTARTED_AT in d["spec"]["template"]["metadata"]["annotations"]
    assert heard[-1] == after and before in heard
    cluster.controllers._on_pods = None
    cluster.kube.delete("apps/v1", "Deployment", "roller", "default", deadline=deadline())


def test_with_a_kubelet_a_rollout_keeps_the_old_pod_until_the_new_one_is_ready(cluster: Cluster):
    """The default RollingUpdate for one replica (maxSurge 25% rounds up, maxUnavailable 25% down): the
    new pod first, the old one only once the new one is Ready; the Deployment is available meanwhile
    only through the old pod, and rolled out once the new one is Ready (the node's kubelet says so)."""
    cluster.controllers._kubelet_ready = True
    cluster.kube.apply(deployment("surger", 1, "app", "docker.io/istio/examples-bookinfo-details-v1:1.20.3"))

    def pods() -> dict[str, bool]:
        return {p["metadata"]["name"]: pod_ready(p)
                for p in cluster.kube.list("v1", "Pod", "default", label_selector="app=surger")}

    def ready(name: str) -> None:
        client.CoreV1Api(cluster.raw).patch_namespaced_pod_status(name, "default", {"status": {"conditions": [
            {"type": "Ready", "status": "True"}]}})

    try:
        (old,) = retry.until("the first pod", pods, deadline(), accept=lambda p: len(p) == 1)
        ready(old)
        waits.rollout(cluster.kube, "default", "surger", deadline())
        lifecycle.rollout_restart(cluster.kube, "default", "surger")
        both = retry.until("a new pod beside the old one", pods, deadline(), accept=lambda p: len(p) == 2)
        (new,) = set(both) - {old}
        watched = Deadline.after(1, "the old pod stays")  # five rounds of the controller (0.2 s each)
        while not watched.expired():
            assert pods() == {old: True, new: False}
        ready(new)
        waits.rollout(cluster.kube, "default", "surger", deadline())
        retry.until("the old pod gone", pods, deadline(), accept=lambda p: p == {new: True})
    finally:
        cluster.controllers._kubelet_ready = False
        cluster.kube.delete("apps/v1", "Deployment", "surger", "default", deadline=deadline())


def test_eastwest_gateway_and_exposed_istiod(cluster: Cluster):
    address = eastwest.install_eastwest(cluster.istioctl, cluster.kube, "internal", None, HUB, cluster.tmp, deadline())
    svc = cluster.kube.get("v1", "Service", "istio-eastwestgateway", "istio-system")
    assert address == svc["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [
        ("status-port", 15021), ("tls", 15443), ("tls-istiod", 15012), ("tls-webhook", 15017)]
    assert svc["metadata"]["annotations"] == {"networking.gke.io/load-balancer-type": "Internal"}
    assert svc["spec"]["selector"] == {"istio": "eastwestgateway", "app": "istio-eastwestgateway"}
    assert cluster.kube.get("networking.istio.io/v1", "Gateway", "istiod-gateway", "istio-system")
    assert cluster.kube.get("networking.istio.io/v1", "VirtualService", "istiod-vs", "istio-system")
    # Rendered for injection, as the chart does with injectionTemplate `gateway`: the Deployment's image is
    # `auto`, its pods run the proxy the injection webhook gives them, from the pinned hub
    d = cluster.kube.get("apps/v1", "Deployment", "istio-eastwestgateway", "istio-system")
    assert [c["image"] for c in d["spec"]["template"]["spec"]["containers"]] == ["auto"]
    pods = cluster.kube.list("v1", "Pod", "istio-system", label_selector="app=istio-eastwestgateway")
    assert pods and all([c["image"] for c in p["spec"]["containers"]] == [f"{HUB}/proxyv2:1.30.3"] for p in pods)
    cluster.state["eastwest"] = address


def test_ratings_namespace_and_workloadgroup(cluster: Cluster):
    workload.create_ratings_namespace(cluster.kube)
    assert cluster.kube.get("v1", "ServiceAccount", "bookinfo-ratings", "ratings")
    group = workload.create_workloadgroup(cluster.istioctl, cluster.kube, True, cluster.tmp / "workloadgroup.yaml")
    stored = cluster.kube.get("networking.istio.io/v1", "WorkloadGroup", "ratings", "ratings")
    assert stored["spec"]["metadata"]["labels"] == {"app": "ratings"}
    assert stored["spec"]["template"]["serviceAccount"] == "bookinfo-ratings"
    assert stored["spec"]["probe"]["httpGet"] == {"path": "/health", "port": 9080} == group["spec"]["probe"]["httpGet"]


def test_a_printed_group_that_is_not_the_recipes_is_refused():
    with pytest.raises(workload.WorkloadGroupInvalid, match="spec.template.serviceAccount: expected"):
        workload.check_group({"kind": "WorkloadGroup", "metadata": {"name": "ratings", "namespace": "ratings"},
                              "spec": {"metadata": {"labels": {"app": "ratings"}}, "template": {}}})


def test_vm_files_wait_out_an_empty_hosts_file(cluster: Cluster):
    """The east-west gateway loses its address (GKE re-provisioning): istioctl writes an empty hosts
    file and exits 0; the step retries until hosts names the gateway again."""
    ip = cluster.state["eastwest"]
    cluster.controllers.hold_lb.add(EW)
    client.CoreV1Api(cluster.raw).patch_namespaced_service_status(
        "istio-eastwestgateway", "istio-system", {"status": {"loadBalancer": {"ingress": []}}}, _request_timeout=10)
    out = cluster.tmp / "vm_files"
    result: dict[str, object] = {}

    def generate() -> None:
        try:
            result["dir"] = workload.generate_vm_files(
                cluster.istioctl, cluster.kube, cluster.tmp / "workloadgroup.yaml", out,
                cluster.state["cluster_id"], VM_IP, ip, 900, deadline(30))
        except Exception as e:  # surfaced by the assertion below
            result["error"] = e

    worker = threading.Thread(target=generate)
    worker.start()
    try:
        waited = Deadline.after(15, "empty hosts seen")
        while not ((out / "hosts").is_file() and (out / "hosts").read_text() == "") and not waited.expired():
            worker.join(0.1)
        assert (out / "hosts").read_text() == "", "istioctl never wrote the empty hosts file"
    finally:
        cluster.controllers.hold_lb.discard(EW)
        worker.join(40)
    assert "error" not in result, result
    env = dict(line.split("=", 1) for line in (out / "cluster.env").read_text().splitlines())
    assert env["ISTIO_META_CLUSTER_ID"] == f"'{cluster.state['cluster_id']}'"
    assert env["ISTIO_META_AUTO_REGISTER_GROUP"] == "'ratings'" and env["ISTIO_SVC_IP"] == f"'{VM_IP}'"
    assert (out / "hosts").read_text() == f"{ip} istiod.istio-system.svc\n"
    claims = cluster.api.review_token((out / "istio-token").read_text())
    assert claims and claims["aud"] == ["istio-ca"] and claims["exp"] - claims["iat"] == 900
    assert claims["sub"] == "system:serviceaccount:ratings:bookinfo-ratings"
    mesh = yaml.safe_load((out / "mesh.yaml").read_text())["defaultConfig"]
    assert mesh["readinessProbe"]["httpGet"] == {"path": "/health", "port": 9080}


def test_exercise_pieces_ratings_service_client_and_gateway(cluster: Cluster):
    bookinfo.expose_ratings(cluster.kube)
    svc = cluster.kube.get("v1", "Service", "ratings", "ratings")
    assert svc["spec"]["selector"] == {"app": "ratings"}
    assert [(p["port"], p["name"]) for p in svc["spec"]["ports"]] == [(9080, "http")]
    pod = bookinfo.deploy_client(cluster.kube, deadline())
    assert pod.startswith("curl-")
    address = bookinfo.expose_bookinfo(cluster.kube, deadline())
    ingress = cluster.kube.get("v1", "Service", "istio-ingressgateway", "istio-system")
    assert address == ingress["status"]["loadBalancer"]["ingress"][0]["ip"]
    vs = cluster.kube.get("networking.istio.io/v1", "VirtualService", "bookinfo", "default")
    assert vs["spec"]["gateways"] == ["bookinfo-gateway"]


def test_vm_files_without_the_root_cert_are_a_hard_error(cluster: Cluster):
    cluster.controllers.hold_root_cert.add("late")
    cluster.kube.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: late}\n")
    group = yaml.safe_load((cluster.tmp / "workloadgroup.yaml").read_text())
    group["metadata"]["namespace"] = "late"
    (cluster.tmp / "late.yaml").write_text(yaml.safe_dump(group))
    with pytest.raises(CommandFailed, match="configmap istio-ca-root-cert was not found in namespace late"):
        cluster.istioctl.run(["x", "workload", "entry", "configure", "-f", str(cluster.tmp / "late.yaml"),
                              "-o", str(cluster.tmp / "late"), "--clusterID=Kubernetes"], step="late")
