"""Builds the lab's STAND-IN istio-sidecar package (standins/sidecar) with dpkg-deb.

The package also carries standins/meshwire.py and standins/istiostats.py (the data-plane pieces the
node side shares) in /usr/local/lib/istio-standin/, where the agent stand-in imports them from."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

TREE = Path(__file__).resolve().parent / "standins" / "sidecar"
SHARED = ("meshwire.py", "istiostats.py")  # from standins/
LIB_DIR = "usr/local/lib/istio-standin"  # the agent's sys.path entry (pilot-agent)


def build_sidecar_deb(version: str, out_dir: Path) -> Path:
    """A real .deb named like Istio's, versioned like the release under test."""
    root = out_dir / "istio-sidecar-root"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(TREE, root, symlinks=True,  # no bytecode left by a local run
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    control = root / "DEBIAN" / "control.in"
    (root / "DEBIAN" / "control").write_text(control.read_text().replace("@VERSION@", version))
    control.unlink()
    for part in ("usr/local/lib", LIB_DIR):
        (root / part).mkdir(exist_ok=True)
        (root / part).chmod(0o755)
    for f in SHARED:
        shutil.copyfile(TREE.parent / f, root / LIB_DIR / f)
    (root / LIB_DIR / "VERSION").write_text(version + "\n")  # what `pilot-agent version` reports
    for f in (*SHARED, "VERSION"):
        (root / LIB_DIR / f).chmod(0o644)
    deb = out_dir / "istio-sidecar.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
                   check=True, capture_output=True, text=True, timeout=60)
    shutil.rmtree(root)
    return deb
