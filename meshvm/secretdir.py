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


class SecretDir:
    def __init__(self, run_id: str, artifacts_dir: Path):
        base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()).resolve()
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
