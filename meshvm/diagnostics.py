"""Diagnostics on failure: each component says what to dump (meshvm.recipe.sidecar for the VM,
meshvm.recipe.clusterdump for the cluster); this module runs those collectors, each with a timeout,
and writes their text, redacted and capped, under `<artifacts>/diagnostics/<test>/`.

A collector never raises into the run: its error or timeout becomes the file's text. Caps: bytes
per file, files per test, bytes per run (later failures of a long run still get a note).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from meshvm import redact

log = logging.getLogger(__name__)
Collectors = Mapping[str, Callable[[], str]]  # file name -> what to write into it

FILE_CAP = 256 * 1024
FILES_PER_TEST = 40
RUN_CAP = 16 * 1024 * 1024
COLLECTOR_TIMEOUT = 30.0
TEST_DEADLINE = 120.0  # one failed test's whole dump: teardown must not wait on diagnostics for long
_PRIVATE_KEY = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?(-----END \1PRIVATE KEY-----|\Z)", re.S)
# Output of these loggers would copy every dumped byte into run.log at DEBUG: quiet while dumping.
_CHATTY = ("meshvm.ssh", "meshvm.istioctl")


def sanitize(name: str, limit: int = 120) -> str:
    """A test's node id as one safe folder name: `tests/e2e/test_x.py::test_y[a]` -> `test_x.py__test_y_a_`."""
    base = name.split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base)[:limit] or "test"


def clean(text: str) -> str:
    """Registered secrets masked, and any PEM private key whatever its origin."""
    return _PRIVATE_KEY.sub(redact.MASK, redact.scrub(text))


class RunBudget:
    """The bytes all of a run's diagnostics may take."""

    def __init__(self, cap: int = RUN_CAP):
        self.left = cap
        self._lock = threading.Lock()

    def take(self, wanted: int) -> int:
        with self._lock:
            got = max(0, min(wanted, self.left))
            self.left -= got
            return got


class Dump:
    """One failed test's folder."""

    def __init__(self, folder: Path, budget: RunBudget, *, file_cap: int = FILE_CAP,
                 max_files: int = FILES_PER_TEST, seconds: float = TEST_DEADLINE):
        self.folder, self.budget, self.file_cap, self.max_files = folder, budget, file_cap, max_files
        self.ends = time.monotonic() + seconds
        self.files: list[Path] = []
        self.dropped: list[str] = []

    def write(self, name: str, text: str) -> Path | None:
        """Redact, cap, write; None when this test's file count or the run's bytes are used up."""
        if len(self.files) >= self.max_files - 1:  # the last slot is the index
            self.dropped.append(name)
            return None
        data = clean(text).encode(errors="replace")
        note = b""
        if len(data) > self.file_cap:
            note = f"\n[diagnostics: cut at {self.file_cap} of {len(data)} bytes]\n".encode()
            data = data[: self.file_cap]
        room = self.budget.take(len(data) + len(note))
        if room < len(data) + len(note):
            note = f"\n[diagnostics: the run's cap of {RUN_CAP} bytes is reached]\n".encode()
            data = data[: max(0, room - len(note))]
        path = self.folder / sanitize(name)
        self.folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data + note)
        self.files.append(path)
        return path

    def left(self, timeout: float = COLLECTOR_TIMEOUT) -> float:
        """A collector's timeout: its own, or what is left of the test's deadline."""
        return max(0.0, min(timeout, self.ends - time.monotonic()))

    def collect(self, collectors: Collectors, timeout: float = COLLECTOR_TIMEOUT) -> None:
        """Run each collector with a timeout; whatever it returns, raises or misses becomes its file.
        Past the test's deadline, the rest are named as skipped."""
        with _quiet(_CHATTY):
            for name, fn in collectors.items():
                if not (budget := self.left(timeout)):
                    self.write(name, "diagnostics: skipped, this test's dump ran out of time\n")
                    continue
                self.write(name, run_capped(fn, budget))

    def close(self, lines: list[str]) -> None:
        """The folder's index: what was collected, in what time, and what was not."""
        if self.dropped:
            lines.append(f"not written (over {self.max_files} files): {', '.join(self.dropped)}")
        self.max_files += 1
        self.write("INDEX.txt", "\n".join(lines) + "\n")


def run_capped(fn: Callable[[], str], timeout: float) -> str:
    """fn() in a thread, bounded by `timeout`; an error or a timeout is returned as a line."""
    box: dict[str, str] = {}

    def target() -> None:
        try:
            box["text"] = fn()
        except Exception as e:  # a collector never raises into the run
            box["text"] = f"diagnostics: collector failed: {type(e).__name__}: {e}\n"

    started = time.monotonic()
    worker = threading.Thread(target=target, name="diagnostics", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return f"diagnostics: collector timed out after {timeout:.0f} s (abandoned)\n"
    log.debug("diagnostics: collector done in %.2f s", time.monotonic() - started)
    return box.get("text", "")


@contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
