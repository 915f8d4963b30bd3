"""Installs the lab's STAND-IN istioctl (standins/istioctl.py) as an executable for a version."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "standins" / "istioctl.py"


def install_istioctl_standin(version: str, folder: Path, install_s: float = 0.0) -> Path:
    """An `istioctl` in `folder` reporting `version`; it runs with this interpreter (it needs the
    kubernetes client) and no other environment than what IstioctlCli allows. `install_s`: how long
    its `install` polls the control plane (standins/istioctl.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    binary = folder / "istioctl"
    binary.write_text("#!/bin/sh\n# lab STAND-IN for istioctl\n"
                      f"LAB_ISTIOCTL_VERSION={shlex.quote(version)} LAB_ISTIOCTL_INSTALL_S={install_s:g} exec {shlex.quote(sys.executable)} "
                      f"{shlex.quote(str(SCRIPT))} \"$@\"\n")
    binary.chmod(0o755)
    return binary
