"""Builds the lab's STAND-IN istio-sidecar package (standins/sidecar) with dpkg-deb."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

TREE = Path(__file__).resolve().parent / "standins" / "sidecar"


def build_sidecar_deb(version: str, out_dir: Path) -> Path:
    """A real .deb named like Istio's, versioned like the release under test."""
    root = out_dir / "istio-sidecar-root"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(TREE, root, symlinks=True)
    control = root / "DEBIAN" / "control.in"
    (root / "DEBIAN" / "control").write_text(control.read_text().replace("@VERSION@", version))
    control.unlink()
    deb = out_dir / "istio-sidecar.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
                   check=True, capture_output=True, text=True, timeout=60)
    shutil.rmtree(root)
    return deb
