"""`--platform gcp`: Google Cloud as configured; the release artefacts downloaded and checked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from meshvm import downloads, drift
from meshvm.config import Config
from meshvm.istioctl import acquire, cache_dir, samples_of


class GcpPlatform:
    name = "gcp"
    leftover_note = ""
    ephemeral = False

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def start(self) -> Config:
        return self.cfg

    def stop(self) -> None:
        return None

    def dumps(self) -> dict[str, Callable[[], str]]:
        return {}

    def report(self, folder: Path) -> None:
        return None  # nothing of its own to report: the run's reports say it all

    def istioctl(self, version: str, folder: Path) -> Path:
        return acquire(version, self.cfg.istio_release_url, cache_dir())

    def release_samples(self, version: str) -> Path | None:
        """The samples the drift report compares, from the archive istioctl came from (kept in the cache)."""
        return samples_of(acquire(version, self.cfg.istio_release_url, cache_dir(), samples=drift.PATHS))

    def sidecar_package(self, version: str, folder: Path) -> Path:
        urls = self.cfg.sidecar_urls(version)
        return downloads.fetch_verified(urls, cache_dir() / "istio-sidecar" / version / urls[0].rsplit("/", 1)[1])

    def ratings_source(self, version: str) -> Path:
        return self.cfg.ratings_source or downloads.bookinfo_ratings(version, cache_dir())

    def guard(self) -> Callable[[str], None] | None:
        return None  # the far side is Google's
