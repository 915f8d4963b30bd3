"""What a GKE LoadBalancer Service makes in Compute Engine (docs/facts.md section 3), and releasing it.

GKE's service controller creates, per LoadBalancer Service, a forwarding rule named after the
Service (`a<hex>`, IPAddress = the Service's address, description
`{"kubernetes.io/service-name":"<ns>/<name>"}`), its target pool (or backend service), their health
checks, `k8s-fw-a<hex>` / `k8s-...-http-hc` firewall rules and sometimes an address reservation.
None of them carries the run's labels, and deleting the cluster deletes none of them. So:

- `record` finds them from the Service's address the moment it has one, and records each in the
  run ledger (dependencies first: teardown walks the ledger in reverse);
- `release` deletes the cluster's LoadBalancer Services and waits until they are gone: their
  finalizer (`service.kubernetes.io/load-balancer-cleanup`) clears only after GKE deleted all of it.

Teardown contract (the e2e teardown):

    cloud.release_load_balancers(kube, deadline)  # 1. while the cluster still exists
    cloud.teardown(report)                        # 2. cluster, then whatever GKE left, from the ledger

Step 1 must come BEFORE the cluster is deleted: afterwards nothing deletes the Services' resources
but the ledger (or the janitor). If step 1 runs out of time, step 2 still deletes everything
recorded here (NotFound = done).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.auth.transport.requests import AuthorizedSession
from google.cloud import compute_v1

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.gcp import errors, meta
from meshvm.gcp.clients import Clients, not_found
from meshvm.gcp.operations import delete_and_wait
from meshvm.kube_errors import KubeError
from meshvm.ledger import Entry, Ledger
from meshvm.seams import Kube

log = logging.getLogger(__name__)
SERVICE_KEYS = ("kubernetes.io/service-name", "networking.gke.io/service-name")  # before and from GKE 1.36
# kind -> (regional client, global client, request field). `where` is "project/region" or "project".
KINDS: dict[str, tuple[type | None, type | None, str]] = {
    "forwarding-rule": (compute_v1.ForwardingRulesClient, compute_v1.GlobalForwardingRulesClient, "forwarding_rule"),
    "target-pool": (compute_v1.TargetPoolsClient, None, "target_pool"),
    "backend-service": (compute_v1.RegionBackendServicesClient, compute_v1.BackendServicesClient, "backend_service"),
    "health-check": (compute_v1.RegionHealthChecksClient, compute_v1.HealthChecksClient, "health_check"),
    "http-health-check": (None, None, "http_health_check"),  # legacy API: see _legacy_hc
    "address": (compute_v1.AddressesClient, compute_v1.GlobalAddressesClient, "address"),
    # zonal (`where` is "project/zone"): an internal backend service's backends, before and from GKE 1.36
    "instance-group": (compute_v1.InstanceGroupsClient, None, "instance_group"),
    "network-endpoint-group": (compute_v1.NetworkEndpointGroupsClient, None, "network_endpoint_group"),
}
ZONAL = frozenset({"instance-group", "network-endpoint-group"})


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    address: str
    cluster: str
    network: str  # the run's network: internal addresses are unique per network only
    own_network: bool = True  # created for the run (no other cluster in it), not a given --network

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def service_of(description: str | None) -> str:
    """The `<ns>/<name>` GKE writes into a resource's JSON description ("" for anything else), under
    either key GKE has used (docs/facts.md section 6)."""
    value = _description(description)
    return next((str(value[k]) for k in SERVICE_KEYS if value.get(k)), "")


# ---- finding and recording -------------------------------------------------------------------------
def find(c: Clients, region: str, svc: Service, deadline: Deadline) -> list[Entry]:
    """The Service's Compute resources, in creation order (what others use first)."""
    firewalls = list(c.call("listing firewall rules", c.firewalls.list, deadline, project=c.project))
    frs = [fr for fr in c.call("listing forwarding rules", c.compute(compute_v1.ForwardingRulesClient).list,
                               deadline, project=c.project, region=region) if _ours(fr, svc, firewalls)]
    extra = {"service": svc.key, "cluster": svc.cluster}
    first = [e for fr in frs for e in resources_of(c, fr, extra, deadline)]
    names = {n for fr in frs for n in rule_names(fr)} | {
        f"{e.name}{suffix}" for e in first for suffix in ("-http-hc", "-hc", "-fw")  # the health checks' own
        if e.kind.endswith("health-check") and e.name.startswith("k8s")}
    rules = [Entry("firewall", f.name, c.project, extra=extra) for f in firewalls
             if f.name in names or (service_of(f.description) == svc.key and _targets(f, svc.cluster))]
    return list({e.key: e for e in first + rules}.values())  # a shared health check once


def resources_of(c: Clients, fr: compute_v1.ForwardingRule, extra: dict[str, str],
                 deadline: Deadline) -> list[Entry]:
    """One forwarding rule and what hangs off it: address reservation, health checks, pool/backend."""
    where = f"{c.project}/{meta.location_of(fr.region, 'regions')}"
    out = []
    if _get(c, "address", Entry("address", fr.name, where), deadline) is not None:  # GKE's own reservation
        out.append(Entry("address", fr.name, where, extra=extra))
    for kind, link in (("target-pool", fr.target), ("backend-service", fr.backend_service)):
        if f"/{_COLLECTION[kind]}/" in (link or ""):
            backend = Entry(kind, link.rsplit("/", 1)[-1], _where_of(c, link), extra=extra)
            found = _get(c, kind, backend, deadline)
            out += [_health_check(c, hc, extra) for hc in (getattr(found, "health_checks", None) or [])]
            out += [_group(c, b.group, extra) for b in (getattr(found, "backends", None) or []) if _group_kind(b.group)]
            out.append(backend)
    return [*out, Entry("forwarding-rule", fr.name, where, extra=extra)]


def record(c: Clients, ledger: Ledger, region: str, svc: Service, deadline: Deadline) -> list[Entry]:
    """Find the Service's resources and record each in the ledger (teardown deletes them, reversed)."""
    found = find(c, region, svc, deadline)
    for e in found:
        ledger.record(e.kind, e.name, e.where, **e.extra)
    if not any(e.kind == "forwarding-rule" for e in found):
        log.warning("load balancer of Service %s (%s): no forwarding rule found in %s", svc.key, svc.address, region)
    return found


def _ours(fr: compute_v1.ForwardingRule, svc: Service, firewalls: list[compute_v1.Firewall]) -> bool:
    """Never by address: two runs' networks may hold the same internal address. Ours when the rule
    names the Service, lies in the run's network (an external one has no network: its firewall rule's
    does), and belongs to the run's cluster: an internal one in a network made for the run (whatever
    GKE names it: `a<hex>`, or `k8s2-` from 1.36), else its firewall rule (`k8s-fw-<rule>`, or from
    1.36 named as its backend service), in the run's network, targets the run's cluster's nodes."""
    if service_of(fr.description) != svc.key or (fr.network and _last(fr.network) != svc.network):
        return False
    if fr.network and svc.own_network:
        return True
    # Every cluster of the project has an istio-system/istio-ingressgateway: only this cluster's counts.
    names = rule_names(fr)
    return any(f.name in names and _last(f.network) == svc.network and _targets(f, svc.cluster) for f in firewalls)


def rule_names(fr: compute_v1.ForwardingRule) -> set[str]:
    """The firewall rules GKE names after a forwarding rule: `k8s-fw-<rule>` and `k8s-<rule>-http-hc`
    (target pools, internal before 1.36); from 1.36 the rule is named as the backend service."""
    names = {f"k8s-fw-{fr.name}", f"k8s-{fr.name}-http-hc"}
    return names | ({_last(fr.backend_service)} if fr.backend_service and fr.name.startswith(("k8s2-", "k8s3-")) else set())


def _last(link: str) -> str:
    return link.rsplit("/", 1)[-1]


_NODE_TAG = re.compile(r"gke-(?P<cluster>[a-z](?:[-a-z0-9]*[a-z0-9])?)-[0-9a-f]{8}-node")


def node_tag_of(tag: str) -> str:
    """The cluster whose node tag this is, exactly `gke-<cluster>-<8 hex>-node`; "" for any other tag."""
    m = _NODE_TAG.fullmatch(tag)
    return m["cluster"] if m else ""


def _targets(fw: compute_v1.Firewall, cluster: str) -> bool:
    """GKE's LB firewall rules target the cluster's node tag (never that of another cluster whose
    name merely starts alike, such as `<cluster>-2`)."""
    return any(node_tag_of(t) == cluster for t in fw.target_tags)


_COLLECTION = {"target-pool": "targetPools", "backend-service": "backendServices"}


def _where_of(c: Clients, link: str) -> str:
    return f"{c.project}/{meta.location_of(link, 'regions')}" if "/regions/" in link else c.project


def _group_kind(link: str) -> str:
    return "network-endpoint-group" if "/networkEndpointGroups/" in link else \
        "instance-group" if "/instanceGroups/" in link else ""


def _group(c: Clients, link: str, extra: dict[str, str]) -> Entry:
    """A backend's instance group (`k8s-ig--<cluster uid>`) or GCE_VM_IP NEG (`k8s2-...`), in its zone."""
    return Entry(_group_kind(link), _last(link), f"{c.project}/{meta.location_of(link, 'zones')}", extra=extra)


def _health_check(c: Clients, link: str, extra: dict[str, str]) -> Entry:
    kind = "http-health-check" if "/httpHealthChecks/" in link else "health-check"
    return Entry(kind, link.rsplit("/", 1)[-1], _where_of(c, link), extra=extra)


# ---- deleting and checking (teardown and janitor) ---------------------------------------------------
def _api(c: Clients, entry: Entry, verb: str) -> tuple[Callable[..., Any], dict[str, str]]:
    regional, global_, field = KINDS[entry.kind]
    parts = entry.where.split("/")
    kw = {field: entry.name, **({"zone" if entry.kind in ZONAL else "region": parts[1]} if len(parts) > 1 else {})}
    if entry.kind == "http-health-check":
        return _legacy_hc(c, verb), kw
    cls = regional if len(parts) > 1 else global_
    if cls is None:
        raise ValueError(f"{entry.kind} {entry.name}: no such resource at {entry.where}")
    return getattr(c.compute(cls), "delete" if verb == "DELETE" else "get"), kw


def delete(c: Clients, entry: Entry, deadline: Deadline) -> None:
    """Delete and wait; NotFound (before or during) is done."""
    fn, kw = _api(c, entry, "DELETE")
    delete_and_wait(c, f"deleting {entry.kind} {entry.name}", fn, deadline, **kw)


def exists(c: Clients, entry: Entry, deadline: Deadline) -> bool:
    return _get(c, entry.kind, entry, deadline) is not None


def _get(c: Clients, kind: str, entry: Entry, deadline: Deadline) -> Any:
    if kind == "firewall":
        fn, kw = c.firewalls.get, {"firewall": entry.name}
    else:
        fn, kw = _api(c, Entry(kind, entry.name, entry.where), "GET")
    try:
        return c.call(f"reading {kind} {entry.name}", fn, deadline, project=c.project, **kw)
    except errors.CloudError as e:
        if not_found(e):
            return None
        raise


def _legacy_hc(c: Clients, verb: str) -> Callable[..., Any]:
    """Target pools use the legacy httpHealthChecks API, which google-cloud-compute does not cover."""
    def call(*, project: str, http_health_check: str, timeout: float, retry: object = None) -> Any:
        base = (c.cfg.compute_endpoint or "https://compute.googleapis.com").rstrip("/")
        url = f"{base}/compute/v1/projects/{project}/global/httpHealthChecks/{http_health_check}"
        r = AuthorizedSession(c.creds).request(verb, url, timeout=timeout)
        if r.status_code >= 400:
            raise gexc.from_http_response(r)
        return compute_v1.Operation.from_json(r.text, ignore_unknown_fields=True) if verb == "DELETE" else r.json()
    return call


# ---- GKE's network endpoint groups (from 1.36) -----------------------------------------------------
def cluster_uid(kube: Kube) -> str:
    """The cluster's kube-system namespace UID, which GKE's NEG controller writes into each NEG's
    description (`cluster-uid`); "" when the cluster does not answer."""
    try:
        return str(((kube.get("v1", "Namespace", "kube-system") or {}).get("metadata") or {}).get("uid") or "")
    except (retry.WaitFailed, KubeError) as e:
        log.warning("reading the cluster's kube-system UID: %s; not waiting for its NEGs", e)
        return ""


def negs_of(c: Clients, uid: str, deadline: Deadline) -> list[Entry]:
    """The NEGs GKE's NEG controller made for the cluster whose kube-system UID is `uid`: exactly those
    whose description names it (docs/facts.md section 6), in any zone."""
    request = compute_v1.AggregatedListNetworkEndpointGroupsRequest(project=c.project)
    pager = c.call("listing network endpoint groups", c.compute(compute_v1.NetworkEndpointGroupsClient).aggregated_list,
                   deadline, request=request)
    return [Entry("network-endpoint-group", neg.name, f"{c.project}/{meta.location_of(neg.zone, 'zones')}")
            for _, scoped in pager for neg in (scoped.network_endpoint_groups or [])
            if uid and _description(neg.description).get("cluster-uid") == uid]


def wait_negs_gone(c: Clients, uid: str, deadline: Deadline) -> bool:
    """After the Services went: wait until GKE's NEG controller deleted the cluster's NEGs (it does so on
    its own period, after the Service's finalizer cleared). A cluster deleted sooner leaves them, and
    a leftover NEG blocks deleting the subnetwork and the network. True when none is left in time."""
    try:
        left = retry.until("GKE to delete the cluster's network endpoint groups", lambda: negs_of(c, uid, deadline),
                           deadline, accept=lambda negs: not negs, initial=1.0, ceiling=10.0)
    except (retry.WaitFailed, errors.CloudError) as e:
        log.error("waiting for the cluster's NEGs: %s; teardown deletes what the ledger recorded", e)
        return False
    return not left


def _description(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ---- releasing the Services ------------------------------------------------------------------------
def release(kube: Kube, deadline: Deadline) -> bool:
    """Delete every LoadBalancer Service of the cluster and wait until each is gone (its finalizer
    clears once GKE deleted its load balancer). True if all went in time; never raises for a
    Service that stays or a cluster that does not answer (teardown goes on; the ledger has the rest)."""
    try:
        services = [(s["metadata"]["namespace"], s["metadata"]["name"]) for s in kube.list("v1", "Service")
                    if (s.get("spec") or {}).get("type") == "LoadBalancer"]
        for ns, name in services:  # all deletes first: GKE tears the load balancers down in parallel
            kube.delete("v1", "Service", name, ns)
        for ns, name in services:
            kube.delete("v1", "Service", name, ns, deadline=deadline)
    except (retry.WaitFailed, KubeError) as e:
        log.error("releasing the load balancers: %s; teardown deletes what the ledger recorded", e)
        return False
    log.info("released the load balancers of %s", [f"{ns}/{n}" for ns, n in services] or "no Service")
    return True
