"""The stage graph: overlap where the needs allow, the testing switch that runs it sequentially, a failure
or an interrupt stops the running stages before anything else happens, and only declared needs are read."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.phases import StageBook
from meshvm.stagegraph import StageGraph
from meshvm.stages import STAGES, Stage

A, B, C = (Stage("a", "s", "", 30), Stage("b", "s", "", 30), Stage("c", "s", "", 30, needs=("a", "b")))


class Meter:
    """How many stages run at once, at most."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self.lock = threading.Lock()

    def stage(self, value: object, seconds: float = 0.3) -> Callable[[StageGraph], object]:
        def work(g: StageGraph) -> object:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            threading.Event().wait(seconds)
            with self.lock:
                self.now -= 1
            return value
        return work


def graph(tmp_path: Path, work: dict, stages=(A, B, C), **kw) -> tuple[StageGraph, StageBook]:  # noqa: ANN001
    book = StageBook(tmp_path / "phases.json")
    seconds = {s.name: s.deadline for s in stages}
    return StageGraph(stages, work, book, [s.name for s in stages], seconds, grace_s=2, **kw).start(), book


def outcomes(g: StageGraph) -> dict[str, str]:
    return {s.name: g.result(s.name).outcome for s in g.stages}


@pytest.mark.parametrize("sequential", [False, True])
def test_independent_stages_overlap_unless_sequential(tmp_path, sequential):
    m = Meter()
    g, book = graph(tmp_path, {"a": m.stage(1), "b": m.stage(2), "c": lambda g: g.value("a") + g.value("b")},
                    sequential=sequential)
    assert outcomes(g) == {"a": "passed", "b": "passed", "c": "passed"} and g.result("c").value == 3
    assert m.most == (1 if sequential else 2)
    ends = {p["name"]: (p["start_s"], p["end_s"]) for p in book.phases()}
    assert ends["c"][0] >= max(ends["a"][1], ends["b"][1])  # c starts once both it needs have ended


def test_a_failure_stops_the_running_stage_and_skips_what_needs_it(tmp_path):
    def waits_forever(g: StageGraph) -> None:  # a stage inside a long wait, as a cluster create is
        retry.until("never", lambda: False, Deadline.after(30, "never"), initial=0.05, ceiling=0.1)

    def fails(g: StageGraph) -> None:
        threading.Event().wait(0.3)
        raise RuntimeError("quota exceeded")

    started = time.monotonic()
    g, book = graph(tmp_path, {"a": waits_forever, "b": fails, "c": lambda g: None})
    assert outcomes(g) == {"a": "interrupted", "b": "failed", "c": "skipped"}
    assert time.monotonic() - started < 10  # stopped at its next attempt, not at its 30 s deadline
    assert g.result("c").error == "needs stage b, which failed: RuntimeError: quota exceeded"
    assert g.result("a").error == "stopped: stage b failed"
    assert {p["name"]: p["outcome"] for p in book.phases()} == {"a": "interrupted", "b": "failed"}


def test_stop_ends_every_stage_before_it_returns(tmp_path):
    """An interrupt: stop() returns once no stage runs, so teardown never races a create."""
    ended = threading.Event()

    def slow(g: StageGraph) -> None:
        try:
            retry.until("never", lambda: False, Deadline.after(30, "never"), initial=0.05, ceiling=0.1)
        finally:
            ended.set()

    g, _ = graph(tmp_path, {"a": slow, "b": slow, "c": lambda g: None})
    retry.until("a running", lambda: g.book.outcome("a"), Deadline.after(5, "a"), initial=0.02, ceiling=0.05)
    assert g.stop("interrupted (SIGTERM)") == [] and ended.is_set()
    assert outcomes(g) == {"a": "interrupted", "b": "interrupted", "c": "skipped"}
    assert g.result("c").error == "not started: interrupted (SIGTERM)"


def test_a_stage_reads_only_what_it_needs(tmp_path):
    g, _ = graph(tmp_path, {"a": lambda g: 1, "b": lambda g: g.value("a"), "c": lambda g: None})
    assert g.result("b").outcome == "failed"
    assert g.result("b").error == "UndeclaredNeed: stage b used stage a, which it does not need (meshvm/stages.py)"


def test_fail_at_fails_the_stage_after_its_work(tmp_path):
    done = []
    g, _ = graph(tmp_path, {"a": lambda g: done.append("a"), "b": lambda g: done.append("b"), "c": lambda g: None},
                 fail_at="a")
    assert g.result("a").outcome == "failed" and "a" in done  # its work ran, then the injected failure
    assert g.result("a").error == "RuntimeError: injected failure right after stage a (--fail-at)"
    assert g.result("c").outcome == "skipped"


def test_a_hung_stage_is_reported_not_waited_for_forever(tmp_path):
    hang = threading.Event()
    stages = (Stage("a", "s", "", 1),)
    g, _ = graph(tmp_path, {"a": lambda g: hang.wait(30)}, stages=stages)  # ignores every deadline
    try:
        r = g.result("a")
        assert r.outcome == "failed" and "did not end within the deadlines" in r.error
    finally:
        hang.set()


def test_until_leaves_later_stages_skipped_with_the_reason(tmp_path):
    book = StageBook(tmp_path / "phases.json")
    g = StageGraph((A, B, C), {"a": lambda g: 1, "b": lambda g: 2, "c": lambda g: 3}, book, ["a", "b"],
                   {"a": 5, "b": 5, "c": 5}, until="b").start()
    assert outcomes(g) == {"a": "passed", "b": "passed", "c": "skipped"}
    assert g.result("c").error == "stage c not run: the run stops after b (--until)"


def test_an_interrupt_while_the_stages_start_still_stops_them(tmp_path, monkeypatch):
    """SIGTERM can land while the graph starts its threads (seen on a loaded machine: teardown then ran
    beside live stages): the run knows its graph before the first thread starts, and stops what started."""
    from meshvm.config import gather, resolve
    from meshvm.run import Run

    token = tmp_path / "token"
    token.write_text("ya29.not-a-real-token")
    env = {"E2E_GCP_ACCESS_TOKEN_FILE": str(token)}
    cfg = resolve(gather({"gcp_project": "demo-project", "ssh_source_ranges": ["203.0.113.7/32"],
                          "artifacts_dir": str(tmp_path / "out")}, env), env)
    run, started = Run(cfg), []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        real_start(thread)
        started.append(thread)
        if len(started) == 2:
            raise KeyboardInterrupt("SIGTERM")

    def waits(g: StageGraph) -> None:
        retry.until("never", lambda: False, Deadline.after(60, "never"), initial=0.05, ceiling=0.1)

    monkeypatch.setattr(threading.Thread, "start", start)
    try:
        with pytest.raises(KeyboardInterrupt):
            run.stages(StageBook(tmp_path / "phases.json"), {s.name: waits for s in STAGES})
        monkeypatch.undo()
        run.stop_stages("interrupted (SIGTERM)")
        assert len(started) == 2 and not [t for t in started if t.is_alive()]
    finally:
        run.close(failed=False, interrupted=False)
