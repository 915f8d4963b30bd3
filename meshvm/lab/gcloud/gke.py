"""GKE v1 of the stand-in: clusters (create/get/list/delete) and their operations. Creating a cluster
starts a ClusterBackend (the Kubernetes API stand-in); its endpoint and CA become the cluster's.
A backend with `attach_load_balancers` gets the cluster's Compute side of its LoadBalancer Services
(loadbalancers.py); deleting the cluster leaves what they made, as on GKE."""

from __future__ import annotations

import base64
import ipaddress
import logging
import time
from collections.abc import Callable

from meshvm.lab.gcloud.backing import ClusterBackend
from meshvm.lab.gcloud.compute import World
from meshvm.lab.gcloud.faults import ApiError, Faults, conflict, not_found
from meshvm.lab.gcloud.loadbalancers import ClusterLoadBalancers, LoadBalancers
from meshvm.lab.gcloud.operations import Operations

log = logging.getLogger(__name__)
PROVISIONING, RUNNING, STOPPING, ERROR = 1, 2, 3, 4  # Cluster.Status over REST (enum-encoding=int)
CREATE_CLUSTER, DELETE_CLUSTER, SET_LABELS = 1, 2, 12  # Operation.Type


class Gke:
    def __init__(self, world: World, ops: Operations, faults: Faults,
                 backend: Callable[[str], ClusterBackend] | None, base_url: Callable[[], str],
                 cluster_delay: float = 0.5, load_balancers: LoadBalancers | None = None) -> None:
        self.w, self.ops, self.faults, self.backend_factory, self.base = world, ops, faults, backend, base_url
        self.cluster_delay = cluster_delay
        self.load_balancers = load_balancers
        self.clusters: dict[tuple[str, str], dict] = {}
        self.backends: dict[tuple[str, str], ClusterBackend] = {}
        self.cluster_lbs: dict[tuple[str, str], ClusterLoadBalancers] = {}

    def create(self, project: str, location: str, body: dict) -> dict:
        self._location(project, location)
        cl = dict(body.get("cluster") or {})
        name = cl.get("name", "")
        if not name or not cl.get("nodePools"):
            raise ApiError(400, "badRequest", "Cluster.name and Cluster.node_pools are required.")
        with self.w.lock:
            if (location, name) in self.clusters:
                raise conflict(f"projects/{project}/locations/{location}/clusters/{name}")
            cl.update(status=PROVISIONING, zone=location, location=location,
                      selfLink=f"{self._link(project, location)}/clusters/{name}",
                      clusterIpv4Cidr=self._pod_range(cl), **enrolment(cl))
            self.clusters[(location, name)] = cl
        fail = self.faults.take("container.clusters.create", in_operation=True)

        def work() -> None:
            if fail is not None:  # GKE keeps a failed cluster in ERROR; it must be deleted
                cl["status"] = ERROR
                raise ApiError(fail.status, fail.reason, fail.message)
            if self.backend_factory is None:
                cl["status"] = ERROR
                raise ApiError(500, "internalError", "the stand-in has no cluster backend")
            backend = self.backend_factory(name)
            attach = getattr(backend, "attach_load_balancers", None)  # optional: backends with Services
            if attach is not None and self.load_balancers is not None:
                self.cluster_lbs[(location, name)] = self.load_balancers.for_cluster(cl)
                attach(self.cluster_lbs[(location, name)])
            self.backends[(location, name)] = backend
            endpoint, ca = backend.start(name)
            cl.update(endpoint=endpoint, status=RUNNING,
                      masterAuth={"clusterCaCertificate": base64.b64encode(ca.encode()).decode()})

        return self.ops.start("gke", self._op_fields(project, location, name, CREATE_CLUSTER), work,
                              delay=self.cluster_delay).json()

    def get(self, project: str, location: str, name: str) -> dict:
        self._location(project, location)
        cl = self.clusters.get((location, name))
        if cl is None:
            raise not_found(f"projects/{project}/locations/{location}/clusters/{name}")
        return cl

    def list(self, project: str, location: str) -> dict:
        self._location(project, location)
        return {"clusters": [c for (loc, _), c in list(self.clusters.items()) if location in ("-", loc)]}

    def delete(self, project: str, location: str, name: str) -> dict:
        cl = self.get(project, location, name)
        busy = [o for o in self.ops.all() if o.style == "gke" and o.state != "DONE"
                and o.fields.get("targetLink", "").endswith(f"/clusters/{name}")]
        if busy:
            raise ApiError(400, "failedPrecondition", f"Operation {busy[0].name} is currently "
                           f"{'creating' if busy[0].fields['operationType'] == CREATE_CLUSTER else 'deleting'} "
                           f"cluster {name}. Please wait and try again once it is done.")
        cl["status"] = STOPPING

        def work() -> None:
            backend, lbs = self.backends.pop((location, name), None), self.cluster_lbs.pop((location, name), None)
            if lbs is not None:  # its controllers stop first: what they had not yet removed stays
                lbs.stopped()
            if backend is not None:
                backend.stop()
            self.clusters.pop((location, name), None)
            with self.w.lock:  # deletes in its network answer resourceNotReady for a while
                self.w.settling[str(cl.get("network") or "default").rsplit("/", 1)[-1]] = \
                    time.monotonic() + self.w.settle_s

        return self.ops.start("gke", self._op_fields(project, location, name, DELETE_CLUSTER), work,
                              delay=self.cluster_delay / 2).json()

    def set_labels(self, project: str, location: str, name: str, labels: dict[str, str]) -> dict:
        cl = self.get(project, location, name)

        def work() -> None:
            cl["resourceLabels"] = labels

        return self.ops.start("gke", self._op_fields(project, location, name, SET_LABELS), work,
                              delay=self.cluster_delay / 4).json()

    def operation(self, project: str, location: str, name: str) -> dict:
        self._location(project, location)
        op = self.ops.get(name)
        if op.style != "gke":
            raise not_found(f"projects/{project}/locations/{location}/operations/{name}")
        return op.json()

    def operations(self, project: str, location: str) -> dict:
        self._location(project, location)
        return {"operations": [o.json() for o in self.ops.all()
                               if o.style == "gke" and location in ("-", o.fields["zone"])]}

    def stop(self) -> None:
        for key in list(self.backends):
            self.backends.pop(key).stop()

    def _op_fields(self, project: str, location: str, name: str, kind: int) -> dict:
        link = f"{self._link(project, location)}/clusters/{name}"
        return {"zone": location, "location": location, "operationType": kind, "targetLink": link,
                "selfLink": f"{self._link(project, location)}/operations"}

    def _pod_range(self, cl: dict) -> str:
        ip = cl.get("ipAllocationPolicy") or {}
        if not ip.get("useIpAliases"):
            raise ApiError(400, "badRequest", "Only VPC-native clusters (ipAllocationPolicy.useIpAliases) are modelled.")
        if ip.get("clusterIpv4CidrBlock"):
            return str(ipaddress.ip_network(ip["clusterIpv4CidrBlock"]))
        wanted = ip.get("clusterSecondaryRangeName", "")
        sub = cl.get("subnetwork", "")
        with self.w.lock:
            subs = [o for k, o in self.w.objects.items() if k.startswith("regions/") and f"/subnetworks/{sub}" in k]
        for r in (subs[0].get("secondaryIpRanges", []) if subs else []):
            if r.get("rangeName") == wanted:
                return r["ipCidrRange"]
        raise ApiError(400, "badRequest", f"Subnetwork '{sub}' has no secondary range named '{wanted}'.")

    def _link(self, project: str, location: str) -> str:
        return f"{self.base()}/v1/projects/{project}/locations/{location}"

    def _location(self, project: str, location: str) -> None:
        if project != self.w.project:
            raise ApiError(403, "forbidden", f"Permission denied on resource project {project}.")
        if location != "-" and location not in self.w.zones:
            raise not_found(f"projects/{project}/locations/{location}")


# getServerConfig (GET .../locations/<zone>/serverConfig): the versions each release channel offers.
# The stand-in's clusters run no real Kubernetes version; these only let preflight check --cluster-version.
# Late 2026 (docs/facts.md section 6): Regular defaults to 1.35; 1.37 is out (on Rapid, inferred),
# outside Istio 1.31's Kubernetes range.
CHANNEL_VERSIONS = {1: ("1.37.1-gke.1000000", "1.36.3-gke.1200000"),  # RAPID
                    2: ("1.35.4-gke.1100000", "1.34.6-gke.1300000"),  # REGULAR
                    3: ("1.34.5-gke.1000000", "1.33.9-gke.1100000")}  # STABLE


def server_config(gke: Gke, project: str, location: str) -> dict:
    gke._location(project, location)
    every = sorted({v for vs in CHANNEL_VERSIONS.values() for v in vs}, reverse=True)
    return {"defaultClusterVersion": CHANNEL_VERSIONS[2][0], "validMasterVersions": every, "validNodeVersions": every,
            "channels": [{"channel": ch, "defaultVersion": vs[0], "validVersions": list(vs)}
                         for ch, vs in CHANNEL_VERSIONS.items()]}


def enrolment(cl: dict) -> dict:
    """The channel and version GKE gives a new cluster. No `releaseChannel` at all: Regular (GKE's
    default). `releaseChannel` present with channel UNSPECIFIED (an empty message in JSON, since proto3
    JSON omits a default enum; the same as gcloud's `--release-channel=None`): no channel. The version:
    `initialClusterVersion` (exact or a prefix such as 1.36) among those offered, else the channel's
    default (no channel: the server's default)."""
    given = cl.get("releaseChannel")
    channel = 2 if given is None else _channel(given.get("channel", 0))
    offered = CHANNEL_VERSIONS.get(channel) or sorted({v for vs in CHANNEL_VERSIONS.values() for v in vs}, reverse=True)
    want = str(cl.get("initialClusterVersion") or "")
    version = next((v for v in offered if want and (v == want or v.startswith((want + ".", want + "-")))), None)
    if want and version is None:
        raise ApiError(400, "badRequest", f"Version \"{want}\" is invalid.")
    version = version or (CHANNEL_VERSIONS[channel][0] if channel in CHANNEL_VERSIONS else CHANNEL_VERSIONS[2][0])
    return {"releaseChannel": {"channel": channel} if channel else {}, "currentMasterVersion": version,
            "currentNodeVersion": version}


def _channel(value: int | str) -> int:
    names = {"UNSPECIFIED": 0, "RAPID": 1, "REGULAR": 2, "STABLE": 3, "EXTENDED": 4}
    return names.get(str(value), 0) if not str(value).isdigit() else int(value)
