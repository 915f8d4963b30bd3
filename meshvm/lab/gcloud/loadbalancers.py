"""GKE's service controller, its Compute side (lab STAND-IN): what a cluster's LoadBalancer Service
makes appear in the project (docs/facts.md section 3), shaped as GKE's target-pool external load balancer:

- forwarding rule `a<hex>` (regional; IPAddress = the Service's address; description
  `{"kubernetes.io/service-name":"<ns>/<name>"}`) -> target pool `a<hex>` -> the cluster's shared
  node health check `k8s-<cluster id>-node` (legacy httpHealthChecks);
- firewall rule `k8s-fw-a<hex>`: the Service's ports to the nodes' tag `gke-<cluster>-<id>-node`, from
  its `loadBalancerSourceRanges` (0.0.0.0/0 if none); and `k8s-<cluster id>-node-http-hc` from
  Google's health checkers. Both reach the lab router like any other rule.

A Service annotated `networking.gke.io/load-balancer-type: Internal` gets GKE's internal passthrough
load balancer as before 1.36 instead: forwarding rule `a<hex>` (INTERNAL, in the cluster's network
and subnetwork; the address comes from the subnetwork, so runs with the same subnet range in other
networks may hold the same one) -> regional backend service `a<hex>` (backends: the instance group
`k8s-ig--<cluster id>`) -> the shared health check `k8s-<cluster id>-node` (healthChecks), firewall
rules `k8s-fw-a<hex>` and `k8s-<cluster id>-node-hc` (empty description). A backend service or
health check still in use answers 400 resourceInUseByAnotherResource on delete.

They go when the Service goes while the cluster runs (the controller stand-in calls `deleted`
before it clears the Service's finalizer); deleting the cluster leaves them, as on GKE. GKE derives
`a<hex>` from the Service's UID; this stand-in from the cluster and the Service's name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Sequence

from meshvm.lab.gcloud.compute import Compute
from meshvm.lab.gcloud.faults import ApiError
from meshvm.lab.gcloud.resources import Kinds

log = logging.getLogger(__name__)
HC_SOURCES = ("35.191.0.0/16", "209.85.152.0/22", "209.85.204.0/22")  # legacy health checkers
ILB_HC_SOURCES = ("35.191.0.0/16", "130.211.0.0/22")  # health checkers of internal load balancers
SERVICE_KEY = "kubernetes.io/service-name"
INTERNAL = ("networking.gke.io/load-balancer-type", "cloud.google.com/load-balancer-type")


class LoadBalancers:
    def __init__(self, compute: Compute, kinds: Kinds) -> None:
        self.c, self.kinds = compute, kinds

    def for_cluster(self, cluster: dict) -> ClusterLoadBalancers:
        return ClusterLoadBalancers(self, cluster)

    def link(self, path: str) -> str:
        return f"{self.c.base()}/compute/v1/projects/{self.c.w.project}/{path}"

    def _in_use(self, coll: str, name: str, pred) -> None:  # noqa: ANN001
        with self.c.w.lock:
            users = [k for k, o in self.c.w.objects.items() if pred(o)]
        if users:
            raise ApiError(400, "resourceInUseByAnotherResource",
                           f"The {coll} resource '{name}' is already being used by '{users[0]}'")

    def check_target_pool_delete(self, tp: dict) -> None:
        self._in_use("target pool", tp["name"], lambda o: o.get("target") == tp["selfLink"])

    def check_http_health_check_delete(self, hc: dict) -> None:
        self._in_use("httpHealthCheck", hc["name"], lambda o: hc["selfLink"] in o.get("healthChecks", []))

    def check_backend_service_delete(self, bs: dict) -> None:
        self._in_use("backend service", bs["name"], lambda o: o.get("backendService") == bs["selfLink"])

    def check_health_check_delete(self, hc: dict) -> None:
        self._in_use("healthCheck", hc["name"], lambda o: hc["selfLink"] in o.get("healthChecks", []))


class ClusterLoadBalancers:
    """One cluster's: `created`/`deleted` are the controller stand-in's on_lb/on_lb_deleted hooks."""

    def __init__(self, lbs: LoadBalancers, cluster: dict) -> None:
        self.lbs, self.cluster = lbs, cluster["name"]
        self.region = str(cluster.get("location") or cluster.get("zone")).rsplit("-", 1)[0]
        self.network = str(cluster.get("network") or "default").rsplit("/", 1)[-1]
        self.subnetwork = str(cluster.get("subnetwork") or "").rsplit("/", 1)[-1]
        self.id = uuid.uuid4().hex[:16]  # GKE names the cluster's shared resources after its id
        self.node_tag = f"gke-{self.cluster}-{self.id[:8]}-node"
        self.health_check = f"k8s-{self.id}-node"

    def name_of(self, namespace: str, name: str) -> str:
        return "a" + hashlib.sha256(f"{self.id}/{namespace}/{name}".encode()).hexdigest()[:31]

    def created(self, namespace: str, name: str, ip: str, source_ranges: Sequence[str],
                ports: Sequence[tuple[str, int]], annotations: dict[str, str] | None = None) -> None:
        lb, desc = self.name_of(namespace, name), json.dumps({SERVICE_KEY: f"{namespace}/{name}"})
        internal = any(str((annotations or {}).get(k, "")).lower() == "internal" for k in INTERNAL)
        objs = self._internal(lb, desc, ip, ports) if internal else self._external(lb, desc, ip, ports)
        objs[f"global/firewalls/k8s-fw-{lb}"] = self._rule(
            f"k8s-fw-{lb}", source_ranges or ("0.0.0.0/0",), ports,
            json.dumps({SERVICE_KEY: f"{namespace}/{name}", "kubernetes.io/service-ip": ip}))
        shared = (f"global/httpHealthChecks/{self.health_check}", f"global/healthChecks/{self.health_check}")
        with self.lbs.c.w.lock:
            for key, body in objs.items():
                old = self.lbs.c.w.objects.get(key)
                if key in shared or key.endswith("-hc"):  # shared by the cluster's load balancers
                    body = old or body
                self.lbs.c.w.objects[key] = self._stamped(key, body, old)
        self.lbs.kinds.sync_firewall()
        log.info("lab GKE: %s load balancer %s for %s/%s at %s", "internal" if internal else "external", lb,
                 namespace, name, ip)

    def _external(self, lb: str, desc: str, ip: str, ports: Sequence[tuple[str, int]]) -> dict[str, dict]:
        region, hc = f"regions/{self.region}", f"global/httpHealthChecks/{self.health_check}"
        return {
            hc: {"name": self.health_check, "port": 10256, "requestPath": "/healthz",
                 "description": json.dumps({SERVICE_KEY: self.health_check})},
            f"global/firewalls/{self.health_check}-http-hc": self._rule(
                f"{self.health_check}-http-hc", HC_SOURCES, [("TCP", 10256)], desc),
            f"{region}/targetPools/{lb}": {"name": lb, "description": desc, "healthChecks": [self.lbs.link(hc)],
                                           "instances": [], "sessionAffinity": "NONE"},
            f"{region}/forwardingRules/{lb}": {
                "name": lb, "description": desc, "IPAddress": ip, "IPProtocol": "TCP",
                "portRange": f"{min(p for _, p in ports)}-{max(p for _, p in ports)}" if ports else "1-65535",
                "target": self.lbs.link(f"{region}/targetPools/{lb}"), "loadBalancingScheme": "EXTERNAL",
                "networkTier": "PREMIUM"},
        }

    def _internal(self, lb: str, desc: str, ip: str, ports: Sequence[tuple[str, int]]) -> dict[str, dict]:
        region, hc = f"regions/{self.region}", f"global/healthChecks/{self.health_check}"
        zone = f"{self.region}-a"
        return {
            hc: {"name": self.health_check, "type": "HTTP", "httpHealthCheck": {"port": 10256, "requestPath": "/healthz"},
                 "description": json.dumps({SERVICE_KEY: self.health_check})},
            f"global/firewalls/{self.health_check}-hc": {
                **self._rule(f"{self.health_check}-hc", ILB_HC_SOURCES, [("TCP", 10256)], ""), "description": ""},
            f"{region}/backendServices/{lb}": {
                "name": lb, "description": desc, "healthChecks": [self.lbs.link(hc)], "loadBalancingScheme": "INTERNAL",
                "protocol": "TCP", "backends": [{"group": self.lbs.link(f"zones/{zone}/instanceGroups/k8s-ig--{self.id}")}]},
            f"{region}/forwardingRules/{lb}": {
                "name": lb, "description": desc, "IPAddress": ip, "IPProtocol": "TCP",
                "ports": [str(p) for _, p in ports][:5], "loadBalancingScheme": "INTERNAL",
                "backendService": self.lbs.link(f"{region}/backendServices/{lb}"),
                "network": self.lbs.link(f"global/networks/{self.network}"),
                "subnetwork": self.lbs.link(f"{region}/subnetworks/{self.subnetwork}")},
        }

    def deleted(self, namespace: str, name: str) -> None:
        lb, region = self.name_of(namespace, name), f"regions/{self.region}"
        w = self.lbs.c.w
        with w.lock:
            for key in (f"{region}/forwardingRules/{lb}", f"{region}/targetPools/{lb}",
                        f"{region}/backendServices/{lb}", f"global/firewalls/k8s-fw-{lb}"):
                w.objects.pop(key, None)
            for coll, rule in (("httpHealthChecks", "-http-hc"), ("healthChecks", "-hc")):
                link = self.lbs.link(f"global/{coll}/{self.health_check}")
                if not any(link in o.get("healthChecks", []) for o in w.objects.values()):  # the last one
                    w.objects.pop(f"global/{coll}/{self.health_check}", None)
                    w.objects.pop(f"global/firewalls/{self.health_check}{rule}", None)
        self.lbs.kinds.sync_firewall()
        log.info("lab GKE: load balancer %s of %s/%s deleted", lb, namespace, name)

    def _rule(self, name: str, sources: Sequence[str], ports: Sequence[tuple[str, int]], desc: str) -> dict:
        by_proto: dict[str, list[str]] = {}
        for proto, port in ports:
            by_proto.setdefault(proto.lower(), []).append(str(port))
        return {"name": name, "description": desc, "network": self.lbs.link(f"global/networks/{self.network}"),
                "direction": "INGRESS", "priority": 1000, "sourceRanges": list(sources),
                "targetTags": [self.node_tag],
                "allowed": [{"IPProtocol": p, "ports": v} for p, v in by_proto.items()] or [{"IPProtocol": "tcp"}]}

    def _stamped(self, key: str, body: dict, old: dict | None) -> dict:
        obj = {**body, "id": (old or {}).get("id") or str(uuid.uuid4().int % 10**18),
               "selfLink": self.lbs.link(key), "creationTimestamp": "2026-01-01T00:00:00.000-07:00"}
        if key.startswith("regions/"):
            obj["region"] = self.lbs.link(f"regions/{self.region}")
        return obj
