"""GcpCloud: the Cloud seam on Compute Engine + GKE. Records every create in the run's ledger,
falls back across `cfg.zones` on a stock-out, and tears down through `ledger.teardown`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from google.auth import credentials as ga_credentials

from meshvm import ledger as ledger_mod
from meshvm import redact
from meshvm.config import Config
from meshvm.deadlines import Deadline
from meshvm.gcp import cluster, credentials, errors, firewall, instance, network, preflight, sweep
from meshvm.gcp.clients import Clients
from meshvm.ledger import Entry, Ledger
from meshvm.seams import ClusterInfo, NetworkInfo, VmInfo

log = logging.getLogger(__name__)
T = TypeVar("T")
DELETE_SECONDS = {"instance": 600, "cluster": 1800, "firewall": 300, "subnetwork": 600, "network": 600}


class GcpCloud:
    def __init__(self, cfg: Config, ledger: Ledger, creds: ga_credentials.Credentials | None = None) -> None:
        self.cfg, self.ledger = cfg, ledger
        self.clients = Clients(cfg, creds or credentials.load(cfg))

    def preflight(self, deadline: Deadline) -> None:
        preflight.check(self.clients, self.cfg, deadline)

    def create_network(self, deadline: Deadline) -> NetworkInfo:
        return network.create(self.clients, self.cfg, self.ledger, deadline)

    def create_firewall_rules(self, net: NetworkInfo, deadline: Deadline) -> tuple[str, ...]:
        return firewall.create_all(self.clients, self.cfg, net, self.ledger, deadline)

    def create_cluster(self, net: NetworkInfo, deadline: Deadline) -> ClusterInfo:
        return self._in_zones("GKE cluster", lambda z: cluster.create(
            self.clients, self.cfg, net, z, self.ledger, deadline))

    def create_vm(self, net: NetworkInfo, ssh_user: str, ssh_public_key: str, deadline: Deadline) -> VmInfo:
        return self._in_zones("VM", lambda z: instance.create(
            self.clients, self.cfg, net, z, ssh_user, ssh_public_key, self.ledger, deadline))

    def _in_zones(self, what: str, create: Callable[[str], T]) -> T:
        """Try each zone in order; only a stock-out moves on to the next one."""
        stockouts = []
        for zone in self.cfg.zones:
            try:
                return create(zone)
            except errors.CloudError as e:
                if e.kind != "stockout":
                    raise
                log.warning("%s: zone %s is out of resources; trying the next zone", what, zone)
                stockouts.append(f"{zone}: {e}")
        raise errors.CloudError("stockout", f"{what}: every zone is out of resources ({', '.join(self.cfg.zones)}); "
                                "add zones with --zone: " + " | ".join(stockouts))

    def deleters(self) -> dict[str, ledger_mod.Deleter]:
        return {kind: (lambda e, f=f: f(e, _deadline_for(e))) for kind, f in sweep.deleters(self.clients).items()}

    def checkers(self) -> dict[str, ledger_mod.Checker]:
        c, d = self.clients, _deadline_for
        return {"instance": lambda e: instance.instance_exists(c, e, d(e)),
                "cluster": lambda e: cluster.exists(c, e, d(e)),
                "firewall": lambda e: firewall.rule_exists(c, e, d(e)),
                "subnetwork": lambda e: network.subnetwork_exists(c, e, d(e)),
                "network": lambda e: network.network_exists(c, e, d(e))}

    def teardown(self, report: Path) -> dict[str, object]:
        summary = ledger_mod.teardown(self.ledger, self.deleters(), self.checkers(), report)
        left = self.leftovers()
        if left:
            log.error("teardown: still present with the run's labels/prefix: %s", left)
        summary["leftovers"] = left
        report.write_text(redact.scrub(json.dumps(summary, indent=2)) + "\n")
        return summary

    def leftovers(self) -> list[str]:
        found = sweep.find(self.clients, self.cfg.region, run_id=self.cfg.run_id,
                           deadline=Deadline.after(300, "listing the run's leftovers"))
        return [f.key for f in found]


def _deadline_for(entry: Entry) -> Deadline:
    return Deadline.after(DELETE_SECONDS.get(entry.kind, 600), f"deleting {entry.kind} {entry.name}")
