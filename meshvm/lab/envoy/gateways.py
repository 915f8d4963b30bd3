"""The lab's gateways (ingress and east-west): each a real Envoy (proxy.py) configured over ADS (xds.py)
with the xDS that gateway.py models istiod building from the cluster's Gateways, VirtualServices and
Services.

The inputs are read through the Kubernetes API at most once per READ_TTL_S; when the API fails the
last read stays in force (as Envoy keeps its last push). Both gateways run in the cluster node's
network namespace (the lab has no gateway pods), so each has its own loopback address for its admin
port 15000.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from meshvm.lab.envoy import gateway, xds
from meshvm.lab.envoy.proxy import Envoy, Node

log = logging.getLogger(__name__)
READ_TTL_S = 1.0
API_TIMEOUT_S = 5.0
_NET = ("networking.istio.io", "v1")
INGRESS = Node("router", "127.0.0.1", "istio-ingressgateway-lab", "istio-system", "istio-ingressgateway",
               gateway.INGRESS_LABELS)
EASTWEST = Node("router", "127.0.0.2", "istio-eastwestgateway-lab", "istio-system", "istio-eastwestgateway",
                gateway.EASTWEST_LABELS)


class GatewayProxy:
    """One gateway: `node` says which (its labels select the Gateways and Services), its admin on
    (node.ip, 15000) unless `admin` says otherwise; `bind` moves Service ports (self-tests); its xDS
    socket in the folder `sockets`, removed at stop (the lab's: leaks.socket_dir, which the janitor knows)."""

    def __init__(self, node: Node, api: client.ApiClient, endpoints: Callable[[str, int], list[str]], workdir: Path,
                 *, sockets: Path, netns: str | None, host: str = "0.0.0.0",  # noqa: S104
                 bind: dict[int, int] | None = None, admin: tuple[str, int] | None = None):
        self.node, self.api, self.endpoints, self.workdir = node, api, endpoints, workdir
        self.host, self.bind = host, bind or {}
        self._sockets = sockets  # a unix socket's path has at most 107 bytes: a short folder, not the workdir
        self.ads = xds.AdsServer(self.config, self._sockets / "XDS")
        self.envoy = Envoy(node, self._sockets / "XDS", workdir, netns=netns, admin=admin or (node.ip, 15000))
        self._lock = threading.Lock()
        self._inputs = gateway.GatewayInputs([], [], [], [])
        self._read_at = float("-inf")

    def start(self) -> GatewayProxy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._sockets.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ads.start()
        try:
            self.envoy.start()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.envoy.stop()
        self.ads.stop()
        shutil.rmtree(self._sockets, ignore_errors=True)

    def config(self, node_id: str) -> xds.Resources:
        return gateway.resources(self.inputs(), self.endpoints, self.node.labels, self.host, self.bind)

    def inputs(self) -> gateway.GatewayInputs:
        with self._lock:
            if time.monotonic() - self._read_at >= READ_TTL_S:
                try:
                    self._inputs = self._read()
                    self._read_at = time.monotonic()
                except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
                    log.warning("%s: reading its config failed, keeping the last: %s", self.node.workload, e)
            return self._inputs

    def _read(self) -> gateway.GatewayInputs:
        api, core = client.CustomObjectsApi(self.api), client.CoreV1Api(self.api)
        gateways = cast(dict, api.list_cluster_custom_object(*_NET, "gateways", _request_timeout=API_TIMEOUT_S))
        vss = cast(dict, api.list_cluster_custom_object(*_NET, "virtualservices", _request_timeout=API_TIMEOUT_S))
        to_dict = self.api.sanitize_for_serialization
        services = [to_dict(s) for s in core.list_service_for_all_namespaces(_request_timeout=API_TIMEOUT_S).items]
        pods = [to_dict(p) for p in core.list_pod_for_all_namespaces(_request_timeout=API_TIMEOUT_S).items]
        ordered = sorted(vss.get("items") or [], key=lambda o: (
            o["metadata"].get("creationTimestamp") or "", o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return gateway.GatewayInputs(gateways.get("items") or [], ordered, services,
                                     [p for p in pods if (p.get("status") or {}).get("phase") == "Running"])
