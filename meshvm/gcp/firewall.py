"""The run's ingress firewall rules. VPC rules have no labels: names carry the run-id prefix
(`cfg.names.firewall(...)`) and descriptions carry the labels (see meta.py).

Every rule is ingress/allow, evaluated at the DESTINATION instance (GCP semantics), and covers a
node's alias ranges, so "to the nodes" includes the pods on them.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from google.cloud import compute_v1

from meshvm.config import Config
from meshvm.deadlines import Deadline
from meshvm.gcp import adopt, meta
from meshvm.gcp.clients import Clients, insert
from meshvm.gcp.operations import delete_and_wait, exists, wait_compute
from meshvm.ledger import Entry, Ledger
from meshvm.seams import NetworkInfo

log = logging.getLogger(__name__)
# East-west gateway ports the VM's sidecar uses (docs/facts.md section 1): 15012 istiod xDS/CA,
# 15017 istiod webhook, 15443 mTLS passthrough to mesh services, 15021 status/health.
EASTWEST_PORTS = ("15012", "15017", "15443", "15021")
APP_PORTS = ("9080",)  # BookInfo's service port: the VM calls `details` pods directly (one network)


def node_tag(cfg: Config) -> str:
    """Network tag we put on the cluster's nodes so rules can target exactly them (<= 63 chars)."""
    return f"{cfg.names.cluster}-node"


@dataclass(frozen=True)
class Rule:
    purpose: str
    why: str
    ports: tuple[str, ...]
    source_ranges: tuple[str, ...] = ()
    source_tags: tuple[str, ...] = ()
    target_tags: tuple[str, ...] = ()


PURPOSES = ("ssh", "pods-to-vm", "vm-to-pods", "vm-to-eastwest")  # every rule `rules` makes, by purpose


def rules(cfg: Config) -> tuple[Rule, ...]:
    vm, nodes = (cfg.names.vm_tag,), (node_tag(cfg),)
    return (
        # The suite drives the VM over SSH from the runner; only the runner's egress ranges.
        Rule("ssh", "SSH to the mesh VM from the runner", ("22",), source_ranges=cfg.ssh_source_ranges,
             target_tags=vm),
        # The recipe's cluster-pods-to-vm rule: pods (reviews via sidecars) call ratings on the VM.
        # By pod CIDR: pod IPs are alias IPs of the nodes and are fixed at cluster creation.
        Rule("pods-to-vm", "the recipe's pod range to VM tcp:9080", ("9080",),
             source_ranges=(cfg.pod_range,), target_tags=vm),
        # The VM's sidecar calls mesh services at pod IPs (single network). Source = the VM TAG, not
        # the subnet range: it admits only the run's VM (not every node of the subnet), and needs no
        # VM IP (unknown until the VM exists). Target = the node tag we set on the node pool: the rule
        # then covers the nodes' alias (pod) ranges and nothing else in the network.
        Rule("vm-to-pods", "the mesh VM to pods tcp:9080", APP_PORTS, source_tags=vm, target_tags=nodes),
        # The VM reaches istiod and the mesh through the east-west gateway. With an internal load
        # balancer that traffic arrives at the nodes/gateway pods from the VM's IP; GKE's own
        # k8s-fw rule for the Service may not admit it, so the run opens exactly these ports.
        Rule("vm-to-eastwest", "the mesh VM to the east-west gateway", EASTWEST_PORTS, source_tags=vm,
             target_tags=nodes),
    )


def body(cfg: Config, network: NetworkInfo, rule: Rule) -> compute_v1.Firewall:
    return compute_v1.Firewall(
        name=cfg.names.firewall(rule.purpose), network=network.network, direction="INGRESS", priority=1000,
        description=meta.description(cfg, rule.why),
        allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=list(rule.ports))],
        source_ranges=list(rule.source_ranges), source_tags=list(rule.source_tags),
        target_tags=list(rule.target_tags))


def create_all(c: Clients, cfg: Config, network: NetworkInfo, ledger: Ledger, deadline: Deadline) -> tuple[str, ...]:
    """Insert every rule (recorded as each is accepted), then wait for all of them. With --reuse a
    kept run's rule of the same name is adopted instead (as kept: its ports and ranges are not re-applied)."""
    pending, names = [], []
    for rule in rules(cfg):
        fw = body(cfg, network, rule)
        names.append(fw.name)
        kept = adopt.find(c, f"reading firewall rule {fw.name}", c.firewalls.get, deadline, project=c.project,
                          firewall=fw.name) if cfg.reuse else None
        if kept is not None:
            adopt.record(cfg, ledger, "firewall", fw.name, c.project, meta.labels_of(kept.description))
            adopt.extend_expiry(c, cfg, "firewall", fw.name, "", kept, deadline)
            if sorted(kept.source_ranges) != sorted(fw.source_ranges):
                log.warning("--reuse: firewall rule %s admits %s, this run asked for %s (kept as it is)",
                            fw.name, list(kept.source_ranges), list(fw.source_ranges))
            continue
        op = insert(c, f"creating firewall rule {fw.name}", c.firewalls.insert, deadline,
                    functools.partial(ledger.record, "firewall", fw.name, c.project),
                    project=c.project, firewall_resource=fw)
        pending.append((fw.name, op))
    for name, op in pending:
        wait_compute(c, op, f"creating firewall rule {name}", deadline)
    return tuple(names)


def delete(c: Clients, entry: Entry, deadline: Deadline) -> None:
    delete_and_wait(c, f"deleting firewall rule {entry.name}", c.firewalls.delete, deadline, firewall=entry.name)


def rule_exists(c: Clients, entry: Entry, deadline: Deadline) -> bool:
    return exists(c, c.firewalls.get, deadline, firewall=entry.name)
