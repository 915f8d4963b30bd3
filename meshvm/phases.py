"""The stage book: each stage's and exercise's start, end, duration, outcome, error and retries, and the
run's figures (wall time, critical path, their ratio), written to phases.json; what exercises measured
(the VM's lifecycle: seconds to unhealthy, to re-registered...) also to lifecycle.json."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshvm import redact, retry
from meshvm.stages import critical_path


@dataclass
class Phase:
    name: str
    started: str  # RFC 3339, UTC
    duration_s: float | None = None
    outcome: str = "running"  # running | passed | failed | interrupted
    error: str | None = None
    retries: int = 0
    start_s: float | None = None  # seconds since the run's first stage started
    end_s: float | None = None
    kind: str = "stage"  # stage | exercise


@dataclass(frozen=True)
class Figures:
    wall_s: float  # from the first stage's start to the last exercise's end
    critical_path: list[str]
    critical_path_s: float
    wall_over_critical_path: float | None


class StageBook:
    def __init__(self, path: Path):
        self.path = path
        self._phases: dict[str, Phase] = {}
        self._current = threading.local()  # the stage each thread runs: its retries are counted to it
        self._t0: dict[str, float] = {}
        self._origin: float | None = None  # wall clock (time.time()) of the first stage's start
        self._measured: dict[str, dict[str, float | str]] = {}  # exercise -> what it measured
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # stages end in several threads: one writer at a time
        retry.on_retry(self._count_retry)

    def _since(self, wall: float) -> float:
        if self._origin is None:
            self._origin = wall
        return round(wall - self._origin, 3)

    def start(self, name: str) -> None:
        with self._lock:
            self._phases[name] = Phase(name, datetime.now(UTC).isoformat(timespec="seconds"),
                                       start_s=self._since(time.time()))
            self._t0[name], self._current.name = time.monotonic(), name
        self.write()

    def finish(self, name: str, outcome: str, error: str | None = None) -> None:
        with self._lock:
            phase = self._phases[name]
            phase.duration_s = round(time.monotonic() - self._t0[name], 3)
            phase.end_s = round((phase.start_s or 0.0) + phase.duration_s, 3)
            phase.outcome, phase.error = outcome, redact.scrub(error) if error else None
            self._current.name = None
        self.write()

    def exercise(self, name: str, start: float, stop: float, outcome: str) -> None:
        """An exercise's test (wall clock start and stop, as pytest reports them), merged per module."""
        with self._lock:
            begin, end = self._since(start), self._since(stop)
            was = self._phases.get(name)
            if was is not None:
                begin = min(begin, was.start_s or begin)
                outcome = outcome if was.outcome == "passed" else was.outcome
            self._phases[name] = Phase(name, was.started if was else datetime.fromtimestamp(start, UTC).isoformat(
                timespec="seconds"), round(end - begin, 3), outcome, start_s=begin, end_s=end, kind="exercise")
        self.write()

    def measure(self, exercise: str, what: str, value: float | str) -> None:
        """A figure an exercise measured, under its module's name (e.g. test_vm_health, to_unhealthy_s)."""
        with self._lock:
            self._measured.setdefault(exercise, {})[what] = value
        self.write()

    def figures(self) -> Figures:
        """Wall time (first stage's start to the last exercise's end), the critical path (the longest chain
        of needed stages, then the exercises, which run one after another) and wall / critical path."""
        with self._lock:
            phases = [p for p in self._phases.values() if p.end_s is not None]
        stages = {p.name: p.duration_s or 0.0 for p in phases if p.kind == "stage"}
        chain, length = critical_path(stages)
        exercises = [p for p in phases if p.kind == "exercise"]
        chain += [p.name for p in exercises]
        length += sum(p.duration_s or 0.0 for p in exercises)
        wall = max((p.end_s or 0.0 for p in phases), default=0.0)
        return Figures(round(wall, 3), chain, round(length, 3), round(wall / length, 3) if length else None)

    def phases(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**asdict(p), **({"measured": dict(self._measured[p.name])} if p.name in self._measured else {})}
                    for p in self._phases.values()]

    def outcome(self, name: str) -> Phase | None:
        return self._phases.get(name)

    def _count_retry(self, _what: str) -> None:
        with self._lock:
            current = getattr(self._current, "name", None)
            if current:
                self._phases[current].retries += 1

    def write(self) -> None:
        """Written after every change, so a killed run still leaves what it got through."""
        with self._writing:
            data = self.phases()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(redact.scrub(json.dumps({"phases": data, "figures": asdict(self.figures())}, indent=2)) + "\n")
            tmp.replace(self.path)
            with self._lock:
                measured = {name: dict(m) for name, m in self._measured.items()}
            if measured:
                lifecycle = self.path.with_name("lifecycle.json")
                lifecycle.with_suffix(".tmp").write_text(json.dumps(measured, indent=2) + "\n")
                lifecycle.with_suffix(".tmp").replace(lifecycle)
