"""A run that fails right after any stage still leaves nothing behind (--fail-at STAGE, on the lab)."""

from __future__ import annotations

import json

import pytest

from meshvm.stages import STAGE_NAMES
from tests.lab.test_e2e_infra import no_lab_leftovers, suite

pytestmark = pytest.mark.lab


def test_failing_after_each_stage_leaves_nothing(tmp_path, capsys):
    clean, problems = 0, []
    for name in STAGE_NAMES:
        out = tmp_path / name
        r = suite("--platform", "lab", "--until", "bookinfo_gateway", "--fail-at", name, "--artifacts-dir", str(out))
        phases = {p["name"]: p for p in json.loads((out / "phases.json").read_text())["phases"]}
        cleanup = json.loads((out / "cleanup.json").read_text())
        left = cleanup["remaining"] + cleanup["leftovers"]
        try:
            assert r.returncode == 1, f"exit {r.returncode}"
            assert "injected failure right after stage" in (phases[name]["error"] or "")
            assert left == [], left
            no_lab_leftovers(out)
            clean += 1
        except AssertionError as e:
            problems.append(f"--fail-at {name}: {e}")
    with capsys.disabled():
        print(f"\n--fail-at: {len(STAGE_NAMES)} stages x {len(STAGE_NAMES) - clean} leftovers")
    assert problems == []
