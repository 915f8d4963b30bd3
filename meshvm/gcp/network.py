"""The run's VPC network and subnetwork, or an existing network (read-only preflight of its rules)."""

from __future__ import annotations

import logging

from google.cloud import compute_v1

from meshvm.config import Config
from meshvm.deadlines import Deadline
from meshvm.gcp import adopt, meta
from meshvm.gcp.clients import Clients, insert
from meshvm.gcp.operations import delete_and_wait, exists, wait_compute
from meshvm.ledger import Entry, Ledger
from meshvm.seams import NetworkInfo

log = logging.getLogger(__name__)
PODS, SERVICES = "pods", "services"  # secondary range names inside the run's own subnetwork


def create(c: Clients, cfg: Config, ledger: Ledger, deadline: Deadline) -> NetworkInfo:
    """Network (custom subnets) + regional subnetwork with pod and service secondary ranges; with
    --reuse the kept run's, where they exist (adopt.py)."""
    if cfg.network and cfg.subnetwork:
        return existing(c, cfg, deadline)
    project, region = c.project, cfg.region
    net_name = cfg.network or cfg.names.network
    networks, subnetworks = c.compute(compute_v1.NetworksClient), c.compute(compute_v1.SubnetworksClient)
    kept_net = None if cfg.network or not cfg.reuse else adopt.find(
        c, f"reading network {net_name}", networks.get, deadline, project=project, network=net_name)
    if kept_net is not None:
        adopt.record(cfg, ledger, "network", net_name, project, meta.labels_of(kept_net.description))
    elif not cfg.network:
        net = compute_v1.Network(name=net_name, auto_create_subnetworks=False,
                                 routing_config=compute_v1.NetworkRoutingConfig(routing_mode="REGIONAL"),
                                 description=meta.description(cfg, "the run's VPC network"))
        op = insert(c, f"creating network {net_name}", networks.insert, deadline,
                    lambda: ledger.record("network", net_name, project), project=project, network_resource=net)
        wait_compute(c, op, f"creating network {net_name}", deadline)
    else:
        log_ingress_rules(c, cfg, deadline)
    net_link = f"projects/{project}/global/networks/{net_name}"
    sub = compute_v1.Subnetwork(
        name=cfg.names.subnetwork, network=net_link, region=region, ip_cidr_range=cfg.subnet_range,
        description=meta.description(cfg, "VMs and GKE nodes; secondary ranges for pods and services"),
        secondary_ip_ranges=[compute_v1.SubnetworkSecondaryRange(range_name=PODS, ip_cidr_range=cfg.pod_range),
                             compute_v1.SubnetworkSecondaryRange(range_name=SERVICES, ip_cidr_range=cfg.service_range)])
    kept_sub = adopt.find(c, f"reading subnetwork {sub.name}", subnetworks.get, deadline, project=project,
                          region=region, subnetwork=sub.name) if cfg.reuse else None
    if kept_sub is not None:
        adopt.record(cfg, ledger, "subnetwork", sub.name, f"{project}/{region}", meta.labels_of(kept_sub.description))
    else:
        what = f"creating subnetwork {sub.name} in {region}"
        op = insert(c, what, subnetworks.insert, deadline,
                    lambda: ledger.record("subnetwork", sub.name, f"{project}/{region}"),
                    project=project, region=region, subnetwork_resource=sub)
        wait_compute(c, op, what, deadline, region=region)
    return NetworkInfo(net_link, f"projects/{project}/regions/{region}/subnetworks/{sub.name}", region,
                       created=not cfg.network, pods_range_name=PODS, services_range_name=SERVICES)


def existing(c: Clients, cfg: Config, deadline: Deadline) -> NetworkInfo:
    """An existing --network/--subnetwork: read it, log the ingress rules that reach the VM, create nothing."""
    project, region = c.project, cfg.region
    net = c.call(f"reading network {cfg.network}", c.compute(compute_v1.NetworksClient).get, deadline,
                 project=project, network=cfg.network)
    sub = c.call(f"reading subnetwork {cfg.subnetwork}", c.compute(compute_v1.SubnetworksClient).get,
                 deadline, project=project, region=region, subnetwork=cfg.subnetwork)
    log_ingress_rules(c, cfg, deadline)
    return NetworkInfo(net.self_link or f"projects/{project}/global/networks/{cfg.network}",
                       sub.self_link or f"projects/{project}/regions/{region}/subnetworks/{cfg.subnetwork}",
                       region, created=False)


def log_ingress_rules(c: Clients, cfg: Config, deadline: Deadline) -> list[compute_v1.Firewall]:
    """Every enabled ingress rule of the network that reaches the run's VM (no tags, or its tag)."""
    rules = c.call(f"listing firewall rules of network {cfg.network}", c.firewalls.list, deadline,
                   project=c.project)
    reaching = [r for r in rules if r.network.rsplit("/", 1)[-1] == cfg.network and r.direction != "EGRESS"
                and not r.disabled and (not r.target_tags or cfg.names.vm_tag in r.target_tags)]
    for r in reaching:
        allowed = ",".join(f"{a.I_p_protocol}:{'|'.join(a.ports) or 'all'}" for a in r.allowed)
        log.warning("existing network %s: ingress rule %s reaches the VM: from %s allow %s",
                    cfg.network, r.name, ",".join(r.source_ranges) or ",".join(r.source_tags), allowed)
    return list(reaching)


def delete_network(c: Clients, entry: Entry, deadline: Deadline) -> None:
    delete_and_wait(c, f"deleting network {entry.name}", c.compute(compute_v1.NetworksClient).delete,
                    deadline, network=entry.name)


def delete_subnetwork(c: Clients, entry: Entry, deadline: Deadline) -> None:
    delete_and_wait(c, f"deleting subnetwork {entry.name}", c.compute(compute_v1.SubnetworksClient).delete,
                    deadline, region=entry.where.split("/")[1], subnetwork=entry.name)


def network_exists(c: Clients, entry: Entry, deadline: Deadline) -> bool:
    return exists(c, c.compute(compute_v1.NetworksClient).get, deadline, network=entry.name)


def subnetwork_exists(c: Clients, entry: Entry, deadline: Deadline) -> bool:
    return exists(c, c.compute(compute_v1.SubnetworksClient).get, deadline,
                  region=entry.where.split("/")[1], subnetwork=entry.name)
