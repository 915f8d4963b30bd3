"""GcpCloud: the Cloud seam on Compute Engine + GKE. Records every create in the run's ledger,
falls back across `cfg.zones` on a stock-out, and tears down through `ledger.teardown`.

Load balancers (meshvm.gcp.loadbalancers): GKE makes them for LoadBalancer Services and deleting the
cluster does not delete them. `record_load_balancer` puts them in the ledger once a Service has an
address; the e2e teardown calls `release_load_balancers` BEFORE `teardown`, which then deletes the
cluster first and what GKE left behind after it."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from google.auth import credentials as ga_credentials

from meshvm import ledger as ledger_mod
from meshvm.cleanup import CleanupReport
from meshvm.config import Config
from meshvm.deadlines import Deadline
from meshvm.gcp import (
    adopt,
    cluster,
    credentials,
    errors,
    firewall,
    instance,
    loadbalancers,
    network,
    preflight,
    sweep,
)
from meshvm.gcp.clients import Clients
from meshvm.ledger import Entry, Ledger
from meshvm.seams import ClusterInfo, Kube, NetworkInfo, VmInfo
from meshvm.stages import TEARDOWN_DEADLINE

log = logging.getLogger(__name__)
T = TypeVar("T")
DELETE_SECONDS = {"instance": 600, "cluster": 1800, "firewall": 300, "subnetwork": 600, "network": 600}
LB_KINDS = frozenset(loadbalancers.KINDS)


class GcpCloud:
    def __init__(self, cfg: Config, ledger: Ledger, creds: ga_credentials.Credentials | None = None) -> None:
        self.cfg, self.ledger = cfg, ledger
        self._teardown_deadline: Deadline | None = None
        self.clients = Clients(cfg, creds or credentials.load(cfg))

    def preflight(self, deadline: Deadline) -> None:
        preflight.check(self.clients, self.cfg, deadline)

    def create_network(self, deadline: Deadline) -> NetworkInfo:
        return network.create(self.clients, self.cfg, self.ledger, deadline)

    def create_firewall_rules(self, net: NetworkInfo, deadline: Deadline) -> tuple[str, ...]:
        return firewall.create_all(self.clients, self.cfg, net, self.ledger, deadline)

    def create_cluster(self, net: NetworkInfo, deadline: Deadline) -> ClusterInfo:
        kept = self._kept(lambda z: cluster.adopt_kept(self.clients, self.cfg, z, self.ledger, deadline))
        if kept is None:
            return self._in_zones("GKE cluster", lambda z, d: cluster.create(
                self.clients, self.cfg, net, z, self.ledger, d), deadline, discard=self._discard_cluster)
        self._adopt_load_balancers(deadline)
        return kept

    def _adopt_load_balancers(self, deadline: Deadline) -> None:
        """--reuse: what GKE made for the kept cluster's LoadBalancer Services (no labels: attributed to the
        run through its cluster and network, as the janitor finds it), recorded after the cluster as a run
        records it, so teardown deletes it even if this run stops before the gateways."""
        for e in sweep.find(self.clients, self.cfg.region, run_id=self.cfg.run_id, deadline=deadline):
            if e.kind in LB_KINDS or (e.kind == "firewall" and e.name.startswith("k8s-")):
                self.ledger.record(e.kind, e.name, e.where, adopted="true")

    def create_vm(self, net: NetworkInfo, ssh_user: str, ssh_public_key: str, deadline: Deadline) -> VmInfo:
        return self._kept(lambda z: instance.adopt_kept(
            self.clients, self.cfg, z, ssh_user, ssh_public_key, self.ledger, deadline)) or \
            self._in_zones("VM", lambda z, d: instance.create(
                self.clients, self.cfg, net, z, ssh_user, ssh_public_key, self.ledger, d), deadline)

    def check_kept(self, deadline: Deadline) -> None:
        """--reuse, before anything is created: the project still holds something of the kept run."""
        if not sweep.find(self.clients, self.cfg.region, run_id=self.cfg.run_id, deadline=deadline):
            raise errors.CloudError("not-found", f"{adopt.FLAG}: no kept run {self.cfg.run_id}: nothing in project "
                                    f"{self.clients.project} carries its labels (e2e-run={self.cfg.run_id})")

    def _kept(self, adopt_in: Callable[[str], T | None]) -> T | None:
        """--reuse: the kept run's resource from the first of `cfg.zones` that holds it (None: create it)."""
        if not self.cfg.reuse:
            return None
        return next((got for got in map(adopt_in, self.cfg.zones) if got is not None), None)

    def record_load_balancer(self, namespace: str, name: str, address: str, deadline: Deadline) -> list[Entry]:
        """Record in the ledger what GKE made for the LoadBalancer Service `namespace/name` of the run's
        cluster, now that it has `address` (forwarding rule, pool or backend service, health checks,
        `k8s-fw-*` rules, address reservation). Returns the entries."""
        svc = loadbalancers.Service(namespace, name, address, self.cfg.names.cluster,
                                    self.cfg.network or self.cfg.names.network, own_network=not self.cfg.network)
        return loadbalancers.record(self.clients, self.ledger, self.cfg.region, svc, deadline)

    def release_load_balancers(self, kube: Kube, deadline: Deadline) -> bool:
        """Delete every LoadBalancer Service of the cluster and wait until each is gone (GKE clears the
        finalizer once it deleted the load balancer). Call it from the e2e teardown BEFORE `teardown`:
        the cluster must still exist. False if they did not all go in time (then `teardown` deletes
        what `record_load_balancer` recorded); never raises for that. From GKE 1.36 also waits until
        GKE deleted the Services' NEGs, which it does later on its own period (docs/facts.md section 6)."""
        uid = loadbalancers.cluster_uid(kube)
        released = loadbalancers.release(kube, deadline)
        if not uid:  # the cluster did not answer: nothing to go by (teardown deletes what was recorded)
            return released
        return loadbalancers.wait_negs_gone(self.clients, uid, deadline) and released

    def _in_zones(self, what: str, create: Callable[[str, Deadline], T], deadline: Deadline,
                  discard: Callable[[str, Deadline], None] | None = None) -> T:
        """Try each zone in order, each with its share of what is left of the deadline (never the whole
        of it); only a stock-out moves on to the next one, after `discard` removed what the failed
        zone kept (GKE keeps a failed cluster, holding quota)."""
        stockouts = []
        for i, zone in enumerate(self.cfg.zones):
            share = Deadline.after(deadline.remaining() / (len(self.cfg.zones) - i), f"{what} in {zone}")
            try:
                return create(zone, share)
            except errors.CloudError as e:
                if e.kind != "stockout":
                    raise
                log.warning("%s: zone %s is out of resources; trying the next zone", what, zone)
                stockouts.append(f"{zone}: {e}")
                if discard is not None:
                    discard(zone, deadline)
        raise errors.CloudError("stockout", f"{what}: every zone is out of resources ({', '.join(self.cfg.zones)}); "
                                "add zones with --zone: " + " | ".join(stockouts))

    def _discard_cluster(self, zone: str, deadline: Deadline) -> None:
        """A cluster whose creation failed (GKE keeps it in ERROR): deleted before the next zone."""
        cluster.delete(self.clients, Entry("cluster", self.cfg.names.cluster, f"{self.clients.project}/{zone}"),
                       deadline)
        log.warning("GKE cluster %s in %s: creation failed; deleted before trying the next zone",
                    self.cfg.names.cluster, zone)

    def deleters(self) -> dict[str, ledger_mod.Deleter]:
        return {kind: functools.partial(self._delete, f) for kind, f in sweep.deleters(self.clients).items()}

    def _delete(self, delete: Callable[[Entry, Deadline], None], entry: Entry) -> None:
        delete(entry, self._deadline_for(entry))

    def checkers(self) -> dict[str, ledger_mod.Checker]:
        c, d = self.clients, self._deadline_for
        lb = {kind: (lambda e: loadbalancers.exists(c, e, d(e))) for kind in LB_KINDS}
        return {**lb, "instance": lambda e: instance.instance_exists(c, e, d(e)),
                "cluster": lambda e: cluster.exists(c, e, d(e)),
                "firewall": lambda e: firewall.rule_exists(c, e, d(e)),
                "subnetwork": lambda e: network.subnetwork_exists(c, e, d(e)),
                "network": lambda e: network.network_exists(c, e, d(e))}

    def _deadline_for(self, entry: Entry) -> Deadline:
        """Each delete's own budget, never past the whole teardown's (it must end inside nox's grace)."""
        own = Deadline.after(DELETE_SECONDS.get(entry.kind, 600), f"deleting {entry.kind} {entry.name}")
        overall = self._teardown_deadline
        return own if overall is None or own.at <= overall.at else Deadline(overall.at, own.what)

    def teardown(self, report: Path | CleanupReport, seconds: float = TEARDOWN_DEADLINE) -> dict[str, Any]:
        """Delete what the ledger holds (in reverse, the cluster before its load balancers), verify, list
        what still carries the run's labels; everything within `seconds`, all of it into the report."""
        report = report if isinstance(report, CleanupReport) else CleanupReport(report)
        self._teardown_deadline = Deadline.after(seconds, "teardown")
        ledger_mod.teardown(_ClusterBeforeItsLoadBalancers(self.ledger), self.deleters(), self.checkers(), report)
        left = self.leftovers()
        if left:
            log.error("teardown: still present with the run's labels/prefix: %s", left)
        report.listed(left)
        return report.summary()

    def leftovers(self) -> list[str]:
        found = sweep.find(self.clients, self.cfg.region, run_id=self.cfg.run_id,
                           deadline=Deadline.after(300, "listing the run's leftovers"))
        return [f.key for f in found]


class _ClusterBeforeItsLoadBalancers:
    """The ledger as teardown walks it (in reverse): load-balancer entries are moved to just before the
    cluster's, so the cluster goes first; once it is gone nothing recreates what GKE made."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def entries(self) -> list[Entry]:
        entries = self.ledger.entries()
        clusters = [i for i, e in enumerate(entries) if e.kind == "cluster"]
        if not clusters:
            return entries
        lbs = [e for e in entries[clusters[0]:] if e.kind in LB_KINDS]
        rest = [e for e in entries if e not in lbs]
        at = rest.index(entries[clusters[0]])
        return rest[:at] + lbs + rest[at:]


