"""Read-only checks before anything is created: project, zones, machine types, image family, quotas.
Every problem is one line; all of them are reported together."""

from __future__ import annotations

from google.cloud import compute_v1

from meshvm.config import Config
from meshvm.deadlines import Deadline
from meshvm.gcp import errors
from meshvm.gcp.clients import Clients
from meshvm.gcp.instance import IMAGE_PROJECT

LB_ADDRESSES = 2  # the ingress and east-west gateways' LoadBalancer IPs


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
    if probe(f"project {p}", c.compute(compute_v1.ProjectsClient).get, project=p) is None:
        raise PreflightFailed(problems)  # nothing else can be read
    for z in cfg.zones:
        probe(f"zone {z}", c.compute(compute_v1.ZonesClient).get, project=p, zone=z)
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
    if problems:
        raise PreflightFailed(problems)


def needs(cfg: Config, vm: compute_v1.MachineType, node: compute_v1.MachineType) -> dict[str, float]:
    """What the run consumes of the regional quotas that bite (FACTS section 3)."""
    return {"CPUS": vm.guest_cpus + cfg.node_count * node.guest_cpus,
            "IN_USE_ADDRESSES": 1 + cfg.node_count + LB_ADDRESSES,  # VM + public nodes + gateways
            "SSD_TOTAL_GB": cfg.node_count * cfg.node_disk_gb}  # node disks are pd-balanced


def quota_problems(cfg: Config, region: compute_v1.Region, vm: compute_v1.MachineType,
                   node: compute_v1.MachineType) -> list[str]:
    quotas = {q.metric: q for q in region.quotas}
    out = []
    for metric, need in needs(cfg, vm, node).items():
        q = quotas.get(metric)
        if q is not None and q.limit - q.usage < need:
            out.append(f"quota {metric} in {cfg.region}: the run needs {need:g}, {q.limit - q.usage:g} free "
                       f"(limit {q.limit:g}, in use {q.usage:g}); raise it or use smaller machines / fewer nodes")
    return out
