"""The Istioctl seam: istioctl for the chosen version, fetched from the release archive (its samples kept
for the drift report), checked against its .sha256, cached per version; run with the cluster's
temporary kubeconfig and an allowlisted environment (nothing of the runner's credentials leaks into it).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tarfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from meshvm import downloads
from meshvm.seams import CommandFailed, Result

log = logging.getLogger(__name__)
# What istioctl may see of the runner's environment: no cloud credentials, no KUBECONFIG.
ENV_ALLOW = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "HTTPS_PROXY", "NO_PROXY")


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "meshvm"


def acquire(version: str, release_url: str, cache: Path, mirrors: Sequence[str] = (),
            samples: Sequence[str] = ()) -> Path:
    """The istioctl binary for `version`: from the cache, else the release archive (checked against its
    .sha256), from which `samples` (paths under its samples/) are kept beside it for the drift report."""
    folder = cache / "istio" / version
    binary = folder / "istioctl"  # written last: its presence says the folder is complete
    name = f"istio-{version}-linux-amd64.tar.gz"
    cached = binary.is_file() and os.access(binary, os.X_OK)
    if cached and all((folder / "samples" / p).is_file() for p in samples):
        return binary
    urls = [f"{base}/{version}/{name}" for base in (release_url, *mirrors)]
    archive = downloads.fetch_verified(urls, folder / name)  # the cached archive, when its checksum holds
    top = f"istio-{version}"
    with tarfile.open(archive) as tar:
        for path in samples:  # a sample the release no longer has is the drift report's news, not an error
            if (member := _member(tar, f"{top}/samples/{path}")) is not None:
                _extract(tar, member, folder / "samples" / path)
        if cached:
            return binary
        member = _member(tar, f"{top}/bin/istioctl")
        if member is None:
            raise downloads.DownloadFailed(f"infrastructure: {name} holds no {top}/bin/istioctl")
        _extract(tar, member, binary, mode=0o755)
    return binary


def samples_of(binary: Path) -> Path:
    """Where acquire kept the release's samples."""
    return binary.parent / "samples"


def _member(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo | None:
    try:
        member = tar.getmember(name)
    except KeyError:
        return None
    return member if member.isfile() else None


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, mode: int = 0o644) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with tar.extractfile(member) as src, open(tmp, "wb") as out:  # type: ignore[union-attr]
        out.write(src.read())
    tmp.chmod(mode)
    tmp.replace(dest)


class IstioctlCli:
    def __init__(self, binary: Path, kubeconfig: Callable[[], Path], environ: Mapping[str, str]):
        """`kubeconfig` is called before every run: it rewrites the file with a fresh token."""
        self.binary, self._kubeconfig = binary, kubeconfig
        self._env = {k: v for k, v in environ.items() if k in ENV_ALLOW}

    def run(self, args: Sequence[str], *, step: str, timeout: float = 300, stdin: str | None = None,
            check: bool = True, cluster: bool = True) -> Result:
        """`cluster=False`: a command that talks to no cluster (no kubeconfig is written)."""
        argv = [str(self.binary), *args, *([f"--kubeconfig={self._kubeconfig()}"] if cluster else [])]
        log.debug("[%s] $ istioctl %s", step, " ".join(args))
        try:
            p = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                               env=self._env, check=False)
        except subprocess.TimeoutExpired as e:
            raise CommandFailed(step, f"istioctl {' '.join(args)}",
                                Result(-1, "", f"no exit after {timeout:.0f}s: {e.stderr!s}")) from None
        result = Result(p.returncode, p.stdout, p.stderr)
        for line in (p.stderr or "").splitlines()[-20:]:
            log.debug("[%s] istioctl| %s", step, line)
        if check and not result.ok:
            raise CommandFailed(step, f"istioctl {' '.join(args)}", result)
        return result

    def version(self) -> str:
        out = self.run(["version", "--remote=false", "-o", "json"], step="istioctl version", timeout=30, cluster=False)
        return str(json.loads(out.stdout)["clientVersion"]["version"])
