"""Tests that need root (namespaces, iptables, systemd VMs): skipped without it on a developer's
machine, but under CI a skip would hide a proof, so there they fail."""

from __future__ import annotations

import os
import shutil

import pytest


def require_root(why: str = "lab tests need root: they build network namespaces, iptables rules and systemd VMs",
                 *tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if os.geteuid() == 0 and not missing:
        return
    reason = why + (f" (missing: {', '.join(missing)})" if missing else "")
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; under CI it must run, not skip", pytrace=False)
    pytest.skip(reason)
