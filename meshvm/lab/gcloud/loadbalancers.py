"""GKE's service controller, its Compute side (lab STAND-IN): what a cluster's LoadBalancer Service
makes appear in the project (docs/facts.md section 3), shaped as GKE's target-pool external load balancer:

- forwarding rule `a<hex>` (regional; IPAddress = the Service's address; description
  `{"kubernetes.io/service-name":"<ns>/<name>"}`) -> target pool `a<hex>` -> the cluster's shared
  node health check `k8s-<cluster id>-node` (legacy httpHealthChecks);
- firewall rule `k8s-fw-a<hex>`: the Service's ports to the nodes' tag `gke-<cluster>-<id>-node`, from
  its `loadBalancerSourceRanges` (0.0.0.0/0 if none); and `k8s-<cluster id>-node-http-hc` from
  Google's health checkers. Both reach the lab router like any other rule.

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
SERVICE_KEY = "kubernetes.io/service-name"


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


class ClusterLoadBalancers:
    """One cluster's: `created`/`deleted` are the controller stand-in's on_lb/on_lb_deleted hooks."""

    def __init__(self, lbs: LoadBalancers, cluster: dict) -> None:
        self.lbs, self.cluster = lbs, cluster["name"]
        self.region = str(cluster.get("location") or cluster.get("zone")).rsplit("-", 1)[0]
        self.network = str(cluster.get("network") or "default").rsplit("/", 1)[-1]
        self.id = uuid.uuid4().hex[:16]  # GKE names the cluster's shared resources after its id
        self.node_tag = f"gke-{self.cluster}-{self.id[:8]}-node"
        self.health_check = f"k8s-{self.id}-node"

    def name_of(self, namespace: str, name: str) -> str:
        return "a" + hashlib.sha256(f"{self.id}/{namespace}/{name}".encode()).hexdigest()[:31]

    def created(self, namespace: str, name: str, ip: str, source_ranges: Sequence[str],
                ports: Sequence[tuple[str, int]]) -> None:
        lb, desc = self.name_of(namespace, name), json.dumps({SERVICE_KEY: f"{namespace}/{name}"})
        region, hc = f"regions/{self.region}", f"global/httpHealthChecks/{self.health_check}"
        objs = {
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
            f"global/firewalls/k8s-fw-{lb}": self._rule(
                f"k8s-fw-{lb}", source_ranges or ("0.0.0.0/0",), ports,
                json.dumps({SERVICE_KEY: f"{namespace}/{name}", "kubernetes.io/service-ip": ip})),
        }
        with self.lbs.c.w.lock:
            for key, body in objs.items():
                old = self.lbs.c.w.objects.get(key)
                if key == hc or key.endswith("-http-hc"):  # shared by the cluster's load balancers
                    body = old or body
                self.lbs.c.w.objects[key] = self._stamped(key, body, old)
        self.lbs.kinds.sync_firewall()
        log.info("lab GKE: load balancer %s for %s/%s at %s", lb, namespace, name, ip)

    def deleted(self, namespace: str, name: str) -> None:
        lb, region = self.name_of(namespace, name), f"regions/{self.region}"
        w = self.lbs.c.w
        with w.lock:
            for key in (f"{region}/forwardingRules/{lb}", f"{region}/targetPools/{lb}", f"global/firewalls/k8s-fw-{lb}"):
                w.objects.pop(key, None)
            link = self.lbs.link(f"global/httpHealthChecks/{self.health_check}")
            if not any(link in o.get("healthChecks", []) for o in w.objects.values()):  # the last one
                w.objects.pop(f"global/httpHealthChecks/{self.health_check}", None)
                w.objects.pop(f"global/firewalls/{self.health_check}-http-hc", None)
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
