"""lab STAND-IN for the service registry that istiod (and kube-proxy) build from the Kubernetes API.

The mesh table (meshwire's format) it derives, as docs/facts.md section 1 describes Istio's behaviour:
- every Service with a selector gets a virtual IP from the cluster's service range (the API stand-in
  allocates no spec.clusterIP; this registry is the VIP's only user: the cluster DNS stand-in, the
  proxies and the agent on the VM all ask it);
- a Service port's endpoints are the Ready Pods of its namespace whose labels match its selector,
  and, for proxies of the mesh (`with_entries`), the WorkloadEntries of its namespace whose labels
  match, those with health checks on (`proxy.istio.io/health-checks-enabled`) only while their
  condition Healthy is True. kube-proxy (a pod without a sidecar) never sees WorkloadEntries.
  On 1.30 and 1.31 alike an unhealthy (or not yet probed) entry with health checks is no workload
  instance at all, so it is in no caller's EDS, whatever `PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS`
  says (that 1.31 flag concerns endpoints that exist but are not ready, e.g. a pod's): `isHealthy` in
  `buildCollections`, `pilot/pkg/serviceregistry/serviceentry/controller.go` at 1.30.3 and
  1.31.0-rc.0 (docs/facts.md section 6, "Health");
- an endpoint's TLS mode, as `getTLSModeFromWorkloadEntry` decides it
  (`pilot/pkg/serviceregistry/serviceentry/conversion.go` at 1.30.3): the entry's
  `security.istio.io/tlsMode` label, else `istio` when it has a serviceAccount, else `disabled`.
  A pod's TLS mode is its label `security.istio.io/tlsMode` (the injector sets `istio`;
  `kube.PodTLSMode`), else `disabled`. Endpoints of mode `istio` are listed under the port's
  `principals` with their SPIFFE identity (the pod's service account, the entry's serviceAccount):
  callers' sidecars speak mutual TLS to them and expect that name (envoy/sidecar.py).
Without the WorkloadGroup, the VM's registration or its health, `ratings.ratings` has no endpoint.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import Any

from kubernetes import client, dynamic

from meshvm.lab.standins import meshwire
from meshvm.lab.standins.istiostats import spiffe

CACHE_S = 0.5  # every proxy connection asks; the API is listed at most this often
TIMEOUT = 10
FIRST_HOST = 10  # VIPs from service-range host .10 up, as a cluster's first Services get low IPs
TLS_MODE = "security.istio.io/tlsMode"
GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # what Go's strconv.ParseBool reads as true


def pod_ready(pod: dict[str, Any]) -> bool:
    """Running, not going away, and condition Ready True (what an EndpointSlice calls ready)."""
    status = pod.get("status") or {}
    return (status.get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
            and any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []))


class MeshRegistry:
    def __init__(self, api: client.ApiClient, service_range: str, cache_s: float = CACHE_S):
        self.cache_s = cache_s
        self._dyn = dynamic.DynamicClient(api)
        self._free = iter(list(ipaddress.ip_network(service_range).hosts())[FIRST_HOST - 1:])
        self._vips: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._building = threading.Lock()
        self._cache: dict[bool, tuple[float, dict]] = {}

    def vip(self, namespace: str, name: str) -> str:
        with self._lock:
            key = (namespace, name)
            if key not in self._vips:
                self._vips[key] = str(next(self._free))
            return self._vips[key]

    def table(self, with_entries: bool = True) -> dict:
        with self._building:  # one build at a time: concurrent callers take its result
            now = time.monotonic()
            with self._lock:
                hit = self._cache.get(with_entries)
            if hit and now - hit[0] < self.cache_s:
                return hit[1]
            table = self._build(with_entries)
            with self._lock:
                self._cache[with_entries] = (now, table)
            return table

    def lookup(self, name: str) -> str | None:
        """The cluster DNS stand-in's answer: Service FQDNs only (pods' resolvers append the search
        domains, as kube-dns expects)."""
        if not name.endswith("." + meshwire.DOMAIN):
            return None
        return meshwire.name_table(self.table(with_entries=False)).get(name)

    def endpoints(self, host: str, port: int) -> list[str]:
        """The mesh's endpoints of `host` (FQDN) and a Service port (the ingress gateway's view)."""
        for s in self.table()["services"]:
            if s["host"] == host:
                return next((list(p["endpoints"]) for p in s["ports"] if p["port"] == port), [])
        return []

    def _list(self, api_version: str, kind: str) -> list[dict[str, Any]]:
        res = self._dyn.resources.get(api_version=api_version, kind=kind)
        return [o.to_dict() for o in res.get(_request_timeout=TIMEOUT).items]

    def _build(self, with_entries: bool) -> dict:
        pods = [p for p in self._list("v1", "Pod") if pod_ready(p) and (p.get("status") or {}).get("podIP")]
        entries = self._list("networking.istio.io/v1", "WorkloadEntry") if with_entries else []
        services = []
        for svc in self._list("v1", "Service"):
            meta, spec = svc["metadata"], svc.get("spec") or {}
            selector = spec.get("selector") or {}
            if not selector:
                continue
            ns = meta["namespace"]
            ports = []
            for p in spec.get("ports") or []:
                target = p.get("targetPort") or p["port"]
                selected = [pod for pod in pods
                            if pod["metadata"]["namespace"] == ns and _selects(selector, pod["metadata"].get("labels"))]
                ready = [e for e in entries if e["metadata"]["namespace"] == ns and (e.get("spec") or {}).get("address")
                         and _selects(selector, (e.get("spec") or {}).get("labels")) and _ready(e)]
                eps = [f"{pod['status']['podIP']}:{_pod_port(pod, target)}" for pod in selected]
                eps += [_entry_endpoint(e, p, target) for e in ready]
                principals = {f"{pod['status']['podIP']}:{_pod_port(pod, target)}": spiffe(
                    ns, (pod.get("spec") or {}).get("serviceAccountName") or "default")
                    for pod in selected if (pod["metadata"].get("labels") or {}).get(TLS_MODE) == "istio"}
                principals |= {_entry_endpoint(e, p, target): spiffe(ns, e["spec"].get("serviceAccount") or "default")
                               for e in ready if _tls_mode(e) == "istio"}
                port = {"port": p["port"], "targetPort": target, "endpoints": eps, "principals": principals}
                ports.append(port)
            services.append({"name": meta["name"], "namespace": ns, "host": f"{meta['name']}.{ns}.{meshwire.DOMAIN}",
                             "vip": self.vip(ns, meta["name"]), "ports": ports})
        return {"services": services}


def _selects(selector: dict[str, str], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _pod_port(pod: dict, target: int | str) -> int | str:
    if isinstance(target, int):
        return target
    for c in (pod.get("spec") or {}).get("containers") or []:
        for cp in c.get("ports") or []:
            if cp.get("name") == target:
                return int(cp["containerPort"])
    return target


def _entry_port(entry: dict, port: dict, target: int | str) -> int | str:
    """A WorkloadEntry's `ports` map a Service port name to the workload's port; else targetPort."""
    named = ((entry.get("spec") or {}).get("ports") or {}).get(port.get("name") or "")
    return int(named) if named else target


def _entry_endpoint(entry: dict, port: dict, target: int | str) -> str:
    return f"{entry['spec']['address']}:{_entry_port(entry, port, target)}"


def _tls_mode(entry: dict) -> str:
    spec = entry.get("spec") or {}
    label = (spec.get("labels") or {}).get(TLS_MODE)
    return str(label) if label else ("istio" if spec.get("serviceAccount") else "disabled")


def _ready(entry: dict) -> bool:
    """`isHealthy` (conversion.go): health checks on (the annotation parses as Go's true) need the
    condition Healthy True; a missing condition counts as unhealthy."""
    notes = entry["metadata"].get("annotations") or {}
    if notes.get("proxy.istio.io/health-checks-enabled") not in GO_TRUE:
        return True
    return any(c.get("type") == "Healthy" and c.get("status") == "True"
               for c in (entry.get("status") or {}).get("conditions") or [])
