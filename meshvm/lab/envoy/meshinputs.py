"""What the lab's control plane reads for its sidecars, as istiod reads it from the cluster: the
Services (their ClusterIP: the VIP the mesh registry gives them, the lab's API allocating none), the
PeerAuthentications and AuthorizationPolicies, and each Service port's endpoints with the SPIFFE name
of those that have a sidecar (mesh_registry.py). Read at most once per READ_TTL_S; when the API fails
the last read stays in force (as Envoy keeps its last push)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, cast

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from meshvm.lab.envoy.sidecar import Endpoint, SidecarInputs
from meshvm.lab.mesh_registry import MeshRegistry

log = logging.getLogger(__name__)
READ_TTL_S = 1.0
API_TIMEOUT_S = 5.0
_SEC = ("security.istio.io", "v1")


class MeshInputs:
    def __init__(self, api: client.ApiClient, registry: MeshRegistry):
        self.api, self.registry = api, registry
        self._lock = threading.Lock()
        self._last = SidecarInputs([], [], [])
        self._read_at = float("-inf")

    def __call__(self) -> SidecarInputs:
        with self._lock:
            if time.monotonic() - self._read_at >= READ_TTL_S:
                try:
                    self._last = self._read()
                except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
                    log.warning("sidecar config: reading the cluster failed, keeping the last: %s", e)
                self._read_at = time.monotonic()  # a failed read too: the next try waits its turn
            return self._last

    def _read(self) -> SidecarInputs:
        core, custom = client.CoreV1Api(self.api), client.CustomObjectsApi(self.api)
        services: list[dict[str, Any]] = []
        for s in core.list_service_for_all_namespaces(_request_timeout=API_TIMEOUT_S).items:
            svc = cast(dict, self.api.sanitize_for_serialization(s))
            if (svc.get("spec") or {}).get("selector"):
                meta = svc["metadata"]
                svc["spec"]["clusterIP"] = self.registry.vip(meta.get("namespace", "default"), meta["name"])
                services.append(svc)
        listed = [cast(dict, custom.list_cluster_custom_object(*_SEC, plural, _request_timeout=API_TIMEOUT_S))
                  .get("items") or [] for plural in ("peerauthentications", "authorizationpolicies")]
        return SidecarInputs(services, listed[0], listed[1])

    def endpoints(self, fqdn: str, port: int) -> list[Endpoint]:
        for s in self.registry.table()["services"]:
            if s["host"] == fqdn:
                p: dict = next((p for p in s["ports"] if p["port"] == port), {})
                return [Endpoint(e, (p.get("principals") or {}).get(e, "")) for e in p.get("endpoints") or []]
        return []
