"""A GKE cluster of the local cloud (`--platform lab`): its API stand-in, controller stand-ins, its node
on the lab network and what runs there (istiod's stand-ins, the pods, the gateways), and the rotated
access tokens the local cloud and its clusters accept.
"""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

from kubernetes import client

from meshvm import redact
from meshvm.lab.controllers import ClusterControllers
from meshvm.lab.envoy.gateways import EASTWEST, INGRESS, GatewayProxy
from meshvm.lab.envoy.meshinputs import MeshInputs
from meshvm.lab.envoy.vmxds import VmXds
from meshvm.lab.gcloud.loadbalancers import ClusterLoadBalancers
from meshvm.lab.istiod_standin import IstiodStandIn
from meshvm.lab.istiods import Istiods
from meshvm.lab.kubeapi import KubeApiStandIn
from meshvm.lab.leaks import socket_dir
from meshvm.lab.mesh_registry import MeshRegistry
from meshvm.lab.meshca import MeshCa
from meshvm.lab.netsafety import run_ip
from meshvm.lab.pods import NodeRuntime
from meshvm.lab.router import Router
from meshvm.lab.timing import FAST, LabTiming

TOKEN_TTL_S = 120.0  # as short-lived as the lab can afford: a run outlives several
ROTATE_S = 30.0
NODE_HOST = 2  # the cluster node's host number in the VM subnet
LB_PREFIX = 27  # the load-balancer range: the VM subnet's last /27


class RotatingTokens:
    """Access tokens for the local cloud and its clusters, rotated in a 0600 file."""

    def __init__(self, path: Path, ttl_s: float = TOKEN_TTL_S, rotate_s: float = ROTATE_S):
        self.path, self.ttl_s, self.rotate_s = path, ttl_s, rotate_s
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.rotate()
        self._thread = threading.Thread(target=self._run, name="lab-tokens", daemon=True)
        self._thread.start()

    def rotate(self) -> None:
        token = f"lab-{secrets.token_urlsafe(24)}"
        redact.register(token)
        with self._lock:
            now = time.monotonic()
            self._expiry = {t: e for t, e in self._expiry.items() if e > now}
            self._expiry[token] = now + self.ttl_s
        tmp = self.path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(token + "\n")
        tmp.replace(self.path)

    def _run(self) -> None:
        while not self._stop.wait(self.rotate_s):
            self.rotate()

    def __contains__(self, token: object) -> bool:
        with self._lock:
            return self._expiry.get(str(token), 0.0) > time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class ClusterNode:
    """lab STAND-IN for a GKE cluster's node VM on the lab network (one host for the node pool).

    A host on the lab router carrying the node pool's network tags (the run's rules that target the
    node tag apply to it) with two alias ranges routed to it: the pod range (pod IPs are the nodes'
    alias IPs on GKE) and the load-balancer range, local on the node's `lo` (GCE's guest agent makes
    a forwarding rule's address local on its backend VMs). So a VM reaches an east-west gateway
    address through the router and its firewall, as it reaches a GKE node. GKE's generated node tag
    (gke-<cluster>-<id>-node) is added once the cluster's load-balancer side is known, so GKE's own
    `k8s-fw-*` rules of its LoadBalancer Services admit their source ranges to it, as on GKE.
    """

    def __init__(self, router: Router, name: str, ip: str, tags: tuple[str, ...], pod_range: str, lb_range: str):
        self.router, self.name, self.ip, self.tags = router, name, ip, tags
        self.pod_range, self.lb_range = pod_range, lb_range
        self.netns: str | None = None

    def up(self) -> None:
        other = [h.name for h in self.router.hosts() if h.ip == self.ip]
        if other:
            raise RuntimeError(f"lab: {other[0]} still holds the node address {self.ip}; the lab models "
                               "one cluster at a time (its pod and load-balancer ranges route to one node)")
        att = self.router.attach(self.name, self.ip, self.tags, alias_ranges=(self.pod_range, self.lb_range))
        self.netns = att.netns
        run_ip("addr", "add", self.lb_range, "dev", "lo", netns=att.netns)  # every address of the range is local

    def down(self) -> None:
        self.router.detach(self.name)


class KubeClusterBackend:
    """A GKE cluster of the local cloud: a Kubernetes API stand-in plus the controller stand-ins, and,
    given a node, that node on the lab network running, over one mesh registry: istiod's VM-facing
    stand-in (port 15012), the pods with their sidecars and cluster DNS (pods.py), and the ingress
    gateway (a real Envoy on port 80, envoy/gateways.py)."""

    def __init__(self, tokens: RotatingTokens, pod_range: str, lb_pool: list[str], workdir: Path,
                 node: ClusterNode | None = None, timing: LabTiming = FAST):
        self.tokens, self.pod_range, self.lb_pool, self.workdir = tokens, pod_range, lb_pool, workdir
        self.timing = timing
        self.api: KubeApiStandIn | None = None
        self.controllers: ClusterControllers | None = None
        self.node = node
        self.istiods: Istiods | None = None
        self.runtime: NodeRuntime | None = None
        self.vm_xds: VmXds | None = None
        self.gateways: list[GatewayProxy] = []
        self.load_balancers: ClusterLoadBalancers | None = None

    def attach_load_balancers(self, lbs: ClusterLoadBalancers) -> None:
        """The local cloud's side of this cluster's LoadBalancer Services (called before start)."""
        self.load_balancers = lbs

    def start(self, name: str) -> tuple[str, str]:
        self.api = KubeApiStandIn(token_check=self.token_ok)
        self.api.start()
        ca_file = self.workdir / f"{name}-ca.crt"
        ca_file.write_text(self.api.ca_pem)
        cfg = client.Configuration()
        cfg.host, cfg.ssl_ca_cert = self.api.endpoint, str(ca_file)
        cfg.api_key, cfg.api_key_prefix = {"BearerToken": self.api.issue_token(24 * 3600)}, {"BearerToken": "Bearer"}
        self.mesh_ca = MeshCa()  # istiod's self-signed CA: its root is what istio-ca-root-cert carries
        lbs = self.load_balancers
        if lbs:  # GKE's NEG controller writes the cluster's kube-system UID into each NEG's description
            kube_system = client.CoreV1Api(client.ApiClient(cfg)).read_namespace("kube-system", _request_timeout=10)
            lbs.cluster_uid = str(kube_system.metadata.uid)  # type: ignore[union-attr]
        self.controllers = ClusterControllers(client.ApiClient(cfg), self.pod_range, list(self.lb_pool),
                                              self.mesh_ca.root_pem, on_lb=lbs.created if lbs else None,
                                              on_lb_deleted=lbs.deleted if lbs else None, lb_s=self.timing.lb_s,
                                              pull_s=self.timing.pull_s, on_pods=self._istiod_pods,
                                              kubelet_ready=self.node is not None).start()
        if self.node is not None:
            if lbs:
                self.node.tags = (*self.node.tags, lbs.node_tag)
            self._start_node(name, cfg)
        return self.api.endpoint.removeprefix("https://"), self.api.ca_pem

    def _start_node(self, name: str, cfg: client.Configuration) -> None:
        """The node on the lab network and what runs there, over one mesh registry: istiod's stand-ins
        (one per istiod Deployment), the VM's xDS, the pods with their sidecars, the two gateways."""
        assert self.node is not None and self.api is not None
        self.node.up()
        netns, addrs = self.node.netns, self.node.router.addrs
        assert netns is not None
        registry = MeshRegistry(client.ApiClient(cfg), str(addrs.service_range))
        api, review, ca, workdir = client.ApiClient(cfg), self.api.review_token, self.mesh_ca, self.workdir

        def make(revision: str, port: int, names: list[str]) -> IstiodStandIn:
            return IstiodStandIn(api, review, netns=netns, host="127.0.0.1", port=port, revision=revision,
                                 mesh_table=registry.table, workdir=workdir, tls=ca.serving(names), ca=ca)
        inputs = MeshInputs(client.ApiClient(cfg), registry)  # what istiod reads for every sidecar
        self.istiods = istiods = Istiods(make)
        self.vm_xds = VmXds(istiods, inputs, self.mesh_ca, Path(socket_dir(addrs.tag, "vmxds")) / "XDS").start()
        istiods.xds_socket = self.vm_xds.ads.path
        istiods.start()
        self.runtime = NodeRuntime(client.ApiClient(cfg), self.api, registry, node_netns=netns,
                                   tag=addrs.tag, block=str(addrs.block), service_range=str(addrs.service_range),
                                   workdir=self.workdir / f"{name}-pods", mesh_ca=self.mesh_ca,
                                   inputs=inputs).start()
        self.api.add_log_source(self.runtime.log_source)
        self.api.add_log_source(istiods.log_source)
        for node in (INGRESS, EASTWEST):
            self.gateways.append(GatewayProxy(
                node, client.ApiClient(cfg), istiods.endpoints(registry.endpoints), self.workdir / f"{name}-{node.workload}",
                sockets=Path(socket_dir(addrs.tag, node.workload.removeprefix("istio-"))), netns=netns).start())

    def _istiod_pods(self, namespace: str, deployment: str, pods: list[str]) -> None:
        if self.istiods is not None:
            self.istiods.rolled(namespace, deployment, pods)

    @property
    def istiod(self) -> IstiodStandIn | None:
        """The revisionless control plane's stand-in (the one a recipe run has)."""
        return self.istiods.by_revision.get("default") if self.istiods else None

    def stop(self) -> None:
        """Idempotent: the platform and the cloud's GKE both stop their clusters."""
        if self.istiods:
            self.istiods.stop()
        if self.vm_xds:
            self.vm_xds.stop()
        for gw in self.gateways:
            gw.stop()
        if self.runtime:
            self.runtime.stop()
        if self.controllers:
            self.controllers.stop()
        if self.api:
            self.api.stop()
        if self.node:
            self.node.down()

    def token_ok(self, token: str) -> bool:
        return token in self.tokens
