"""A run that fails right after any stage still leaves nothing behind (--fail-at STAGE, on the lab)."""

from __future__ import annotations

import json

import pytest

from meshvm.stages import STAGE_NAMES
from tests.lab.test_e2e_infra import no_lab_leftovers, suite

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_failing_right_after_a_stage_leaves_nothing(tmp_path, name):
    out = tmp_path / name
    r = suite("--platform", "lab", "--until", "bookinfo_gateway", "--fail-at", name, "--artifacts-dir", str(out))
    phases = {p["name"]: p for p in json.loads((out / "phases.json").read_text())["phases"]}
    cleanup = json.loads((out / "cleanup.json").read_text())
    assert r.returncode == 1, f"exit {r.returncode}: " + r.stdout[-2000:]
    assert "injected failure right after stage" in (phases[name]["error"] or "")
    assert cleanup["remaining"] + cleanup["leftovers"] == []
    no_lab_leftovers(out)
