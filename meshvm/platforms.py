"""The platform a run targets, chosen once: what differs between Google Cloud and the lab.

Everything else (every create, wait and teardown) is the same gcp code, handed the Config the
platform's `start()` returns. On `gcp` nothing of the lab is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from meshvm.config import Config


class Platform(Protocol):
    name: str
    leftover_note: str  # what an interrupted teardown leaves besides the ledger's resources ("" if nothing)
    ephemeral: bool  # all it runs on goes when it stops (the lab): a kept run's SSH key is not kept either

    def start(self) -> Config: ...  # the effective settings (the lab's: pointed at the local cloud)

    def stop(self) -> None: ...

    def dumps(self) -> dict[str, Callable[[], str]]: ...  # the platform's own side of a failure dump

    def report(self, folder: Path) -> None: ...  # its own report of the run, written before teardown

    def istioctl(self, version: str, folder: Path) -> Path: ...

    def release_samples(self, version: str) -> Path | None: ...  # the release archive's samples/ (None: no archive)

    def sidecar_package(self, version: str, folder: Path) -> Path: ...

    def ratings_source(self, version: str) -> Path: ...

    def guard(self) -> Callable[[str], None] | None: ...  # checks an address before the run connects to it


def choose(cfg: Config, workdir: Path) -> Platform:
    """The run's platform, by --platform."""
    if cfg.platform == "lab":
        from meshvm.lab.platform import LabPlatform  # the lab only: never on the gcp path

        return LabPlatform(cfg, workdir)
    from meshvm.gcp.platform import GcpPlatform

    return GcpPlatform(cfg)
