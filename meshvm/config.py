"""Settings resolved once into a frozen, validated Config, passed down as an argument.

`gather` takes each setting from its option, else its `E2E_*` variable, else its default.
`resolve` parses and checks everything and raises ConfigError with one line per problem, before
anything is created. Nothing else reads the environment or pytest's config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from meshvm import config_fields as fields
from meshvm import upgrade_phases
from meshvm import validate as v
from meshvm.config_checks import contradictions
from meshvm.naming import Names, expiry_label
from meshvm.problems import Problems
from meshvm.settings import SETTINGS
from meshvm.stages import (
    EXERCISE_WAITS,
    RECIPE_EXERCISE_WAITS,
    STAGE_NAMES,
    TEARDOWN_DEADLINE,
    WIRED,
)

Raw = Mapping[str, Any]  # field -> str | list[str] | bool | None
LAB_PROJECT = "meshvm-lab"
LAB_TIMING_RE = re.compile(r"(fast|gcp(:(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?))?)\Z")  # meshvm.lab.timing
# On the lab, Istio's release listing is a local stand-in (the lab reaches nothing outside this machine).
LAB_RELEASE_LISTING = (Path(__file__).resolve().parent / "lab" / "standins" / "releases.json").as_uri()


class ConfigError(Exception):
    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Config:
    platform: str
    gcp_project: str | None
    gcp_access_token_file: Path | None
    zones: tuple[str, ...]
    network: str | None
    subnetwork: str | None
    subnet_range: str
    pod_range: str
    service_range: str
    ssh_source_ranges: tuple[str, ...]
    compute_endpoint: str | None
    container_endpoint: str | None
    iam_endpoint: str | None
    resourcemanager_endpoint: str | None
    release_channel: str
    cluster_version: str | None
    cluster_machine_type: str
    node_count: int
    node_disk_gb: int
    node_service_account: str | None
    vm_machine_type: str
    vm_image_family: str
    istio_version: str
    upgrade_to: str | None  # an upgrade run's second release (nox -s upgrade); None: not an upgrade run
    upgrade_strategy: str  # in-place | canary
    eastwest_lb: str
    wg_probe: bool
    token_duration: int
    exercise_deadline: int
    istio_release_url: str
    istio_release_listing: str
    istio_hub: str
    sidecar_base_url: str
    sidecar_fallback_urls: tuple[str, ...]
    ratings_source: Path | None
    bookinfo_image_prefix: str
    bookinfo_image_tag: str
    names: Names
    reuse: bool
    artifacts_dir: Path
    keep: str
    labels: Mapping[str, str]
    until: str | None
    fail_at: str | None
    sequential_stages: bool
    lab_timing: str  # lab only: meshvm.lab.timing
    deadlines: Mapping[str, int]
    plan: bool
    missing: tuple[str, ...] = field(default=())  # required settings not given (listed by --plan)
    istio_requested: str = ""  # the minor --istio-version named, once resolved to istio_version (meshvm.releases)
    upgrade_requested: str = ""  # the same for --to

    @property
    def run_id(self) -> str:
        return self.names.run_id

    @property
    def region(self) -> str:
        return self.zones[0].rsplit("-", 1)[0]

    def unwired(self) -> list[str]:
        """Stages this run asks for that the suite does not implement yet."""
        return [s for s in self.stages() if s not in WIRED]

    def stages(self) -> tuple[str, ...]:
        """The stages this run executes, honouring --until."""
        if self.until is None:
            return STAGE_NAMES
        return STAGE_NAMES[: STAGE_NAMES.index(self.until) + 1]

    def worst_case_s(self) -> int:
        """The longest this run may take: its stages' deadlines, the exercises' waits, teardown."""
        waits = RECIPE_EXERCISE_WAITS if self.upgrade_to else EXERCISE_WAITS  # an upgrade run: the four only
        exercises = self.exercise_deadline * waits if self.until is None else 0
        upgrade = upgrade_phases.worst_case_s(self.upgrade_strategy, self.exercise_deadline) if self.upgrade_to else 0
        return sum(self.deadlines[s] for s in self.stages()) + exercises + upgrade + TEARDOWN_DEADLINE

    def token_window(self) -> int:
        """Seconds from the istio-token's creation to the agent presenting it, at worst: the deadlines of
        vm_files and the stages after it, then exercise 1's (0 when the run stops before vm_files)."""
        run = self.stages()
        if "vm_files" not in run:
            return 0
        later = run[run.index("vm_files"):]
        return sum(self.deadlines[s] for s in later) + (self.exercise_deadline if self.until is None else 0)

    def sidecar_urls(self, version: str | None = None) -> list[str]:
        """istio-sidecar.deb of `version` (default: the resolved one under test) for the VM's architecture,
        from the base URL, then the explicit fallbacks, each beside its .sha256 (docs/facts.md section 6)."""
        name = "istio-sidecar-arm64.deb" if "arm64" in self.vm_image_family else "istio-sidecar.deb"
        version = version or self.istio_version
        return [f"{base}/{version}/deb/{name}" for base in (self.sidecar_base_url, *self.sidecar_fallback_urls)]

    def redacted(self) -> dict[str, str]:
        """The config as printed: settings only, no file contents, nothing secret is held here."""
        return {s.field: str(getattr(self, s.field, None)) for s in SETTINGS if hasattr(self, s.field)}


def gather(options: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Option if given, else the environment variable, else the default (as text)."""
    raw: dict[str, Any] = {}
    for s in SETTINGS:
        value = options.get(s.field)
        if value in (None, [], False):
            value = environ.get(s.env)
            if value is not None and s.kind in ("list", "map"):
                value = [p for p in value.replace(",", " ").split() if p]
            elif value is not None and s.kind == "flag":
                value = value.strip().lower() in ("1", "true", "yes", "on")
        raw[s.field] = s.default if value in (None, "", []) else value
    return raw


def resolve(raw: Raw, environ: Mapping[str, str], now: datetime | None = None,
            is_root: bool | None = None, upgrade_run: bool = False) -> Config:
    now = now or datetime.now(UTC)
    p = Problems()
    platform = p.choice("platform", raw["platform"])
    lab = platform == "lab"
    names = fields.names(p, raw, now)
    cfg = Config(platform=platform or "gcp", **_cloud(p, raw, lab), **_cluster(p, raw),
                 **_istio(p, raw, lab, upgrade_run), **_run(p, raw, names, now))
    missing = contradictions(p, cfg, raw, environ, os.geteuid() == 0 if is_root is None else is_root)
    if p.problems or (missing and not cfg.plan):
        raise ConfigError((missing if not cfg.plan else []) + p.problems)
    return replace(cfg, missing=tuple(missing))


def _cloud(p: Problems, raw: Raw, lab: bool) -> dict[str, Any]:
    """Where the run creates things: project, credentials, zones, network and ranges, API endpoints."""
    zones = tuple(raw["zone"] if isinstance(raw["zone"], list) else [raw["zone"]])
    for z in zones:
        p.check("zone", z, v.matches(v.ZONE, z, "a zone such as us-central1-a"))
    if len({z.rsplit("-", 1)[0] for z in zones}) > 1:
        p.add("zone", ",".join(zones), "all zones must be in one region (the subnetwork is regional)")
    ranges = fields.ranges(p, raw)
    return dict(
        gcp_project=raw["gcp_project"] or (LAB_PROJECT if lab else None),
        gcp_access_token_file=fields.path(raw["gcp_access_token_file"]),
        zones=zones,
        network=p.name("network", raw["network"]),
        subnetwork=p.name("subnetwork", raw["subnetwork"]),
        subnet_range=ranges[0], pod_range=ranges[1], service_range=ranges[2],
        ssh_source_ranges=fields.ssh_ranges(p, raw),
        compute_endpoint=p.url("compute_endpoint", raw["compute_endpoint"]),
        container_endpoint=p.url("container_endpoint", raw["container_endpoint"]),
        iam_endpoint=p.url("iam_endpoint", raw["iam_endpoint"]),
        resourcemanager_endpoint=p.url("resourcemanager_endpoint", raw["resourcemanager_endpoint"]),
    )


def _cluster(p: Problems, raw: Raw) -> dict[str, Any]:
    """The GKE cluster and the VM."""
    return dict(
        release_channel=p.choice("release_channel", raw["release_channel"]),
        cluster_version=p.pattern("cluster_version", raw["cluster_version"], v.GKE_VERSION,
                                  "a GKE version such as 1.33 or 1.33.5-gke.1000"),
        cluster_machine_type=p.pattern("cluster_machine_type", raw["cluster_machine_type"],
                                       v.MACHINE_TYPE, "a machine type such as e2-standard-4"),
        node_count=p.integer("node_count", raw["node_count"], 1, 20),
        node_disk_gb=p.integer("node_disk_gb", raw["node_disk_gb"], 10, 2000),
        node_service_account=p.pattern("node_service_account", raw["node_service_account"], v.SA_EMAIL,
                                       "a service account email (name@project.iam.gserviceaccount.com)") or None,
        vm_machine_type=p.pattern("vm_machine_type", raw["vm_machine_type"], v.MACHINE_TYPE,
                                  "a machine type such as n1-standard-2"),
        vm_image_family=p.name("vm_image_family", raw["vm_image_family"]) or "",
    )


def _istio(p: Problems, raw: Raw, lab: bool, upgrade_run: bool) -> dict[str, Any]:
    """Istio and what the recipe installs: versions, the upgrade, downloads, images, the ratings app."""
    return dict(
        istio_version=raw["istio_version"] if p.check("istio_version", raw["istio_version"],
                                                      v.istio_version(raw["istio_version"])) else "",
        upgrade_to=fields.upgrade_to(p, raw["upgrade_to"], upgrade_run),
        upgrade_strategy=p.choice("upgrade_strategy", raw["upgrade_strategy"]),
        eastwest_lb=p.choice("eastwest_lb", raw["eastwest_lb"]),
        wg_probe=p.choice("wg_probe", raw["wg_probe"]) == "on",
        token_duration=p.integer("token_duration", raw["token_duration"], 600, 24 * 3600),
        istio_release_url=p.url("istio_release_url", raw["istio_release_url"]) or "",
        istio_release_listing=LAB_RELEASE_LISTING if lab else fields.listing(p, raw["istio_release_listing"]),
        istio_hub=p.pattern("istio_hub", raw["istio_hub"], v.IMAGE_PREFIX, "an image hub such as docker.io/istio"),
        sidecar_base_url=(p.url("sidecar_base_url", raw["sidecar_base_url"]) or "").rstrip("/"),
        sidecar_fallback_urls=tuple((p.url("sidecar_fallback_urls", u) or "").rstrip("/")
                                    for u in raw["sidecar_fallback_urls"] or ()),
        ratings_source=fields.ratings_source(p, raw["ratings_source"]),
        bookinfo_image_prefix=p.pattern("bookinfo_image_prefix", raw["bookinfo_image_prefix"],
                                        v.IMAGE_PREFIX, "an image prefix such as docker.io/istio/x"),
        bookinfo_image_tag=p.pattern("bookinfo_image_tag", raw["bookinfo_image_tag"], v.IMAGE_TAG,
                                     "an image tag"),
    )


def _run(p: Problems, raw: Raw, names: Names, now: datetime) -> dict[str, Any]:
    """The run itself: names and labels, reuse and keep, artifacts, stages, deadlines, timing."""
    return dict(
        names=names,
        reuse=bool(raw["reuse"]),
        artifacts_dir=fields.artifacts(p, raw, names.run_id, now),
        keep=p.choice("keep", raw["keep"]),
        labels=MappingProxyType(names.labels(
            expiry_label(now, p.integer("expires_hours", raw["expires_hours"], 1, 168) or 6))),
        until=fields.until(p, raw["until"]),
        fail_at=p.choice("fail_at", raw["fail_at"], STAGE_NAMES) if raw["fail_at"] else None,
        sequential_stages=bool(raw["sequential_stages"]),
        exercise_deadline=p.integer("exercise_deadline", raw["exercise_deadline"], 10, 3600),
        lab_timing=p.pattern("lab_timing", raw["lab_timing"], LAB_TIMING_RE,
                             "fast, gcp or gcp:FACTOR with 0 < FACTOR <= 1") or "fast",
        deadlines=MappingProxyType(fields.deadlines(p, raw["deadline"] or [])),
        plan=bool(raw["plan"]),
    )
