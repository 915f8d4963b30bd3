"""Read-only checks before anything is created: project, zones, machine types, image family, quotas,
the Kubernetes Engine API and the --cluster-version in the chosen release channel. Every problem is
one line; all of them are reported together."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from google.cloud import compute_v1, container_v1

from meshvm import validate as v
from meshvm.config import Config
from meshvm.deadlines import Deadline
from meshvm.gcp import errors, firewall
from meshvm.gcp.clients import Clients
from meshvm.gcp.instance import IMAGE_PROJECT

log = logging.getLogger(__name__)
LB_ADDRESSES = 2  # the ingress and east-west gateways' LoadBalancer IPs
_CHANNEL_NAMES = {"rapid": "RAPID", "regular": "REGULAR", "stable": "STABLE"}
Probe = Callable[..., object]


class PreflightFailed(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("preflight failed:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


def check(c: Clients, cfg: Config, deadline: Deadline) -> None:
    problems: list[str] = []

    def probe(what: str, fn: object, **kw: str) -> object | None:
        try:
            return c.call(what, fn, deadline, **kw)  # type: ignore[arg-type]
        except errors.CloudError as e:
            problems.append(str(e))
            return None

    p, zone = c.project, cfg.zones[0]
    project = probe(f"project {p}", c.compute(compute_v1.ProjectsClient).get, project=p)
    if project is None:
        raise PreflightFailed(problems)  # nothing else can be read
    zones = [z for z in cfg.zones
             if probe(f"zone {z}", c.compute(compute_v1.ZonesClient).get, project=p, zone=z) is not None]
    types = c.compute(compute_v1.MachineTypesClient)
    vm = probe(f"VM machine type {cfg.vm_machine_type} in {zone}", types.get, project=p, zone=zone,
               machine_type=cfg.vm_machine_type)
    node = probe(f"node machine type {cfg.cluster_machine_type} in {zone}", types.get, project=p, zone=zone,
                 machine_type=cfg.cluster_machine_type)
    probe(f"image family {IMAGE_PROJECT}/{cfg.vm_image_family}", c.compute(compute_v1.ImagesClient).get_from_family,
          project=IMAGE_PROJECT, family=cfg.vm_image_family)
    region = probe(f"region {cfg.region}", c.compute(compute_v1.RegionsClient).get, project=p, region=cfg.region)
    if region is not None and vm is not None and node is not None:
        problems += quota_problems(cfg, region, vm, node)  # type: ignore[arg-type]
        problems += _short(f"project {p}", project.quotas, project_needs(cfg, vm, node))  # type: ignore[attr-defined,arg-type]
    problems += gke_problems(c, cfg, zones, probe)
    problems += policy_problems(c, cfg, deadline)
    if problems:
        raise PreflightFailed(problems)


ACT_AS = "iam.serviceAccounts.actAs"
EXTERNAL_IP, OS_LOGIN = "constraints/compute.vmExternalIpAccess", "constraints/compute.requireOsLogin"


def policy_problems(c: Clients, cfg: Config, deadline: Deadline) -> list[str]:
    """What IAM and the organisation's policies would refuse later: acting as --node-service-account
    (testIamPermissions), an external IP on the VM (the runner SSHes to it), and OS Login required
    (the VM would ignore the metadata SSH key the run uses). A policy this run may not read is a
    warning, not a refusal."""
    out: list[str] = []
    if cfg.node_service_account:
        granted = _read(c, "iam", f"/v1/projects/-/serviceAccounts/{cfg.node_service_account}:testIamPermissions",
                        {"permissions": [ACT_AS]}, f"IAM permissions on {cfg.node_service_account}", deadline, out)
        if granted is not None and ACT_AS not in (granted.get("permissions") or []):
            out.append(f"--node-service-account {cfg.node_service_account}: the run's credentials lack {ACT_AS} on it; "
                       "grant them roles/iam.serviceAccountUser on that service account")
    for constraint in (EXTERNAL_IP, OS_LOGIN):
        policy = _read(c, "resourcemanager", f"/v1/projects/{c.project}:getEffectiveOrgPolicy",
                       {"constraint": constraint}, f"organisation policy {constraint}", deadline, None)
        if policy is not None and (why := _blocks(constraint, policy, c.project, cfg)):
            out.append(f"organisation policy {constraint} on project {c.project} {why}")
    return out


def _blocks(constraint: str, policy: dict, project: str, cfg: Config) -> str:
    if constraint == OS_LOGIN:
        return ("is enforced: the VM would ignore the metadata SSH key the run uses; run in a project where it is "
                "not enforced") if (policy.get("booleanPolicy") or {}).get("enforced") else ""
    lp = policy.get("listPolicy") or {}
    allowed = lp.get("allowedValues") or []
    vm = f"projects/{project}/zones/{cfg.zones[0]}/instances/{cfg.names.vm}"
    if lp.get("allValues") == "DENY" or (allowed and vm not in allowed):
        return (f"forbids the VM's external IP (the runner reaches it over SSH); allow {vm} "
                "(every --zone) or run in a project without the constraint")
    return ""


def _read(c: Clients, api: str, path: str, body: dict, what: str, deadline: Deadline,
          problems: list[str] | None) -> dict | None:
    """The answer; on an error a problem line (when `problems` is given) or a warning, and None."""
    try:
        return c.post(api, path, body, f"reading {what}", deadline)
    except errors.CloudError as e:
        if problems is not None:
            problems.append(str(e))
        else:
            log.warning("preflight: could not read %s (%s); not checked", what, e)
        return None


def gke_problems(c: Clients, cfg: Config, zones: list[str], probe: Probe) -> list[str]:
    """The Kubernetes Engine API answers (a disabled API is one line naming the service to enable),
    and a --cluster-version is offered in the release channel in every (existing) zone the cluster
    may use."""
    if not zones or probe(f"Kubernetes Engine API in {zones[0]}", c.container.list_clusters,
                          parent=f"projects/{c.project}/locations/{zones[0]}") is None:
        return []  # a problem with the API is already reported by probe
    out: list[str] = []
    for z in zones:
        got = probe(f"GKE versions in {z}", c.container.get_server_config, name=f"projects/{c.project}/locations/{z}")
        if got is not None:
            out += version_problems(cfg, z, got) if cfg.cluster_version else default_problems(cfg, z, got)  # type: ignore[arg-type]
    return out


def default_problems(cfg: Config, zone: str, server: container_v1.ServerConfig) -> list[str]:
    """The version GKE would give the cluster (the channel's default) within what the Istio under
    test supports (docs/facts.md section 6: Kubernetes 1.37 is out, outside Istio 1.31's range)."""
    channel = _CHANNEL_NAMES.get(cfg.release_channel)
    default = next((ch.default_version for ch in server.channels if ch.channel.name == channel), "") if channel \
        else server.default_cluster_version
    span = v.ISTIO_KUBERNETES.get(v.istio_minor(cfg.istio_version))
    m = re.match(r"1\.(\d+)", default or "")
    if not span or not m or span[0] <= int(m[1]) <= span[1]:
        return []
    return [f"--release-channel {cfg.release_channel}: its default GKE version in {zone} is {default}, outside the "
            f"Kubernetes versions Istio {cfg.istio_version} supports (1.{span[0]}-1.{span[1]}); pass --cluster-version "
            f"1.{span[1]} (or another in that range) or another --release-channel"]


def version_problems(cfg: Config, zone: str, server: container_v1.ServerConfig) -> list[str]:
    """--cluster-version (exact, or a prefix such as 1.33) among the versions the channel offers."""
    want, channel = str(cfg.cluster_version), cfg.release_channel
    if channel in _CHANNEL_NAMES:
        offered = [v for ch in server.channels if ch.channel.name == _CHANNEL_NAMES[channel] for v in ch.valid_versions]
        where = f"the {channel} release channel"
    else:
        offered, where = list(server.valid_master_versions), "GKE without a release channel"
    if any(v == want or v.startswith((want + ".", want + "-")) for v in offered):
        return []
    shown = ", ".join(offered[:6]) + (", ..." if len(offered) > 6 else "") if offered else "none"
    return [f"--cluster-version {want}: not offered by {where} in {zone} (offered: {shown}); "
            "pick one of those, or another --release-channel"]


def needs(cfg: Config, vm: compute_v1.MachineType, node: compute_v1.MachineType) -> dict[str, float]:
    """What the run consumes of the regional quotas that bite (docs/facts.md section 3)."""
    return {"CPUS": vm.guest_cpus + cfg.node_count * node.guest_cpus,
            "IN_USE_ADDRESSES": 1 + cfg.node_count + LB_ADDRESSES,  # VM + public nodes + gateways
            "SSD_TOTAL_GB": cfg.node_count * cfg.node_disk_gb}  # node disks are pd-balanced


# GKE's own firewall rules: per cluster (its internal, ssh, vms and health-check rules) and per
# LoadBalancer Service (its k8s-fw rule and a health-check rule): two gateways.
GKE_FIREWALLS = 4 + 2 * LB_ADDRESSES


def project_needs(cfg: Config, vm: compute_v1.MachineType, node: compute_v1.MachineType) -> dict[str, float]:
    """What the run consumes of the project-wide quotas (docs/facts.md section 6)."""
    return {"NETWORKS": 0 if cfg.network else 1, "FIREWALLS": len(firewall.PURPOSES) + GKE_FIREWALLS,
            "CPUS_ALL_REGIONS": needs(cfg, vm, node)["CPUS"]}


def quota_problems(cfg: Config, region: compute_v1.Region, vm: compute_v1.MachineType,
                   node: compute_v1.MachineType) -> list[str]:
    return _short(cfg.region, region.quotas, needs(cfg, vm, node))


def _short(where: str, quotas: object, wanted: dict[str, float]) -> list[str]:
    """One line per quota with less free than the run needs."""
    have = {q.metric: q for q in quotas}  # type: ignore[attr-defined]
    out = []
    for metric, need in wanted.items():
        q = have.get(metric)
        if q is not None and q.limit - q.usage < need:
            out.append(f"quota {metric} in {where}: the run needs {need:g}, {q.limit - q.usage:g} free "
                       f"(limit {q.limit:g}, in use {q.usage:g}); raise it or {_FEWER.get(metric, _FEWER['CPUS'])}")
    return out


_FEWER = {"CPUS": "use smaller machines / fewer nodes", "NETWORKS": "delete unused networks (or pass --network)",
          "FIREWALLS": "delete unused firewall rules"}
