"""GKE's service controller, its Compute side (lab STAND-IN): what a cluster's LoadBalancer Service
makes appear in the project (docs/facts.md section 3), shaped as GKE's target-pool external load balancer:

- forwarding rule `a<hex>` (regional; IPAddress = the Service's address; description
  `{"kubernetes.io/service-name":"<ns>/<name>"}`) -> target pool `a<hex>` -> the cluster's shared
  node health check `k8s-<cluster id>-node` (legacy httpHealthChecks);
- firewall rule `k8s-fw-a<hex>`: the Service's ports to the nodes' tag `gke-<cluster>-<id>-node`, from
  its `loadBalancerSourceRanges` (0.0.0.0/0 if none); and `k8s-<cluster id>-node-http-hc` from
  Google's health checkers. Both reach the lab router like any other rule.

A Service annotated `networking.gke.io/load-balancer-type: Internal` gets GKE's internal passthrough
load balancer instead, in the style of the cluster's version (docs/facts.md section 6):
- before 1.36: forwarding rule `a<hex>` (INTERNAL, in the cluster's network and subnetwork; the
  address comes from the subnetwork, so runs with the same subnet range in other networks may hold the
  same one) -> regional backend service `a<hex>` (backends: the zonal instance group
  `k8s-ig--<cluster id>`, made with the first internal LB, gone with the last) -> the shared health
  check `k8s-<cluster id>-node` (healthChecks), firewall rules `k8s-fw-a<hex>` and
  `k8s-<cluster id>-node-hc` (empty description);
- from 1.36 (GCE_VM_IP NEGs, `k8s2-` names, the key `networking.gke.io/service-name`): forwarding
  rule `k8s2-tcp-<uid8>-<ns>-<name>-<hash8>` -> backend service `k8s2-<uid8>-<ns>-<name>-<hash8>`
  (backend: the zonal NEG of the same name, GCE_VM_IP, in the network) -> the shared health check
  `k8s2-<uid8>-l4-shared-hc`; firewall rules `k8s2-<uid8>-<ns>-<name>-<hash8>` and
  `k8s2-<uid8>-l4-shared-hc-fw`. The L4 controller deletes all but the NEG before the Service's
  finalizer clears; GKE's NEG controller deletes the NEG `neg_gc_s` later, if the cluster still runs:
  a cluster deleted sooner leaves it, and it blocks deleting its subnetwork and network (400).
A backend service, health check, instance group or NEG still in use answers 400
resourceInUseByAnotherResource on delete.

They go when the Service goes while the cluster runs (the controller stand-in calls `deleted`
before it clears the Service's finalizer); deleting the cluster leaves them, as on GKE. GKE derives
`a<hex>` from the Service's UID; this stand-in from the cluster and the Service's name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import uuid
from collections.abc import Sequence

from meshvm.lab.gcloud.compute import Compute
from meshvm.lab.gcloud.faults import ApiError
from meshvm.lab.gcloud.resources import Kinds

log = logging.getLogger(__name__)
HC_SOURCES = ("35.191.0.0/16", "209.85.152.0/22", "209.85.204.0/22")  # legacy health checkers
ILB_HC_SOURCES = ("35.191.0.0/16", "130.211.0.0/22")  # health checkers of internal load balancers
SERVICE_KEY = "kubernetes.io/service-name"
NEG_SERVICE_KEY = "networking.gke.io/service-name"  # the L4 controller's key from 1.36
SHARED_KEY, SHARED = "networking.gke.io/resource-description", \
    "This resource is shared by all L4 ILB Services using ExternalTrafficPolicy: Cluster."
NEG_FROM = (1, 36)  # the first GKE minor whose internal load balancers use GCE_VM_IP NEGs
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

    def check_group_delete(self, group: dict) -> None:
        """An instance group or NEG that a backend service still uses."""
        self._in_use("group", group["name"], lambda o: any(
            b.get("group") == group["selfLink"] for b in o.get("backends", [])))


class ClusterLoadBalancers:
    """One cluster's: `created`/`deleted` are the controller stand-in's on_lb/on_lb_deleted hooks."""

    def __init__(self, lbs: LoadBalancers, cluster: dict, neg_gc_s: float = 1.5) -> None:
        self.lbs, self.cluster = lbs, cluster["name"]
        self.zone = str(cluster.get("location") or cluster.get("zone"))
        self.region = self.zone.rsplit("-", 1)[0]
        self.network = str(cluster.get("network") or "default").rsplit("/", 1)[-1]
        self.subnetwork = str(cluster.get("subnetwork") or "").rsplit("/", 1)[-1]
        self.id = uuid.uuid4().hex[:16]  # GKE names the cluster's shared resources after its id
        self.node_tag = f"gke-{self.cluster}-{self.id[:8]}-node"
        self.health_check = f"k8s-{self.id}-node"
        m = re.match(r"(\d+)\.(\d+)", str(cluster.get("currentMasterVersion") or ""))
        self.negs = m is not None and (int(m[1]), int(m[2])) >= NEG_FROM
        self.neg_gc_s = neg_gc_s
        self.cluster_uid = ""  # the cluster's kube-system UID, once its API runs: NEG descriptions carry it
        self.running = threading.Event()  # cleared when the cluster is deleted: its NEG controller stops
        self.running.set()

    def name_of(self, namespace: str, name: str) -> str:
        return "a" + hashlib.sha256(f"{self.id}/{namespace}/{name}".encode()).hexdigest()[:31]

    def neg_name_of(self, namespace: str, name: str) -> str:
        """`k8s2-<uid8>-<ns>-<name>-<hash8>`: the backend service, NEG and firewall rule of an internal
        load balancer from 1.36 (GKE truncates namespace and name to fit 63 characters)."""
        digest = hashlib.sha256(f"{self.id}/{namespace}/{name}".encode()).hexdigest()[:8]
        return f"k8s2-{self.id[:8]}-{namespace[:20]}-{name[:20]}-{digest}"

    def _objects_of(self, namespace: str, name: str) -> list[str]:
        """The keys of what the Service's load balancer holds alone (not the cluster's shared pieces)."""
        lb, region, neg = self.name_of(namespace, name), f"regions/{self.region}", self.neg_name_of(namespace, name)
        return [f"{region}/forwardingRules/{lb}", f"{region}/targetPools/{lb}", f"{region}/backendServices/{lb}",
                f"global/firewalls/k8s-fw-{lb}", f"{region}/forwardingRules/k8s2-tcp-{neg.removeprefix('k8s2-')}",
                f"{region}/backendServices/{neg}", f"global/firewalls/{neg}"]

    def created(self, namespace: str, name: str, ip: str, source_ranges: Sequence[str],
                ports: Sequence[tuple[str, int]], annotations: dict[str, str] | None = None) -> None:
        internal = any(str((annotations or {}).get(k, "")).lower() == "internal" for k in INTERNAL)
        style = (self._internal_neg if self.negs else self._internal) if internal else self._external
        objs, shared = style(namespace, name, ip, ports, source_ranges or ("0.0.0.0/0",))
        with self.lbs.c.w.lock:
            for key, body in objs.items():
                old = self.lbs.c.w.objects.get(key)
                self.lbs.c.w.objects[key] = self._stamped(key, (old or body) if key in shared else body, old)
        self.lbs.kinds.sync_firewall()
        log.info("lab GKE: %s load balancer for %s/%s at %s",
                 style.__name__.strip("_").replace("_", " "), namespace, name, ip)

    def _service_rule(self, name: str, key: str, desc_key: str, ip: str, sources: Sequence[str],
                      ports: Sequence[tuple[str, int]]) -> dict:
        return self._rule(name, sources, ports, json.dumps({desc_key: key, "kubernetes.io/service-ip": ip}))

    def _external(self, ns: str, name: str, ip: str, ports: Sequence[tuple[str, int]],
                  sources: Sequence[str]) -> tuple[dict[str, dict], set[str]]:
        lb, desc = self.name_of(ns, name), json.dumps({SERVICE_KEY: f"{ns}/{name}"})
        region, hc = f"regions/{self.region}", f"global/httpHealthChecks/{self.health_check}"
        hc_rule = f"global/firewalls/{self.health_check}-http-hc"
        return {
            hc: {"name": self.health_check, "port": 10256, "requestPath": "/healthz",
                 "description": json.dumps({SERVICE_KEY: self.health_check})},
            hc_rule: self._rule(f"{self.health_check}-http-hc", HC_SOURCES, [("TCP", 10256)], desc),
            f"{region}/targetPools/{lb}": {"name": lb, "description": desc, "healthChecks": [self.lbs.link(hc)],
                                           "instances": [], "sessionAffinity": "NONE"},
            f"{region}/forwardingRules/{lb}": {
                "name": lb, "description": desc, "IPAddress": ip, "IPProtocol": "TCP",
                "portRange": f"{min(p for _, p in ports)}-{max(p for _, p in ports)}" if ports else "1-65535",
                "target": self.lbs.link(f"{region}/targetPools/{lb}"), "loadBalancingScheme": "EXTERNAL",
                "networkTier": "PREMIUM"},
            f"global/firewalls/k8s-fw-{lb}": self._service_rule(f"k8s-fw-{lb}", f"{ns}/{name}", SERVICE_KEY, ip,
                                                                sources, ports),
        }, {hc, hc_rule}

    def _internal(self, ns: str, name: str, ip: str, ports: Sequence[tuple[str, int]],
                  sources: Sequence[str]) -> tuple[dict[str, dict], set[str]]:
        lb, desc = self.name_of(ns, name), json.dumps({SERVICE_KEY: f"{ns}/{name}"})
        region, hc = f"regions/{self.region}", f"global/healthChecks/{self.health_check}"
        group, hc_rule = f"zones/{self.zone}/instanceGroups/k8s-ig--{self.id}", f"global/firewalls/{self.health_check}-hc"
        return {
            hc: {"name": self.health_check, "type": "HTTP", "httpHealthCheck": {"port": 10256, "requestPath": "/healthz"},
                 "description": json.dumps({SERVICE_KEY: self.health_check})},
            hc_rule: {**self._rule(f"{self.health_check}-hc", ILB_HC_SOURCES, [("TCP", 10256)], ""), "description": ""},
            group: {"name": f"k8s-ig--{self.id}", "description": "", "network": self._net(), "size": 1,
                    "subnetwork": self.lbs.link(f"{region}/subnetworks/{self.subnetwork}")},
            **self._backend_and_rule(lb, lb, desc, ip, ports, hc, group),
            f"global/firewalls/k8s-fw-{lb}": self._service_rule(f"k8s-fw-{lb}", f"{ns}/{name}", SERVICE_KEY, ip,
                                                                sources, ports),
        }, {hc, hc_rule, group}

    def _internal_neg(self, ns: str, name: str, ip: str, ports: Sequence[tuple[str, int]],
                      sources: Sequence[str]) -> tuple[dict[str, dict], set[str]]:
        neg, desc = self.neg_name_of(ns, name), json.dumps({NEG_SERVICE_KEY: f"{ns}/{name}"})
        hc_name, shared = f"k8s2-{self.id[:8]}-l4-shared-hc", json.dumps({NEG_SERVICE_KEY: "", SHARED_KEY: SHARED})
        hc, hc_rule, group = f"global/healthChecks/{hc_name}", f"global/firewalls/{hc_name}-fw", \
            f"zones/{self.zone}/networkEndpointGroups/{neg}"
        return {
            hc: {"name": hc_name, "type": "HTTP", "httpHealthCheck": {"port": 10256, "requestPath": "/healthz"},
                 "description": shared},
            hc_rule: self._rule(f"{hc_name}-fw", ILB_HC_SOURCES, [("TCP", 10256)], shared),
            group: {"name": neg, "networkEndpointType": "GCE_VM_IP", "network": self._net(), "description": json.dumps(
                {"cluster-uid": self.cluster_uid, "namespace": ns, "service-name": name, "port": "0"}),
                    "subnetwork": self.lbs.link(f"regions/{self.region}/subnetworks/{self.subnetwork}"), "size": 1},
            **self._backend_and_rule(f"k8s2-tcp-{neg.removeprefix('k8s2-')}", neg, desc, ip, ports, hc, group),
            f"global/firewalls/{neg}": self._service_rule(neg, f"{ns}/{name}", NEG_SERVICE_KEY, ip, sources, ports),
        }, {hc, hc_rule}

    def _backend_and_rule(self, rule: str, backend: str, desc: str, ip: str, ports: Sequence[tuple[str, int]],
                          hc: str, group: str) -> dict[str, dict]:
        region = f"regions/{self.region}"
        return {
            f"{region}/backendServices/{backend}": {
                "name": backend, "description": desc, "healthChecks": [self.lbs.link(hc)], "protocol": "TCP",
                "loadBalancingScheme": "INTERNAL", "backends": [{"group": self.lbs.link(group)}]},
            f"{region}/forwardingRules/{rule}": {
                "name": rule, "description": desc, "IPAddress": ip, "IPProtocol": "TCP",
                "ports": [str(p) for _, p in ports][:5], "loadBalancingScheme": "INTERNAL",
                "backendService": self.lbs.link(f"{region}/backendServices/{backend}"), "network": self._net(),
                "subnetwork": self.lbs.link(f"{region}/subnetworks/{self.subnetwork}")},
        }

    def _net(self) -> str:
        return self.lbs.link(f"global/networks/{self.network}")

    def deleted(self, namespace: str, name: str) -> None:
        w = self.lbs.c.w
        with w.lock:
            for key in self._objects_of(namespace, name):
                w.objects.pop(key, None)
            self._release_shared()
        self.lbs.kinds.sync_firewall()
        neg = f"zones/{self.zone}/networkEndpointGroups/{self.neg_name_of(namespace, name)}"
        if self.negs:  # GKE's NEG controller collects it later, if it still runs then
            timer = threading.Timer(self.neg_gc_s, self._collect, (neg,))
            timer.daemon = True
            timer.start()
        log.info("lab GKE: load balancer of %s/%s deleted", namespace, name)

    def _release_shared(self) -> None:
        """The cluster's shared health checks (with their firewall rules) and instance group go with
        the last load balancer that uses them."""
        objects, shared = self.lbs.c.w.objects, f"k8s2-{self.id[:8]}-l4-shared-hc"
        for coll, hc, rule in (("httpHealthChecks", self.health_check, f"{self.health_check}-http-hc"),
                               ("healthChecks", self.health_check, f"{self.health_check}-hc"),
                               ("healthChecks", shared, f"{shared}-fw")):
            link = self.lbs.link(f"global/{coll}/{hc}")
            if not any(link in o.get("healthChecks", []) for o in objects.values()):
                objects.pop(f"global/{coll}/{hc}", None)
                objects.pop(f"global/firewalls/{rule}", None)
        group = f"zones/{self.zone}/instanceGroups/k8s-ig--{self.id}"
        if not any(b.get("group") == self.lbs.link(group) for o in objects.values() for b in o.get("backends", [])):
            objects.pop(group, None)

    def _collect(self, key: str) -> None:
        if not self.running.is_set():
            log.warning("lab GKE: cluster %s was deleted before its NEG controller removed %s: left behind",
                        self.cluster, key.rsplit("/", 1)[-1])
            return
        with self.lbs.c.w.lock:
            self.lbs.c.w.objects.pop(key, None)

    def stopped(self) -> None:
        """The cluster is deleted: its controllers no longer remove anything."""
        self.running.clear()

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
        elif key.startswith("zones/"):
            obj["zone"] = self.lbs.link(f"zones/{self.zone}")
        return obj
