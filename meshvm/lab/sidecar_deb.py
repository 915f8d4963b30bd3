"""Builds the lab's STAND-IN istio-sidecar package (standins/sidecar) with dpkg-deb.

The package also carries the stand-in agent's modules (standins/agentplane.py, envoyboot.py,
meshwire.py, istiostats.py, which the node side shares) in /usr/local/lib/istio-standin/, where the
agent imports them from, and /usr/local/bin/envoy, where Istio's package has its Envoy: a symbolic link
to the lab's upstream Envoy binary (envoy/binary.py), which the lab VM sees through its root overlay
(a 100 MB copy per package would cost more than it shows)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from meshvm.lab.envoy import binary

TREE = Path(__file__).resolve().parent / "standins" / "sidecar"
SHARED = ("agentplane.py", "envoyboot.py", "meshwire.py", "istiostats.py")  # from standins/
HIDDEN_IN_VM = ("/work", "/mnt", "/root", "/tmp", "/run", "/dev")  # noqa: S108  (vm-init.sh mounts over these)
LIB_DIR = "usr/local/lib/istio-standin"  # the agent's sys.path entry (pilot-agent)


def package_version(release: str) -> str:
    """The package's version as Istio's build makes it (PACKAGE_VERSION in tools/packaging/packaging.mk at
    1.30.3: leading letters and their '-' dropped, then the first '-': 1.31.0-rc.0 -> 1.31.0rc.0)."""
    return re.sub(r"^[a-z]*-", "", release).replace("-", "", 1)


def build_sidecar_deb(version: str, out_dir: Path) -> Path:
    """A real .deb named like Istio's, versioned like the release under test."""
    root = out_dir / "istio-sidecar-root"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(TREE, root, symlinks=True,  # no bytecode left by a local run
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    control = root / "DEBIAN" / "control.in"
    (root / "DEBIAN" / "control").write_text(control.read_text().replace("@VERSION@", package_version(version)))
    control.unlink()
    for part in ("usr/local/lib", LIB_DIR):
        (root / part).mkdir(exist_ok=True)
        (root / part).chmod(0o755)
    for f in SHARED:
        shutil.copyfile(TREE.parent / f, root / LIB_DIR / f)
    envoy = binary.path()
    if str(envoy).startswith(HIDDEN_IN_VM):
        raise RuntimeError(f"the lab's Envoy at {envoy} is hidden inside a lab VM: set MESHVM_ENVOY_CACHE elsewhere")
    (root / "usr/local/bin/envoy").symlink_to(envoy)
    (root / LIB_DIR / "VERSION").write_text(version + "\n")  # what `pilot-agent version` reports
    for f in (*SHARED, "VERSION"):
        (root / LIB_DIR / f).chmod(0o644)
    deb = out_dir / "istio-sidecar.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
                   check=True, capture_output=True, text=True, timeout=60)
    shutil.rmtree(root)
    return deb
