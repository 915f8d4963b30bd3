"""Background traffic during an upgrade: every path asked every PERIOD_S, each request recorded
(time, path, outcome), then judged per phase: success rate and the longest stretch without a success.

A path is either a probe the runner calls itself (the product page through the ingress gateway) or a
stream of result lines from a loop that runs elsewhere (a pod's or the VM's curl loop, read over
exec or SSH): each line is stamped on arrival on the recorder's clock, so no remote clock is trusted.
A path whose loop stalls yields no successes, which the gap check sees as an outage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from meshvm.deadlines import Deadline

PERIOD_S = 0.2
MIN_SUCCESS_RATE = 0.99  # Istio's own (skipped) revision-upgrade test asks 0.95
MAX_GAP_S = 5.0


@dataclass(frozen=True)
class Request:
    t: float  # seconds since the recorder started
    path: str
    ok: bool
    detail: str  # the HTTP status, or the error


@dataclass(frozen=True)
class Phase:
    name: str
    start: float
    end: float
    outage: bool = False  # an announced disruption in which nothing can serve (judge: its length is not a gap)


class Recorder:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._origin = clock()
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._phases: list[Phase] = []
        self._windows: list[Phase] = []  # announced disruptions
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closers: list[Callable[[], None]] = []

    def now(self) -> float:
        return self._clock() - self._origin

    def record(self, path: str, ok: bool, detail: str) -> None:
        with self._lock:
            self._requests.append(Request(round(self.now(), 3), path, ok, detail))

    def probe(self, path: str, call: Callable[[], tuple[bool, str]], period_s: float = PERIOD_S) -> None:
        """Call `call` (which bounds its own time) every period_s until stopped; a late call is followed
        at once by the next one, without catching up the missed ones."""
        def loop() -> None:
            due = self._clock()
            while not self._stop.is_set():
                try:
                    ok, detail = call()
                except Exception as e:  # noqa: BLE001 (an error is this request's outcome)
                    ok, detail = False, f"{type(e).__name__}: {e}"[:200]
                self.record(path, ok, detail)
                due = max(due + period_s, self._clock())
                self._stop.wait(max(0.0, due - self._clock()))
        self._spawn(path, loop)

    def stream(self, path: str, lines: Iterable[str], parse: Callable[[str], tuple[bool, str] | None],
               close: Callable[[], None] | None = None) -> None:
        """Record each result line of a remote loop as it arrives; `parse` returns None for other lines.
        The source must end when `close` (called by stop) is called, or its command stops."""
        if close is not None:
            self._closers.append(close)
        def loop() -> None:
            try:
                for line in lines:
                    if self._stop.is_set():
                        return
                    if (result := parse(line)) is not None:
                        self.record(path, *result)
            except Exception as e:  # noqa: BLE001 (the source broke: recorded, then the path is silent)
                self.record(path, False, f"{type(e).__name__}: {e}"[:200])
        self._spawn(path, loop)

    def _spawn(self, path: str, loop: Callable[[], None]) -> None:
        thread = threading.Thread(target=loop, name=f"traffic {path}", daemon=True)
        with self._lock:
            if self._stop.is_set():
                raise RuntimeError(f"traffic {path}: the recorder is stopped")
            self._threads.append(thread)
        thread.start()

    def phase(self, name: str) -> AbstractContextManager[None]:
        return self._span(self._phases, name, 0.0)

    def disruption(self, name: str, tail_s: float = 0.0, outage: bool = False) -> AbstractContextManager[None]:
        """An announced disruption, lasting `tail_s` beyond the block (what it set off ends later, e.g. old
        pods draining): its failures do not count against the success rate (judge). Its length counts
        against the gap unless it is an `outage`, a step after which nothing serves until the block ends (a
        single VM's agent restarting: the block waits for it to be back, within a deadline)."""
        return self._span(self._windows, name, tail_s, outage)

    @contextmanager
    def _span(self, into: list[Phase], name: str, tail_s: float, outage: bool = False) -> Iterator[None]:
        """The block's time on the recorder's clock (plus `tail_s`), appended to `into` when it ends."""
        start = self.now()
        try:
            yield
        finally:
            with self._lock:
                into.append(Phase(name, round(start, 3), round(self.now() + tail_s, 3), outage))

    def stop(self, deadline: Deadline) -> list[str]:
        """Stop every path; returns the paths whose thread did not end by the deadline (a stream whose
        source was not closed)."""
        with self._lock:
            self._stop.set()
        for close in self._closers:
            close()
        for thread in self._threads:
            thread.join(max(0.0, deadline.at - time.monotonic()))
        return [t.name.removeprefix("traffic ") for t in self._threads if t.is_alive()]

    def snapshot(self) -> tuple[list[Request], list[Phase]]:
        with self._lock:
            return list(self._requests), list(self._phases)

    def disruptions(self) -> list[Phase]:
        with self._lock:
            return list(self._windows)


def http_status_line(line: str) -> tuple[bool, str] | None:
    """A curl loop's line (`curl -s -o /dev/null -m 2 -w '%{http_code}\\n'`): 200 is a success; 000 is
    curl's own failure (no answer in time, refused, reset)."""
    code = line.strip()
    if not (len(code) == 3 and code.isdigit()):
        return None
    return code == "200", code


def judge(requests: list[Request], phases: list[Phase], paths: Iterable[str], *, disruptions: Iterable[Phase] = (),
          min_rate: float = MIN_SUCCESS_RATE, max_gap_s: float = MAX_GAP_S) -> tuple[list[dict], list[str]]:
    """Per phase and path: requests, successes, success rate (without the requests inside an announced
    disruption; none when every request was inside one) and the longest stretch without a success (phase
    start to the first, between two, the last to the phase end), judged without the time inside announced
    outages (other disruptions count in full). Returns the rows and one line per problem (a phase where a
    path had no request is a problem too)."""
    rows, problems, paths, windows = [], [], list(paths), list(disruptions)
    outages = [w for w in windows if w.outage]
    for phase in phases:
        for path in paths:
            mine = [r for r in requests if r.path == path and phase.start <= r.t <= phase.end]
            counted = [r for r in mine if not any(w.start <= r.t <= w.end for w in windows)]
            ok_times = [phase.start, *(r.t for r in mine if r.ok), phase.end]
            stretches = list(zip(ok_times, ok_times[1:], strict=False))
            gap = max(b - a for a, b in stretches)
            judged = max(b - a - _covered(a, b, outages) for a, b in stretches)
            ok = sum(r.ok for r in counted)
            # No request at all is a problem; requests all inside announced disruptions leave no rate to judge.
            rate = ok / len(counted) if counted else None if mine else 0.0
            rows.append({"phase": phase.name, "path": path, "requests": len(mine), "ok": sum(r.ok for r in mine),
                         "counted": len(counted), "success_rate": None if rate is None else round(rate, 4),
                         "longest_gap_s": round(gap, 2), "longest_gap_outside_outages_s": round(judged, 2)})
            if rate is not None and rate < min_rate:
                problems.append(f"{phase.name}: {path}: success rate {rate:.3f} < {min_rate} ({ok} of {len(counted)}"
                                + (f", {len(mine) - len(counted)} more inside announced disruptions)" if
                                   len(mine) > len(counted) else ")"))
            if judged > max_gap_s:
                problems.append(f"{phase.name}: {path}: {judged:.1f} s without a success (> {max_gap_s} s)"
                                + (" outside announced outages" if outages and judged < gap else ""))
    return rows, problems


def _covered(a: float, b: float, outages: list[Phase]) -> float:
    """How much of [a, b] the outages cover (each instant once)."""
    covered, reach = 0.0, a
    for w in sorted(outages, key=lambda w: w.start):
        lo, hi = max(w.start, reach), min(w.end, b)
        if hi > lo:
            covered, reach = covered + hi - lo, hi
    return covered
