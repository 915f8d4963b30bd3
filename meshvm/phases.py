"""The stage book: each stage's start, duration, outcome, error and retries, written to phases.json."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from meshvm import redact, retry


@dataclass
class Phase:
    name: str
    started: str  # RFC 3339, UTC
    duration_s: float | None = None
    outcome: str = "running"  # running | passed | failed | interrupted
    error: str | None = None
    retries: int = 0


class StageBook:
    def __init__(self, path: Path):
        self.path = path
        self._phases: dict[str, Phase] = {}
        self._current: str | None = None
        self._t0: dict[str, float] = {}
        self._lock = threading.Lock()
        retry.on_retry(self._count_retry)

    def start(self, name: str) -> None:
        with self._lock:
            self._phases[name] = Phase(name, datetime.now(UTC).isoformat(timespec="seconds"))
            self._t0[name], self._current = time.monotonic(), name
        self.write()

    def finish(self, name: str, outcome: str, error: str | None = None) -> None:
        with self._lock:
            phase = self._phases[name]
            phase.duration_s = round(time.monotonic() - self._t0[name], 3)
            phase.outcome, phase.error = outcome, redact.scrub(error) if error else None
            self._current = None
        self.write()

    def outcome(self, name: str) -> Phase | None:
        return self._phases.get(name)

    def _count_retry(self, _what: str) -> None:
        with self._lock:
            if self._current:
                self._phases[self._current].retries += 1

    def write(self) -> None:
        """Written after every change, so a killed run still leaves what it got through."""
        with self._lock:
            data = [asdict(p) for p in self._phases.values()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(redact.scrub(json.dumps({"phases": data}, indent=2)) + "\n")
        tmp.replace(self.path)
