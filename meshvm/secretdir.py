"""A 0700 directory outside the artifacts for the run's secrets (istio-token, SSH key, kubeconfig).

Whatever is read back from it is registered with the redaction registry; the directory is removed
at close, so nothing secret outlives the run on the runner.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path

from meshvm import redact


def base_dir() -> Path:
    return Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()).resolve()


def remove_leftovers(run_id: str) -> list[Path]:
    """For the janitor: a killed (or kept, now deleted) run's secret dirs, which its teardown never removed."""
    try:
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        mounts = []
    # Never into a mount (a lab VM's root still mounted): only plain directories go.
    found = [d for d in sorted(base_dir().glob(f"meshvm-{run_id}-*"))
             if not any(m == str(d) or m.startswith(f"{d}/") for m in mounts)]
    for d in found:
        shutil.rmtree(d, ignore_errors=True)
    return found


class SecretDir:
    def __init__(self, run_id: str, artifacts_dir: Path):
        base = base_dir()
        if artifacts_dir.resolve() in (base, *base.parents):
            raise ValueError(f"secrets would land inside the artifacts dir {artifacts_dir}")
        self.path = Path(tempfile.mkdtemp(prefix=f"meshvm-{run_id}-", dir=base))  # mkdtemp: mode 0700

    def sub(self, name: str) -> Path:
        path = self.path / name
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def register_files(self, folder: Path, names: Collection[str] | None = None) -> None:
        """Make every file of a folder (e.g. the VM files) 0600 and register the content of those in
        `names` (default: all) as a secret."""
        for f in folder.iterdir():
            if f.is_file():
                f.chmod(0o600)
                if names is None or f.name in names:
                    redact.register(f.read_text(errors="replace"))

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
