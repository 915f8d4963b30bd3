"""`--istio-version X.Y`: the newest patch of that minor, from Istio's release listing, when the run
starts (shown by --plan, recorded in metadata.json). Users run patches, not a pinned one.

The listing is GitHub's releases API for istio/istio (JSON: `tag_name`, `draft`, `prerelease`);
Istio's own download script reads the same releases (`release/downloadIstioCandidate.sh` at 1.30.3,
which takes the newest of all). Drafts and pre-releases never count. On the lab the listing is a
local stand-in file (`meshvm/lab/standins/releases.json`).
"""

from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import replace

from meshvm import validate as v
from meshvm.config import Config

TIMEOUT_S = 20
PLAN_TIMEOUT_S = 5


class ListingUnavailable(Exception):
    """The listing could not be read, or holds no release of the minor: one line, with its URL."""


def newest_patch(minor: str, listing: str, timeout: float = TIMEOUT_S) -> str:
    try:
        with urllib.request.urlopen(listing, timeout=timeout) as r:  # noqa: S310 (https, or the lab's file)
            releases = json.loads(r.read())
    except (OSError, ValueError) as e:
        raise ListingUnavailable(f"Istio's release listing {listing} could not be read ({e})") from None
    rx = re.compile(rf"^{re.escape(minor)}\.(\d+)$")
    patches = [int(m[1]) for r in releases if isinstance(r, dict) and not r.get("draft") and not r.get("prerelease")
               and (m := rx.match(str(r.get("tag_name") or "")))]
    if not patches:
        raise ListingUnavailable(f"Istio's release listing {listing} holds no release {minor}.x")
    return f"{minor}.{max(patches)}"


def resolve_version(cfg: Config, timeout: float = TIMEOUT_S) -> Config:
    """The config with a minor replaced by its newest patch; an exact version is kept as it is."""
    if v.is_minor(cfg.istio_version):
        cfg = replace(cfg, istio_version=newest_patch(cfg.istio_version, cfg.istio_release_listing, timeout),
                      istio_requested=cfg.istio_version)
    if cfg.upgrade_to and v.is_minor(cfg.upgrade_to):  # an upgrade run's second release, the same way
        cfg = replace(cfg, upgrade_to=newest_patch(cfg.upgrade_to, cfg.istio_release_listing, timeout),
                      upgrade_requested=cfg.upgrade_to)
    return cfg
