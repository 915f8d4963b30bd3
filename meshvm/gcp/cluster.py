"""The GKE Standard zonal VPC-native cluster: create (operation polled here), describe, delete."""

from __future__ import annotations

import base64
import logging
import re
from datetime import UTC, datetime

from google.cloud import container_v1

from meshvm import retry
from meshvm.config import Config
from meshvm.deadlines import Deadline
from meshvm.gcp import adopt, errors
from meshvm.gcp.clients import Clients, insert, not_found
from meshvm.gcp.firewall import node_tag
from meshvm.gcp.operations import wait_gke
from meshvm.ledger import Entry, Ledger
from meshvm.seams import ClusterInfo, NetworkInfo

log = logging.getLogger(__name__)
# GKE's default node scopes, spelled out (docs/facts.md section 3): image pulls, logs, metrics, traces.
NODE_SCOPES = (
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/logging.write",
    "https://www.googleapis.com/auth/monitoring",
    "https://www.googleapis.com/auth/service.management.readonly",
    "https://www.googleapis.com/auth/servicecontrol",
    "https://www.googleapis.com/auth/trace.append",
)
_CHANNELS = {"rapid": 1, "regular": 2, "stable": 3, "none": 0}  # ReleaseChannel.Channel values
_RUNNING = container_v1.Operation.Status.RUNNING
_PENDING = container_v1.Operation.Status.PENDING


def protection(cfg: Config, now: datetime | None = None) -> dict[str, object]:
    """The cluster's exposure and drift during the run (docs/facts.md section 6): its API endpoint
    answers only the runner's ranges (master authorized networks, else 0.0.0.0/0), and a maintenance
    exclusion (no upgrades) from now until the run's expiry keeps GKE from upgrading it mid-run."""
    now = now or datetime.now(UTC)
    until = datetime.strptime(cfg.labels["e2e-expires"], "%Y%m%dt%H%Mz").replace(tzinfo=UTC)
    exclusion = container_v1.TimeWindow(
        start_time=now, end_time=until, maintenance_exclusion_options=container_v1.MaintenanceExclusionOptions(
            scope=container_v1.MaintenanceExclusionOptions.Scope.NO_UPGRADES))
    return {
        "master_authorized_networks_config": container_v1.MasterAuthorizedNetworksConfig(
            enabled=True, cidr_blocks=[container_v1.MasterAuthorizedNetworksConfig.CidrBlock(
                cidr_block=r, display_name="meshvm runner") for r in cfg.ssh_source_ranges]),
        "maintenance_policy": container_v1.MaintenancePolicy(window=container_v1.MaintenanceWindow(
            maintenance_exclusions={f"meshvm-{cfg.run_id}"[:40]: exclusion})),
    }


def body(cfg: Config, network: NetworkInfo) -> container_v1.Cluster:
    if network.pods_range_name:  # our subnetwork already holds the secondary ranges
        ip = container_v1.IPAllocationPolicy(use_ip_aliases=True,
                                             cluster_secondary_range_name=network.pods_range_name,
                                             services_secondary_range_name=network.services_range_name)
    else:  # an existing subnetwork: GKE creates the secondary ranges from the fixed CIDRs
        ip = container_v1.IPAllocationPolicy(use_ip_aliases=True, cluster_ipv4_cidr_block=cfg.pod_range,
                                             services_ipv4_cidr_block=cfg.service_range)
    node_config = container_v1.NodeConfig(
        machine_type=cfg.cluster_machine_type, disk_size_gb=cfg.node_disk_gb, oauth_scopes=list(NODE_SCOPES),
        tags=[node_tag(cfg)], labels=dict(cfg.labels), resource_labels=dict(cfg.labels),
        # A minimal node service account when given; else GKE's default (the Compute default account).
        **({"service_account": cfg.node_service_account} if cfg.node_service_account else {}))
    return container_v1.Cluster(
        name=cfg.names.cluster, description=f"meshvm e2e run {cfg.run_id}",
        network=network.network.rsplit("/", 1)[-1], subnetwork=network.subnetwork.rsplit("/", 1)[-1],
        ip_allocation_policy=ip, resource_labels=dict(cfg.labels),
        release_channel=container_v1.ReleaseChannel(channel=_CHANNELS[cfg.release_channel]),
        initial_cluster_version=cfg.cluster_version or "",
        node_pools=[container_v1.NodePool(name="default-pool", initial_node_count=cfg.node_count,
                                          config=node_config)],
        **protection(cfg))


def create(c: Clients, cfg: Config, network: NetworkInfo, zone: str, ledger: Ledger,
           deadline: Deadline) -> ClusterInfo:
    what = f"creating GKE cluster {cfg.names.cluster} in {zone}"
    op = insert(c, what, c.container.create_cluster, deadline,
                lambda: ledger.record("cluster", cfg.names.cluster, f"{c.project}/{zone}"),
                parent=_parent(c, zone), cluster=body(cfg, network))
    wait_gke(c, zone, op, what, deadline)
    return describe(c, cfg.names.cluster, zone, deadline)


def adopt_kept(c: Clients, cfg: Config, zone: str, ledger: Ledger, deadline: Deadline) -> ClusterInfo | None:
    """--reuse: the kept run's cluster in `zone` (recorded in this run's ledger, then waited RUNNING), or None."""
    name = cfg.names.cluster
    got = adopt.find(c, f"reading GKE cluster {name}", c.container.get_cluster, deadline,
                     name=f"{_parent(c, zone)}/clusters/{name}")
    if got is None:
        return None
    adopt.record(cfg, ledger, "cluster", name, f"{c.project}/{zone}", got.resource_labels)
    status = container_v1.Cluster.Status

    def usable() -> object:
        now = c.call(f"reading GKE cluster {name}", c.container.get_cluster, deadline,
                     name=f"{_parent(c, zone)}/clusters/{name}").status
        if now in (status.STOPPING, status.ERROR):
            raise errors.CloudError("not-usable", f"{adopt.FLAG}: the kept GKE cluster {name} is "
                                    f"{getattr(now, 'name', now)}; it cannot be reused")
        return now

    if got.status != status.RUNNING:
        retry.until(f"kept GKE cluster {name} to be RUNNING", usable, deadline, accept=lambda s: s == status.RUNNING,
                    initial=2.0, ceiling=15.0)
    adopt.extend_expiry(c, cfg, "cluster", name, zone, got, deadline)  # GKE changes a RUNNING cluster only
    return describe(c, name, zone, deadline)


def describe(c: Clients, name: str, zone: str, deadline: Deadline) -> ClusterInfo:
    got = c.call(f"reading GKE cluster {name}", c.container.get_cluster, deadline,
                 name=f"{_parent(c, zone)}/clusters/{name}")
    ca = base64.b64decode(got.master_auth.cluster_ca_certificate).decode()
    return ClusterInfo(name, zone, got.endpoint, ca, got.cluster_ipv4_cidr or got.ip_allocation_policy.cluster_ipv4_cidr_block)


def delete(c: Clients, entry: Entry, deadline: Deadline) -> None:
    """Wait for in-flight operations (GKE refuses a delete meanwhile), delete, wait; NotFound = done."""
    zone = entry.where.split("/")[1]
    what = f"deleting GKE cluster {entry.name} in {zone}"
    wait_in_flight(c, entry.name, zone, deadline)
    try:
        op = c.call_retrying(what, c.container.delete_cluster, deadline,
                             name=f"{_parent(c, zone)}/clusters/{entry.name}")
    except errors.CloudError as e:
        if not_found(e):
            return
        raise
    wait_gke(c, zone, op, what, deadline)


def wait_in_flight(c: Clients, name: str, zone: str, deadline: Deadline) -> None:
    """Wait until no operation runs on the cluster or on one of its node pools (GKE refuses a delete
    meanwhile: targetLink `.../clusters/<name>` or `.../clusters/<name>/nodePools/<pool>`)."""
    target = re.compile(rf"/clusters/{re.escape(name)}(?:/nodePools/[^/]+)?$")

    def running() -> list[str]:
        ops = c.call_retrying(f"listing operations of {name}", c.container.list_operations, deadline,
                              parent=_parent(c, zone)).operations
        return [o.name for o in ops if o.status in (_RUNNING, _PENDING)
                and target.search(o.target_link.rstrip("/"))]

    busy = running()
    if busy:
        log.info("GKE cluster %s: waiting for operations %s before deleting", name, busy)
        retry.until(f"operations on cluster {name} to finish", running, deadline, accept=lambda r: not r,
                    initial=2.0, ceiling=15.0)


def exists(c: Clients, entry: Entry, deadline: Deadline) -> bool:
    zone = entry.where.split("/")[1]
    try:
        c.call(f"reading GKE cluster {entry.name}", c.container.get_cluster, deadline,
               name=f"{_parent(c, zone)}/clusters/{entry.name}")
        return True
    except errors.CloudError as e:
        if not_found(e):
            return False
        raise


def _parent(c: Clients, zone: str) -> str:
    return f"projects/{c.project}/locations/{zone}"
