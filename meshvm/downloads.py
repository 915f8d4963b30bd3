"""Release artifacts fetched on the runner: tried from an ordered list of URLs, checked against the
published `.sha256` (`<hex> <name>`: the first token), cached per version, locked and atomic.

A failure here is the infrastructure's (a mirror down, a file not published), not Istio's: it
raises DownloadFailed, which says so.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)
TIMEOUT_S = 60  # per request; a stalled mirror must not hang the run
CHUNK = 1 << 20


class DownloadFailed(Exception):
    """Infrastructure failure: no URL gave a file matching its published checksum."""


def fetch_verified(urls: Sequence[str], dest: Path, timeout: float = TIMEOUT_S) -> Path:
    """Return dest, downloading it from the first URL whose file matches its .sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(dest.name + ".lock"), "w") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)  # another run may be fetching the same version
        if dest.is_file() and _cached_ok(dest):
            return dest
        failures = []
        for url in urls:
            try:
                _download(url, dest, timeout)
                return dest
            except (OSError, ValueError) as e:
                failures.append(f"{url}: {e}")
                log.warning("download failed, trying the next source: %s: %s", url, e)
    raise DownloadFailed(f"infrastructure: could not fetch {dest.name} from any source: "
                         + "; ".join(failures))


def _download(url: str, dest: Path, timeout: float) -> None:
    expected = _get(url + ".sha256", timeout).decode().split()[0].lower()
    if len(expected) != 64:
        raise ValueError(f"{url}.sha256 holds no sha256")
    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as out:  # noqa: S310
        while chunk := r.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != expected:
        tmp.unlink()
        raise ValueError(f"checksum mismatch: got {digest.hexdigest()}, published {expected}")
    dest.with_name(dest.name + ".sha256").write_text(expected + "\n")
    os.replace(tmp, dest)
    log.info("fetched %s (sha256 %s)", url, expected)


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310
        return r.read(4096)


def _cached_ok(dest: Path) -> bool:
    recorded = dest.with_name(dest.name + ".sha256")
    if not recorded.is_file():
        return False
    digest = hashlib.sha256()
    with open(dest, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest() == recorded.read_text().strip()


RATINGS_FILES = ("ratings.js", "package.json")
RAW_BASE = "https://raw.githubusercontent.com/istio/istio"


def bookinfo_ratings(version: str, cache: Path, base: str = RAW_BASE, timeout: float = TIMEOUT_S) -> Path:
    """BookInfo's ratings app at the release tag (not in the release archive; docs/facts.md section 2).

    GitHub publishes no checksum for these two files: they are fetched over https and cached.
    """
    folder = cache / "bookinfo-ratings" / version
    if all((folder / f).is_file() for f in RATINGS_FILES):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name in RATINGS_FILES:
        url = f"{base}/{version}/samples/bookinfo/src/ratings/{name}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310
                data = r.read()
        except (OSError, ValueError) as e:
            raise DownloadFailed(f"infrastructure: could not fetch {url}: {e}") from None
        tmp = folder / (name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, folder / name)
    return folder
