"""The parsing of the settings that need more than one check (config.resolve's helpers): each adds one
line per problem to `p` and returns the value the Config holds."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from meshvm import validate as v
from meshvm.naming import RUN_ID_RE, Names, new_run_id
from meshvm.problems import Problems
from meshvm.settings import BY_FIELD
from meshvm.stages import ALIASES, BY_NAME, STAGE_NAMES, STAGES

Raw = Mapping[str, Any]  # field -> str | list[str] | bool | None


def names(p: Problems, raw: Raw, now: datetime) -> Names:
    reuse, run_id = raw["reuse"], raw["run_id"]
    rid = reuse or run_id or new_run_id(now)
    ok = all(p.check(f, raw[f], v.matches(RUN_ID_RE, raw[f], "a run id: lowercase letters, digits "
                                          "and '-', at most 32 characters"))
             for f in ("run_id", "reuse") if raw[f])
    names = Names.derive(rid, raw["cluster_name"], raw["vm_name"])
    if ok or raw["cluster_name"]:  # a bad run id is reported once, not again through derived names
        p.check("cluster_name", names.cluster, v.rfc1035(names.cluster, 40))
    if ok or raw["vm_name"]:
        p.check("vm_name", names.vm, v.rfc1035(names.vm, 63))
    return names


def ranges(p: Problems, raw: Raw) -> tuple[str, str, str]:
    fields = ("subnet_range", "pod_range", "service_range")
    ok = [f for f in fields if p.check(f, raw[f], v.cidr(raw[f], private=True))]
    for i, a in enumerate(ok):
        for b in ok[i + 1:]:
            if v.overlap(raw[a], raw[b]):
                p.add(b, raw[b], f"overlaps {BY_FIELD[a].option} {raw[a]}")
    return raw["subnet_range"], raw["pod_range"], raw["service_range"]


def ssh_ranges(p: Problems, raw: Raw) -> tuple[str, ...]:
    ranges = tuple(raw["ssh_source_ranges"] or ())
    for r in ranges:
        if p.check("ssh_source_ranges", r, v.cidr(r)) and v.prefix_len(r) < 8 \
                and not raw["allow_ssh_from_anywhere"]:
            p.add("ssh_source_ranges", r, "opens SSH to a large part of the internet (wider than /8); pass "
                  "--allow-ssh-from-anywhere / E2E_ALLOW_SSH_FROM_ANYWHERE=1 if you really mean it")
    return ranges


def listing(p: Problems, value: str) -> str:
    """https, or a local file (an air-gapped mirror of the listing; the self-tests' stand-in)."""
    if value.startswith("file:///"):
        if Path(value[len("file://"):]).is_file():
            return value
        p.add("istio_release_listing", value, "names no file")
        return ""
    return p.url("istio_release_listing", value) or ""


def ratings_source(p: Problems, value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    lacking = [f for f in ("ratings.js", "package.json") if not (path / f).is_file()]
    if lacking:
        p.add("ratings_source", value, f"must be a folder holding {' and '.join(lacking)}")
    return path


def artifacts(p: Problems, raw: Raw, run_id: str, now: datetime) -> Path:
    # A --reuse run reports beside the kept run's reports, never over them.
    own = f"{run_id}-reuse-{now:%Y%m%dt%H%M%S}" if raw["reuse"] else run_id
    path = Path(raw["artifacts_dir"] or Path("artifacts") / own).expanduser().absolute()
    existing = next((a for a in (path, *path.parents) if a.exists()), Path("/"))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        p.add("artifacts_dir", str(path), f"is not writable ({existing} does not accept new files)")
    return path


def upgrade_to(p: Problems, value: str | None, upgrade_run: bool) -> str | None:
    """Required by an upgrade run (tests/upgrade), refused elsewhere: a run never ignores a setting."""
    if not upgrade_run:
        if value:
            p.add("upgrade_to", value, "is for an upgrade run only (nox -s upgrade, which runs tests/upgrade)")
        return None
    if not value:
        p.add("upgrade_to", "", "is required by an upgrade run: the release to move to, e.g. --to 1.31")
        return None
    return value if p.check("upgrade_to", value, v.istio_version(value)) else None


def until(p: Problems, value: str | None) -> str | None:
    if not value:
        return None
    return p.choice("until", ALIASES.get(value, value), STAGE_NAMES) if value not in ALIASES else ALIASES[value]


def deadlines(p: Problems, items: list[str]) -> dict[str, int]:
    out = {s.name: s.deadline for s in STAGES}
    for item in items:
        stage, _, secs = item.partition("=")
        if stage not in BY_NAME:
            p.add("deadline", item, f"names no stage; stages are: {', '.join(STAGE_NAMES)}")
            continue
        n = p.integer("deadline", secs, 10, 4 * 3600, shown=item)
        if n is not None:
            out[stage] = n
    return out


def path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None
