"""Descriptions that carry the run's labels, for resources that have none (networks, firewall rules)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from meshvm.config import Config

_LABELS = re.compile(r"\[((?:[a-z0-9_-]+=[a-z0-9_-]*\s*)+)\]\s*$")


def description(cfg: Config, why: str) -> str:
    labels = " ".join(f"{k}={v}" for k, v in sorted(cfg.labels.items()))
    return f"meshvm e2e run {cfg.run_id}: {why} [{labels}]"


def labels_of(description: str | None) -> dict[str, str]:
    """The labels a `description()` carries ({} for anything else)."""
    m = _LABELS.search(description or "")
    return dict(p.split("=", 1) for p in m.group(1).split()) if m else {}


def relabelled(description: str, labels: Mapping[str, str]) -> str:
    """A `description()` with its labels replaced."""
    shown = " ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return _LABELS.sub(f"[{shown}]", description) if _LABELS.search(description) else f"{description} [{shown}]"


def location_of(link: str, kind: str) -> str:
    """The `zones/<z>` / `regions/<r>` value of a link (a bare name is returned as is)."""
    parts = link.split("/")
    return parts[parts.index(kind) + 1] if kind in parts else parts[-1]


def expired(labels: Mapping[str, str], now_label: str) -> bool:
    """Expiry labels are UTC timestamps of one fixed format: they compare as text."""
    exp = labels.get("e2e-expires", "")
    return bool(exp) and exp < now_label
