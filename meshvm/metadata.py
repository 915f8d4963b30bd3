"""metadata.json: the versions that really ran, written as each becomes known (a failed run keeps
what it learnt). The Istio ones must equal the version under test, or the stage that saw them fails."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

from meshvm import redact


class VersionMismatch(Exception):
    pass


class Metadata:
    def __init__(self, path: Path, requested_istio: str):
        self.path, self.requested = path, requested_istio
        self._data: dict[str, str] = {"requested_istio": requested_istio, "suite_commit": suite_commit()}
        self._lock = threading.Lock()
        self._write()

    def note(self, key: str, value: str) -> None:
        with self._lock:
            self._data[key] = value
            self._write()

    def istio(self, key: str, value: str) -> None:
        """An Istio version the run observed: recorded, then required to be the one under test."""
        self.note(key, value)
        if value != self.requested:
            raise VersionMismatch(f"{key} is {value}, the run tests Istio {self.requested}")

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(redact.scrub(json.dumps(self._data, indent=2, sort_keys=True)) + "\n")


def suite_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, text=True,
                             capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def image_tag(image: str) -> str:
    return image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
