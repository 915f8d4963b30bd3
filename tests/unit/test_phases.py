"""The stage book's figures: each stage's and exercise's start and end on the run's clock, the critical
path through the stages' `needs` (then the exercises), wall / critical path, and timeline.png."""

from __future__ import annotations

import json
from pathlib import Path

from meshvm import timeline
from meshvm.phases import StageBook
from meshvm.stages import STAGES, critical_path


def test_every_stage_needs_only_stages_before_it():
    seen: set[str] = set()
    for stage in STAGES:
        assert set(stage.needs) <= seen, stage
        seen.add(stage.name)


def test_the_critical_path_is_the_longest_chain_of_needed_stages():
    durations = {s.name: 1.0 for s in STAGES} | {"cluster": 300.0, "vm": 60.0, "istioctl": 500.0}
    chain, length = critical_path(durations)
    # istioctl's 500 s beats network + cluster's 301 s; then istio, the WorkloadGroup, the VM's files, the sidecar
    assert (chain[:2], chain[-2:], length) == (["istioctl", "istio"], ["vm_files", "sidecar"], 504.0)
    chain, length = critical_path({"cluster": 300.0, "network": 5.0})
    assert chain[:2] == ["network", "cluster"] and length == 305.0


def test_figures_and_timeline_of_a_run(tmp_path: Path, monkeypatch):
    clock = iter([100.0, 100.0, 110.0, 110.0, 112.0, 112.0])
    monkeypatch.setattr("meshvm.phases.time.time", lambda: next(clock))
    book = StageBook(tmp_path / "phases.json")
    book.start("network")
    book.finish("network", "passed")
    book.start("cluster")
    book.finish("cluster", "passed")
    book.exercise("test_vm_registration", 130.0, 134.0, "passed")
    book.exercise("test_vm_registration", 134.0, 136.0, "failed")  # a module's checks merge: failed wins
    data = json.loads((tmp_path / "phases.json").read_text())
    ex = next(p for p in data["phases"] if p["kind"] == "exercise")
    assert (ex["start_s"], ex["end_s"], ex["outcome"]) == (30.0, 36.0, "failed")
    figures = data["figures"]
    assert figures["wall_s"] == 36.0 and figures["critical_path"][-1] == "test_vm_registration"
    assert figures["wall_over_critical_path"] == round(36.0 / figures["critical_path_s"], 3) >= 1.0
    assert timeline.draw(book.phases(), book.figures(), tmp_path / "timeline.png") is not None
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_what_an_exercise_measured_is_in_its_phase_and_in_lifecycle_json(tmp_path: Path):
    book = StageBook(tmp_path / "phases.json")
    book.write()
    assert not (tmp_path / "lifecycle.json").exists(), "no lifecycle exercise ran: no lifecycle.json"
    book.measure("test_vm_health", "to_unhealthy_s", 15.5)  # during the test's call, before its phase exists
    book.measure("test_vm_health", "callers_eds", "absent")
    book.exercise("test_vm_health", 130.0, 152.0, "passed")
    book.measure("test_agent_stopped", "to_deleted_s", 10.1)
    lifecycle = json.loads((tmp_path / "lifecycle.json").read_text())
    assert lifecycle == {"test_vm_health": {"to_unhealthy_s": 15.5, "callers_eds": "absent"},
                         "test_agent_stopped": {"to_deleted_s": 10.1}}
    phases = {p["name"]: p for p in json.loads((tmp_path / "phases.json").read_text())["phases"]}
    assert phases["test_vm_health"]["measured"] == lifecycle["test_vm_health"]
