"""A 0700 directory outside the artifacts for the run's secrets (istio-token, SSH key, kubeconfig).

Whatever is read back from it is registered with the redaction registry; the directory is removed
at close, so nothing secret outlives the run on the runner. A kept run (`--keep`) leaves it in place:
`--reuse` adopts it (the kept VM accepts only the kept run's SSH key), and closes it in turn unless
it is kept again; the janitor removes it with the run, and only once its owner is provably gone: the
owning run holds an exclusive lock on `.owner.lock` inside it for its whole life (the kernel drops
it when the process ends, however it ends), so a dir whose lock the janitor can take has no live
owner, whatever run ids repeat.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import shutil
import tempfile
import time
from collections.abc import Collection, Mapping
from pathlib import Path

from meshvm import redact

SSH_KEY = Path("ssh", "id_ed25519")  # inside the secret dir: the run's SSH key (meshvm.sshkeys)
OWNER_LOCK = ".owner.lock"
UNLOCKED_GRACE_S = 60  # a dir without its lock file yet: a run between mkdtemp and taking the lock


def base_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()).resolve()


def of_run(run_id: str, environ: Mapping[str, str] | None = None) -> list[Path]:
    """The secret dirs of exactly this run: `meshvm-<run id>-<mkdtemp's 8 characters>` (never those
    of a run whose id only starts with it, e.g. <run id>-1a2b)."""
    name = re.compile(rf"meshvm-{re.escape(run_id)}-[a-z0-9_]{{8}}")
    return sorted(d for d in base_dir(environ).glob(f"meshvm-{glob.escape(run_id)}-*") if name.fullmatch(d.name))


def kept(run_id: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """The secret dir a kept run left, holding its SSH key (the newest, should there be several)."""
    found = [d for d in of_run(run_id, environ) if (d / SSH_KEY).is_file()]
    return max(found, key=lambda d: d.stat().st_mtime, default=None)


def remove_leftovers(run_id: str) -> list[Path]:
    """For the janitor: a killed (or kept, now deleted) run's secret dirs, which its teardown never removed."""
    try:
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        mounts = []
    # Never into a mount (a lab VM's root still mounted), never a live run's: only plain directories go.
    found = [d for d in of_run(run_id) if not any(m == str(d) or m.startswith(f"{d}/") for m in mounts)]
    gone = [d for d in found if not owner_alive(d)]
    for d in gone:
        shutil.rmtree(d, ignore_errors=True)
    return gone


def owner_alive(d: Path) -> bool:
    """True unless the owner's lock can be taken (or, with no lock file, the dir is old)."""
    lock = d / OWNER_LOCK
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return time.time() - d.stat().st_mtime < UNLOCKED_GRACE_S
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class SecretDir:
    def __init__(self, run_id: str, artifacts_dir: Path, *, adopt: bool = False):
        """A new 0700 dir; with `adopt` the one a kept run of `run_id` left (`--reuse`), which must exist."""
        base = base_dir()
        if artifacts_dir.resolve() in (base, *base.parents):
            raise ValueError(f"secrets would land inside the artifacts dir {artifacts_dir}")
        found = kept(run_id) if adopt else None
        if adopt and found is None:
            raise FileNotFoundError(f"no kept secret dir meshvm-{run_id}-* with an SSH key under {base}")
        # mkdtemp: mode 0700
        self.path = found or Path(tempfile.mkdtemp(prefix=f"meshvm-{run_id}-", dir=base))
        self._owner = os.open(self.path / OWNER_LOCK, os.O_RDONLY | os.O_CREAT, 0o600)
        fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a kept dir another live run adopted: raises
        token = self.path / "vm_files" / "istio-token"  # the kept run's: a secret for this run's logs too
        if found and token.is_file():
            redact.register(token.read_text(errors="replace"))

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
        fd, self._owner = self._owner, -1  # never closed twice (a second close could hit a reused fd number)
        if fd >= 0:
            os.close(fd)
