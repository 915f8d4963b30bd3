"""Finding and deleting the suite's resources by label: the teardown's final check (one run, any
expiry) and the janitor (runs whose `e2e-expires` has passed; never an unexpired run).

Load-balancer leftovers carry no labels (docs/facts.md section 3): `k8s-*` firewall rules are matched to a
run through its cluster (node tag exactly `gke-<cluster>-<hash>-node`; a deleted cluster's name is
derived from the run id) or its network; forwarding rules through those rules' names (`k8s-fw-<rule>`)
or their network; pools, backend services, health checks and addresses through the forwarding rules
(meshvm.gcp.loadbalancers). Never by a prefix or a substring of a name: run ids may prefix each other
(`dev`, `dev-2`) and a project holds load balancers that are not the suite's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from google.cloud import compute_v1

from meshvm.deadlines import Deadline
from meshvm.gcp import cluster, firewall, instance, loadbalancers, meta, network
from meshvm.gcp.clients import Clients
from meshvm.ledger import Entry
from meshvm.naming import PREFIX, SUITE, Names

log = logging.getLogger(__name__)
GKE_PREFIXES = ("k8s-", "k8s2-", "k8s3-")  # what GKE names its load balancers' pieces (k8s2- from 1.36)
# Dependents first. The cluster goes before its load balancers: once it is gone nothing recreates them.
ORDER = ("instance", "cluster", "forwarding-rule", "target-pool", "backend-service", "network-endpoint-group",
         "instance-group", "http-health-check", "health-check", "address", "firewall", "subnetwork", "network")


def now_label() -> str:
    return f"{datetime.now(UTC):%Y%m%dt%H%M}z"


def _ours(labels: Mapping[str, str], run_id: str | None) -> bool:
    return labels.get("e2e-suite") == SUITE and (not run_id or labels.get("e2e-run") == run_id)


def live_runs(labels: Iterable[Mapping[str, str]], now: str) -> set[str]:
    """Runs with at least one resource whose expiry has not passed (or that carries none). A run's expiry
    is the latest of its resources': a `--reuse` extends what it can relabel, never a network's or a
    subnetwork's description, and the janitor must not sweep a run in progress."""
    return {str(lab.get("e2e-run")) for lab in labels if not meta.expired(lab, now)}


def find(c: Clients, region: str | None = None, *, run_id: str | None = None, only_expired: bool = False,
         deadline: Deadline) -> list[Entry]:
    """Suite resources of `run_id` (or every run), optionally only those of expired runs, in deletion order."""
    now, p = now_label(), c.project
    flt = f"labels.e2e-run={run_id}" if run_id else f"labels.e2e-suite={SUITE}"
    instances = [i for i in _aggregated(c, compute_v1.InstancesClient, deadline, flt) if _ours(i.labels, run_id)]
    clusters = [cl for cl in c.call("listing GKE clusters", c.container.list_clusters, deadline,
                                    parent=f"projects/{p}/locations/-").clusters if _ours(cl.resource_labels, run_id)]
    nets = [n for n in c.call("listing networks", c.compute(compute_v1.NetworksClient).list, deadline, project=p)
            if _ours(meta.labels_of(n.description), run_id)]
    subnets = [s for s in _aggregated(c, compute_v1.SubnetworksClient, deadline)
               if _ours(meta.labels_of(s.description), run_id)]
    rules = list(c.call("listing firewall rules", c.firewalls.list, deadline, project=p))
    labelled = [dict(i.labels) for i in instances] + [dict(cl.resource_labels) for cl in clusters] + [
        meta.labels_of(o.description) for o in (*nets, *subnets, *rules)]
    live = live_runs([lab for lab in labelled if _ours(lab, run_id)], now) if only_expired else set()
    keep = lambda labels: _ours(labels, run_id) and labels.get("e2e-run") not in live  # noqa: E731
    clusters, nets = [cl for cl in clusters if keep(cl.resource_labels)], [n for n in nets if keep(meta.labels_of(n.description))]
    runs = {cl.resource_labels.get("e2e-run", "") for cl in clusters} | {
        meta.labels_of(n.description).get("e2e-run", "") for n in nets}
    names = {cl.name for cl in clusters} | {Names.derive(r).cluster for r in runs if r}
    net_names = {n.name for n in nets}
    run_rules = {Names.derive(run_id).firewall(purpose) for purpose in firewall.PURPOSES} if run_id else set()
    k8s = {f.name for f in rules if _k8s_rule_of(f, names, net_names)}
    out = [Entry("instance", i.name, f"{p}/{meta.location_of(i.zone, 'zones')}", extra=dict(i.labels))
           for i in instances if keep(i.labels)]
    out += [Entry("cluster", cl.name, f"{p}/{cl.zone or cl.location}", extra=dict(cl.resource_labels))
            for cl in clusters]
    out += _lb_leftovers(c, deadline, net_names, {fr for n in k8s for fr in _rules_named_after(n)})
    out += _groups_in(c, deadline, net_names)
    out += [Entry("firewall", f.name, p, extra=meta.labels_of(f.description))
            for f in rules
            if (f.name.startswith(f"{PREFIX}-") and keep(meta.labels_of(f.description))) or f.name in k8s
            or (run_id and not only_expired and f.name in run_rules)]
    out += [Entry("subnetwork", s.name, f"{p}/{meta.location_of(s.region, 'regions')}",
                  extra=meta.labels_of(s.description)) for s in subnets if keep(meta.labels_of(s.description))]
    out += [Entry("network", n.name, p, extra=meta.labels_of(n.description)) for n in nets]
    out = list({e.key: e for e in out}.values())  # a NEG is found through its rule and by its network
    log.debug("sweep: runs %s, found %s", sorted(runs - {""}), [e.key for e in out])
    return sorted(out, key=lambda e: ORDER.index(e.kind))


# client -> (its aggregated-list request, the field of each scope's list)
_AGGREGATED: dict[type, tuple[Any, str]] = {
    compute_v1.InstancesClient: (compute_v1.AggregatedListInstancesRequest, "instances"),
    compute_v1.SubnetworksClient: (compute_v1.AggregatedListSubnetworksRequest, "subnetworks"),
    compute_v1.ForwardingRulesClient: (compute_v1.AggregatedListForwardingRulesRequest, "forwarding_rules"),
    compute_v1.NetworkEndpointGroupsClient: (compute_v1.AggregatedListNetworkEndpointGroupsRequest,
                                             "network_endpoint_groups"),
    compute_v1.InstanceGroupsClient: (compute_v1.AggregatedListInstanceGroupsRequest, "instance_groups"),
}


def _aggregated(c: Clients, cls: type, deadline: Deadline, flt: str | None = None) -> Iterable:
    request, field = _AGGREGATED[cls]
    pager = c.call(f"listing {cls.__name__}", c.compute(cls).aggregated_list, deadline,
                   request=request(project=c.project, **({"filter": flt} if flt else {})))
    for _, scoped in pager:
        yield from getattr(scoped, field, None) or []


def _k8s_rule_of(f: compute_v1.Firewall, clusters: set[str], nets: set[str]) -> bool:
    """GKE's LoadBalancer firewall rules (`k8s-fw-*`, `k8s-*-hc`; `k8s2-*` from 1.36) target the
    cluster's node tags."""
    if not f.name.startswith(GKE_PREFIXES):
        return False
    return f.network.rsplit("/", 1)[-1] in nets or any(loadbalancers.node_tag_of(t) in clusters for t in f.target_tags)


def _rules_named_after(firewall_rule: str) -> set[str]:
    """The forwarding rules a GKE firewall rule is named after: `k8s-fw-<rule>`; from 1.36 the rule
    `k8s2-<rest>` goes with forwarding rules `k8s2-<protocol>-<rest>`."""
    if firewall_rule.startswith("k8s2-"):
        return {f"k8s2-{proto}-{firewall_rule.removeprefix('k8s2-')}" for proto in ("tcp", "udp", "l3")}
    return {firewall_rule.removeprefix("k8s-fw-")}


def _groups_in(c: Clients, deadline: Deadline, nets: set[str]) -> list[Entry]:
    """GKE's instance groups (`k8s-ig--<uid>`) and NEGs (`k8s2-...`) in the run's networks: a NEG left
    by a cluster deleted too early has no forwarding rule left to be found through."""
    kinds = {compute_v1.NetworkEndpointGroupsClient: "network-endpoint-group", compute_v1.InstanceGroupsClient:
             "instance-group"}
    return [Entry(kind, g.name, f"{c.project}/{meta.location_of(g.zone, 'zones')}")
            for cls, kind in kinds.items() for g in _aggregated(c, cls, deadline)
            if g.name.startswith(GKE_PREFIXES) and g.network.rsplit("/", 1)[-1] in nets]


def _lb_leftovers(c: Clients, deadline: Deadline, nets: set[str], lbs: set[str]) -> list[Entry]:
    out = []
    for fr in _aggregated(c, compute_v1.ForwardingRulesClient, deadline):
        if fr.name in lbs or fr.network.rsplit("/", 1)[-1] in nets:
            out += loadbalancers.resources_of(c, fr, {}, deadline)
    return list({e.key: e for e in out}.values())


def deleters(c: Clients) -> dict[str, Callable[[Entry, Deadline], None]]:
    lb = {kind: (lambda e, d: loadbalancers.delete(c, e, d)) for kind in loadbalancers.KINDS}
    return {"instance": lambda e, d: instance.delete(c, e, d), "cluster": lambda e, d: cluster.delete(c, e, d),
            "firewall": lambda e, d: firewall.delete(c, e, d),
            "subnetwork": lambda e, d: network.delete_subnetwork(c, e, d),
            "network": lambda e, d: network.delete_network(c, e, d), **lb}


def delete_all(c: Clients, entries: list[Entry], deadline: Deadline) -> list[str]:
    """Delete in dependency order, continue past failures; returns one line per failure."""
    failures, delete = [], deleters(c)
    for e in sorted(entries, key=lambda e: ORDER.index(e.kind)):
        try:
            delete[e.kind](e, deadline)
            log.info("janitor: deleted %s", e.key)
        except Exception as exc:  # keep going: one failure must not strand the rest
            failures.append(f"{e.key}: {exc}")
            log.error("janitor: %s: %s", e.key, exc)
    return failures
