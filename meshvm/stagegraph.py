"""The recipe's stages run as a graph: each starts once every stage it needs has passed, so independent
stages overlap (the VM and ratings while GKE creates the cluster; the east-west gateway beside BookInfo).

- A stage's work gets only what it declared: `value(name)` of a stage outside its `needs` is an error,
  so the declared graph (meshvm/stages.py) is the one that runs.
- A failed stage stops the graph: running stages are stopped at their next deadline check (a stage's
  thread raises `deadlines.Stopped`), stages not started are skipped naming the failure. An interrupt
  does the same through `stop()`. `stop()` returns once every stage thread ended, each within its own
  deadline, so teardown never races a create.
- `sequential=True` (a testing switch) runs the same stages one after another in the recipe's order:
  what the overlap saved is measured against it.
- `--fail-at NAME` fails the stage right after its work succeeded, like any other failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from meshvm import deadlines
from meshvm.deadlines import Deadline
from meshvm.phases import StageBook
from meshvm.stages import Stage

log = logging.getLogger("meshvm.stages")
STOP_GRACE_S = 30.0  # beyond a stopped stage's own deadline: its last call's timeout


@dataclass(frozen=True)
class Result:
    outcome: str  # passed | failed | skipped (never started) | interrupted (stopped while running)
    value: object = None
    error: str = ""  # failed: "Type: message"; skipped or interrupted: why


class UndeclaredNeed(RuntimeError):
    pass


class StageGraph:
    def __init__(self, stages: Sequence[Stage], work: Mapping[str, Callable[[StageGraph], object]], book: StageBook,
                 selected: Collection[str], seconds: Mapping[str, float], *, until: str | None = None,
                 fail_at: str | None = None, sequential: bool = False, grace_s: float = STOP_GRACE_S):
        self.stages, self.work, self.book = list(stages), work, book
        self._by = {s.name: s for s in self.stages}
        self.selected, self.seconds, self.until, self.fail_at = set(selected), seconds, until, fail_at
        self.sequential, self.grace_s = sequential, grace_s
        self._results: dict[str, Result] = {}
        self._done = {s.name: threading.Event() for s in self.stages}
        self._stop = threading.Event()
        self._why = ""
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._running: dict[str, Deadline] = {}
        self._local = threading.local()

    def start(self) -> StageGraph:
        order = [s for s in self.stages if s.name in self.selected]
        for s in self.stages:
            if s.name not in self.selected:
                self._settle(s.name, Result("skipped", error=f"stage {s.name} not run: the run stops after "
                                                              f"{self.until} (--until)"))
        groups = [order] if self.sequential else [[s] for s in order]
        for group in groups:
            t = threading.Thread(target=self._run_all, args=(group,), name=f"stage-{group[0].name}", daemon=True)
            self._threads.append(t)
        for t in self._threads:
            t.start()
        return self

    def result(self, name: str) -> Result:
        """Wait for the stage to settle, never longer than the deadlines of the longest chain to it."""
        bound = Deadline.after(self._latest_end(name) + self.grace_s, f"stage {name} to end")
        while not self._done[name].wait(0.5):  # short waits: the main thread's signals are handled
            if bound.expired():
                self.stop(f"stage {name} did not end within its deadlines")
                return Result("failed", error=f"stage {name} did not end within the deadlines of the stages "
                                              "leading to it (hung)")
        return self._results[name]

    def value(self, name: str) -> object:
        """Inside a stage's work: the value of a stage it declared in `needs` (passed by then)."""
        current: Stage | None = getattr(self._local, "stage", None)
        if current is not None and name not in self._upstream(current.name):
            raise UndeclaredNeed(f"stage {current.name} used stage {name}, which it does not need (meshvm/stages.py)")
        return self._results[name].value

    def _upstream(self, name: str) -> set[str]:
        """Every stage `name` needs, directly or through another."""
        seen: set[str] = set()
        todo = list(self._by[name].needs)
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(self._by[n].needs)
        return seen

    def stop(self, why: str) -> list[str]:
        """Stop every stage and wait for each (within its own deadline); return those still running (logged)."""
        self._halt(why)
        latest = max((d.at for d in list(self._running.values())), default=time.monotonic())
        for t in self._threads:
            if t is not threading.current_thread() and t.is_alive():
                t.join(max(0.0, latest - time.monotonic()) + self.grace_s)
        left = [t.name.removeprefix("stage-") for t in self._threads if t.is_alive()]
        if left:
            log.error("stages still running after their deadlines: %s", ", ".join(left))
        return left

    def _halt(self, why: str) -> None:
        with self._lock:
            if not self._stop.is_set():
                self._why = why
                self._stop.set()

    def _latest_end(self, name: str) -> float:
        """The latest the stage can end: its deadline after its needs' latest ends (or, sequential, after
        every stage before it)."""
        if self.sequential:
            return sum(self.seconds.get(s.name, 0.0) for s in self.stages[: self.stages.index(self._by[name]) + 1])
        s = self._by[name]
        return self.seconds.get(name, 0.0) + max((self._latest_end(n) for n in s.needs), default=0.0)

    def _run_all(self, group: list[Stage]) -> None:
        for s in group:
            self._run(s)

    def _run(self, s: Stage) -> None:
        if (blocked := self._blocked(s)) is not None:
            self._settle(s.name, blocked)
            return
        self._local.stage = s
        deadline = Deadline.after(self.seconds.get(s.name, 0.0), f"stage {s.name}")
        self._running[s.name] = deadline
        self.book.start(s.name)
        try:
            with deadlines.stopping_on(self._stop, lambda: self._why):
                value = self.work[s.name](self)
            if self.fail_at == s.name:
                raise RuntimeError(f"injected failure right after stage {s.name} (--fail-at)")
        except deadlines.Stopped as e:
            self._finish(s.name, Result("interrupted", error=f"stopped: {e}"))
        except BaseException as e:  # noqa: BLE001  # a stage thread reports every failure; nothing escapes it
            log.error("stage %s failed", s.name, exc_info=True)
            self._finish(s.name, Result("failed", error=f"{type(e).__name__}: {e}"))
            self._halt(f"stage {s.name} failed")
        else:
            self._finish(s.name, Result("passed", value))
        finally:
            self._running.pop(s.name, None)
            self._local.stage = None

    def _blocked(self, s: Stage) -> Result | None:
        """Wait for the needs; the reason this stage cannot start, if it cannot: a failed need first."""
        for need in s.needs:
            while not self._done[need].wait(0.2):
                if self._stop.is_set():
                    break
        needs = [(n, self._results.get(n)) for n in s.needs]
        failed = [(n, r) for n, r in needs if r is not None and r.outcome == "failed"]
        if failed:
            return Result("skipped", error=f"needs stage {failed[0][0]}, which failed: {failed[0][1].error}")
        if self._stop.is_set():
            return Result("skipped", error=f"not started: {self._why}")
        unmet = [r for _, r in needs if r is None or r.outcome != "passed"]
        return Result("skipped", error=unmet[0].error) if unmet and unmet[0] is not None else None

    def _finish(self, name: str, r: Result) -> None:
        self.book.finish(name, r.outcome, r.error or None)
        self._settle(name, r)

    def _settle(self, name: str, r: Result) -> None:
        self._results[name] = r
        self._done[name].set()

