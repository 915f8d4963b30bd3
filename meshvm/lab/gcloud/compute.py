"""Compute Engine v1 of the stand-in: projects, zones, regions (quotas), machine types, image
families, networks, subnetworks, firewalls, forwarding rules, instances, guest attributes and
zone/region/global operations. Objects are the JSON bodies the clients send, plus what Google adds."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from meshvm.lab.gcloud.backing import ComputeBacking
from meshvm.lab.gcloud.faults import ApiError, Faults, conflict, not_found
from meshvm.lab.gcloud.operations import Op, Operations

MACHINE_CPUS = {"n1-standard-1": 1, "n1-standard-2": 2, "n1-standard-4": 4, "e2-medium": 2,
                "e2-standard-2": 2, "e2-standard-4": 4, "e2-standard-8": 8}
IMAGE_FAMILIES = ("ubuntu-2404-lts-amd64", "ubuntu-2204-lts")


@dataclass
class World:
    """What exists in the stand-in's (single) project."""

    project: str
    zones: tuple[str, ...] = ("us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f")
    quotas: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        "CPUS": (24.0, 0.0), "IN_USE_ADDRESSES": (8.0, 0.0), "SSD_TOTAL_GB": (500.0, 0.0)})
    project_quotas: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        "NETWORKS": (15.0, 0.0), "FIREWALLS": (200.0, 0.0), "CPUS_ALL_REGIONS": (32.0, 0.0)})
    objects: dict[str, dict] = field(default_factory=dict)  # "<collection path>/<name>" -> body
    lock: threading.RLock = field(default_factory=threading.RLock)
    # network name -> time.monotonic() until which deleting it or its subnetworks answers 400
    # resourceNotReady: GKE still releases the deleted cluster's hold on them (docs/facts.md section 6)
    settling: dict[str, float] = field(default_factory=dict)
    # IAM and the organisation (the preflight's policy checks): service account -> the run's permissions
    # on it (absent: all it asks), constraint -> its effective policy on the project (absent: none)
    sa_permissions: dict[str, list[str]] = field(default_factory=dict)
    org_policies: dict[str, dict] = field(default_factory=dict)
    settle_s: float = 3.0


class Compute:
    def __init__(self, world: World, ops: Operations, faults: Faults, backing: ComputeBacking,
                 base_url: Callable[[], str]) -> None:
        self.w, self.ops, self.faults, self.backing, self.base = world, ops, faults, backing, base_url
        self._ids = itertools.count(1000)

    # --- reference data -------------------------------------------------------------------------
    def project(self, project: str) -> dict:
        self._project(project)
        return {"kind": "compute#project", "name": project, "id": "123",
                "quotas": [{"metric": m, "limit": lim, "usage": use} for m, (lim, use) in self.w.project_quotas.items()]}

    def zone(self, project: str, zone: str) -> dict:
        self._zone(project, zone)
        return {"kind": "compute#zone", "name": zone, "status": "UP", "region": self._link(f"regions/{_region(zone)}")}

    def region(self, project: str, region: str) -> dict:
        self._project(project)
        zones = [z for z in self.w.zones if _region(z) == region]
        if not zones:
            raise not_found(f"projects/{project}/regions/{region}")
        return {"kind": "compute#region", "name": region, "status": "UP", "zones": [self._link(f"zones/{z}") for z in zones],
                "quotas": [{"metric": m, "limit": lim, "usage": use} for m, (lim, use) in self.w.quotas.items()]}

    def machine_type(self, project: str, zone: str, machine_type: str) -> dict:
        self._zone(project, zone)
        if machine_type not in MACHINE_CPUS:
            raise not_found(f"projects/{project}/zones/{zone}/machineTypes/{machine_type}")
        return {"kind": "compute#machineType", "name": machine_type, "guestCpus": MACHINE_CPUS[machine_type],
                "memoryMb": 3840 * MACHINE_CPUS[machine_type], "zone": zone}

    def image_family(self, project: str, family: str) -> dict:
        if project != "ubuntu-os-cloud" or family not in IMAGE_FAMILIES:
            raise not_found(f"projects/{project}/global/images/family/{family}")
        return {"kind": "compute#image", "name": f"{family}-v20260101", "family": family, "status": "READY"}

    # --- generic collections ----------------------------------------------------------------------
    def insert(self, method: str, project: str, scope: str, coll: str, body: dict,
               work: Callable[[dict], None] | None = None, check: Callable[[dict], None] | None = None) -> dict:
        self._project(project)
        name = body.get("name", "")
        key = f"{scope}/{coll}/{name}"
        with self.w.lock:
            if key in self.w.objects:
                raise conflict(f"projects/{project}/{key}")
            if check:
                check(body)
            obj = {**body, "id": str(next(self._ids)), "selfLink": self._link(key),
                   "creationTimestamp": "2026-01-01T00:00:00.000-07:00"}
            if scope != "global":  # Google answers with the full link of the zone or region
                obj[scope.split("/")[0][:-1]] = self._link(scope)
            self.w.objects[key] = obj
        fail = self.faults.take(method, in_operation=True)

        def run() -> None:
            if fail is not None:  # accepted, then failed: Google leaves nothing behind
                raise ApiError(fail.status, fail.reason, fail.message)
            if work:
                work(obj)

        def failed_cleanup() -> None:
            with self.w.lock:
                self.w.objects.pop(key, None)

        return self.ops.start("compute", self._op_fields("insert", key, scope),
                              _undo_on_error(run, failed_cleanup)).json()

    def get(self, project: str, scope: str, coll: str, name: str) -> dict:
        self._project(project)
        with self.w.lock:
            obj = self.w.objects.get(f"{scope}/{coll}/{name}")
        if obj is None:
            raise not_found(f"projects/{project}/{scope}/{coll}/{name}")
        return obj

    def list(self, project: str, scope: str, coll: str, flt: str = "") -> dict:
        self._project(project)
        prefix = f"{scope}/{coll}/"
        with self.w.lock:
            items = [o for k, o in self.w.objects.items() if k.startswith(prefix) and _matches(o, flt)]
        return {"kind": f"compute#{coll}List", "items": items}

    def aggregated(self, project: str, coll: str, flt: str = "") -> dict:
        self._project(project)
        out: dict[str, dict] = {}
        with self.w.lock:
            for k, o in self.w.objects.items():
                scope, _, rest = k.rpartition(f"/{coll}/")
                if scope and "/" not in rest and _matches(o, flt):
                    out.setdefault(scope, {coll: []})[coll].append(o)
        return {"kind": f"compute#{coll}AggregatedList", "items": out}

    def delete(self, method: str, project: str, scope: str, coll: str, name: str,
               work: Callable[[dict], None] | None = None, check: Callable[[dict], None] | None = None) -> dict:
        obj = self.get(project, scope, coll, name)
        key = f"{scope}/{coll}/{name}"
        if check:
            check(obj)

        def run() -> None:
            if work:
                work(obj)
            with self.w.lock:
                self.w.objects.pop(key, None)

        return self.ops.start("compute", self._op_fields("delete", key, scope), run,
                              self.faults.take(method, in_operation=True)).json()

    def update(self, method: str, project: str, scope: str, coll: str, name: str, changes: dict) -> dict:
        """setLabels and patch: the fields in `changes` replace the object's (an operation, as Google's)."""
        obj = self.get(project, scope, coll, name)

        def run() -> None:
            with self.w.lock:
                obj.update(changes)

        return self.ops.start("compute", self._op_fields(method.rsplit(".", 1)[-1], f"{scope}/{coll}/{name}", scope),
                              run, self.faults.take(method, in_operation=True)).json()

    # --- operations -------------------------------------------------------------------------------
    def operation(self, project: str, name: str, wait: bool) -> dict:
        self._project(project)
        op: Op = self.ops.wait(name) if wait else self.ops.get(name)
        if op.style != "compute":
            raise not_found(f"operations/{name}")
        return op.json()

    # --- helpers ------------------------------------------------------------------------------------
    def _op_fields(self, kind: str, key: str, scope: str) -> dict:
        fields = {"operationType": kind, "targetLink": self._link(key), "targetId": "1"}
        if scope.startswith("zones/"):
            fields["zone"] = self._link(scope)
        elif scope.startswith("regions/"):
            fields["region"] = self._link(scope)
        return fields

    def _link(self, path: str) -> str:
        return f"{self.base()}/compute/v1/projects/{self.w.project}/{path}"

    def _project(self, project: str) -> None:
        if project != self.w.project:
            raise ApiError(404, "notFound", f"The resource 'projects/{project}' was not found")

    def _zone(self, project: str, zone: str) -> None:
        self._project(project)
        if zone not in self.w.zones:
            raise not_found(f"projects/{project}/zones/{zone}")


def _region(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def _undo_on_error(run: Callable[[], None], undo: Callable[[], None]) -> Callable[[], None]:
    def wrapped() -> None:
        try:
            run()
        except BaseException:
            undo()
            raise
    return wrapped


def _matches(obj: dict, flt: str) -> bool:
    """The subset of list filters the suite uses: `labels.KEY=VALUE` (also `=` with spaces)."""
    if not flt:
        return True
    key, _, value = (p.strip() for p in flt.partition("="))
    if key.startswith("labels."):
        return obj.get("labels", {}).get(key[7:]) == value.strip('"')
    return str(obj.get(key, "")) == value.strip('"')
