"""An upgrade run's book: the background traffic on every path, each phase's outcome, the versions at every
layer and the VM's entry after it; upgrade.json is written after every change (a killed run leaves what
it got through), traffic.png once the traffic stopped.

The paths, each asked every traffic.PERIOD_S for the rest of the run:
- `productpage`: the product page through the ingress gateway, from the runner (a success: the page,
  without "Error fetching product reviews" or "Ratings service is currently unavailable"; stars or not,
  since reviews v1 shows none);
- `pod->ratings`: a curl loop in the client pod (default namespace) to ratings.ratings:9080, read over exec;
- `vm->details`: a curl loop on the VM to details.default.svc:9080, read over SSH.
A loop's lines are stamped when they arrive (meshvm.traffic); each loop ends by itself at its deadline, or
at its next write once its stream is closed.
"""

from __future__ import annotations

import json
import logging
import shlex
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshvm import exercises, redact, traffic, traffic_picture, upgrade_phases
from meshvm.deadlines import Deadline
from meshvm.seams import Kube, VmShell

PATHS = ("productpage", "pod->ratings", "vm->details")
PAGE_TIMEOUT_S = 2.0
CURL_LOOP = ("end=$(( $(date +%s) + {seconds} )); while [ $(date +%s) -lt $end ]; do "
             "c=$(curl -s -o /dev/null -m 2 -w '%{{http_code}}' {url}); echo \"$c\" || exit 0; sleep {period}; done")
log = logging.getLogger("meshvm.upgrade")


def curl_loop(url: str, seconds: int) -> str:
    """A shell loop printing one HTTP status per request (000: curl's own failure) until `seconds` pass."""
    return CURL_LOOP.format(seconds=int(seconds), url=shlex.quote(url), period=traffic.PERIOD_S)


def page_outcome(address: str) -> tuple[bool, str]:
    reading = exercises.load_page(address, None, timeout=PAGE_TIMEOUT_S)  # the address was guarded once
    if not reading.title_ok or reading.reviews_error or reading.unavailable:
        return False, ("reviews error" if reading.reviews_error else "ratings unavailable" if reading.unavailable
                       else "not the product page")
    return True, f"200 {reading.version}" + (" stars" if reading.full_stars else "")


@dataclass
class PhaseRecord:
    name: str
    outcome: str = "running"  # running | passed | failed | interrupted
    error: str | None = None
    start_s: float = 0.0
    end_s: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # versions, the VM's entry, what the phase measured


class UpgradeBook:
    def __init__(self, folder: Path, versions: dict[str, str], strategy: str):
        self.folder, self.versions, self.strategy = folder, versions, strategy
        self.recorder = traffic.Recorder()
        self.records: dict[str, PhaseRecord] = {}
        self.verdict: dict[str, Any] = {}
        self.drift: dict[str, Any] = {}  # the summary of --to's drift report (fixtures/upgrade.py)
        self._lock = threading.Lock()
        self._started = False
        self._client: tuple[str, Callable[[], None]] | None = None  # the pod path's pod and its stream's close
        self._deadline = Deadline.after(0, "background traffic")

    def start_traffic(self, kube: Kube, pod: str, vm: VmShell, ingress: str,
                      guard: Callable[[str], None] | None, seconds: int) -> None:
        """Every path from now on, for at most `seconds` (the loops end by themselves then)."""
        if guard:
            guard(ingress)
        self._deadline = deadline = Deadline.after(seconds, "background traffic")
        self._started = True
        self.recorder.probe("productpage", lambda: page_outcome(ingress))
        self.follow_client(kube, pod)
        vm_lines = vm.lines(curl_loop("details.default.svc:9080/details/123", seconds), step="traffic: the VM's loop",
                            deadline=deadline)
        self.recorder.stream("vm->details", vm_lines, traffic.http_status_line, vm_lines.close)

    def follow_client(self, kube: Kube, pod: str) -> None:
        """The pod path's loop in client pod `pod`, from now on (a restarted client is a new pod: its loop
        starts there, then the old pod's stream is closed)."""
        remaining = max(1, int(self._deadline.remaining()))
        lines = kube.exec_lines("default", pod, ["sh", "-c", curl_loop("ratings.ratings:9080/ratings/123", remaining)],
                                container="curl", deadline=self._deadline)
        self.recorder.stream("pod->ratings", lines, traffic.http_status_line, lines.close)
        old, self._client = self._client, (pod, lines.close)
        if old is not None:
            old[1]()

    @property
    def client_pod(self) -> str:
        """The client pod the pod path runs in (the exercises' client too)."""
        if self._client is None:
            raise RuntimeError("the background traffic has not started")
        return self._client[0]

    def counts(self) -> dict[str, int]:
        requests, _ = self.recorder.snapshot()
        return {path: sum(r.path == path for r in requests) for path in PATHS}

    def after_disruptions(self) -> dict[str, int]:
        """Path -> its requests since the last announced disruption ended (all of them, without one)."""
        requests, _ = self.recorder.snapshot()
        end = max((w.end for w in self.recorder.disruptions()), default=float("-inf"))
        return {path: sum(r.path == path and r.t > end for r in requests) for path in PATHS}

    def steady(self) -> dict[str, int]:
        """Path -> its latest successes in a row."""
        requests, _ = self.recorder.snapshot()
        runs = dict.fromkeys(PATHS, 0)
        for r in requests:
            runs[r.path] = runs[r.path] + 1 if r.ok else 0
        return runs

    @contextmanager
    def phase(self, name: str, judged: bool = True) -> Iterator[PhaseRecord]:
        """A phase of the upgrade: its time on the traffic's clock, its outcome, what it found. Its traffic
        is judged over all of it, or (judged=False) over what the caller marks with recorder.phase(name)."""
        record = PhaseRecord(name, start_s=round(self.recorder.now(), 3))
        with self._lock:
            self.records[name] = record
        self.write()
        try:
            with self.recorder.phase(name) if judged else nullcontext():
                yield record
            record.outcome = "passed"
        except BaseException as e:
            record.outcome = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            record.error = f"{type(e).__name__}: {e}"[:2000]
            raise
        finally:
            record.end_s = round(self.recorder.now(), 3)
            self.write()

    def blocked(self, name: str) -> str | None:
        """Why phase `name` cannot run: the phase before it did not pass (None: it can)."""
        names = [p.name for p in upgrade_phases.phases(self.strategy)]
        before = names[names.index(name) - 1]
        record = self.records.get(before)
        return f"phase {before} did not run" if record is None else (
            None if record.outcome == "passed" else f"phase {before} {record.outcome}")

    def finish(self, deadline: Deadline) -> list[str]:
        """Stop the traffic, judge it per phase, write upgrade.json and traffic.png; the problems found."""
        if not self._started:
            return ["the background traffic never started"]
        stuck = self.recorder.stop(deadline)
        requests, phases = self.recorder.snapshot()
        windows = self.recorder.disruptions()
        rows, problems = traffic.judge(requests, phases, PATHS, disruptions=windows)
        problems += [f"the traffic path {path} did not stop by its deadline" for path in stuck]
        self.verdict = {"paths": list(PATHS), "per_phase": rows, "problems": problems,
                        "disruptions": [w.__dict__ for w in windows],
                        "min_success_rate": traffic.MIN_SUCCESS_RATE, "max_gap_s": traffic.MAX_GAP_S,
                        "failures": [r.__dict__ for r in requests if not r.ok][:200]}
        self.write()
        try:
            traffic_picture.draw(requests, phases, PATHS, self.folder / "traffic.png", windows)
        except Exception as e:  # a picture must never fail the run or hide its reports
            log.warning("traffic.png: not drawn: %s", e)
        return problems

    def write(self) -> None:
        with self._lock:
            data = {**self.versions, "strategy": self.strategy,
                    "phases": [r.__dict__ for r in self.records.values()], "traffic": self.verdict,
                    "drift": self.drift}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "upgrade.json.tmp"
        tmp.write_text(redact.scrub(json.dumps(data, indent=2, default=str)) + "\n")
        tmp.replace(self.folder / "upgrade.json")
