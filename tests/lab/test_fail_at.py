"""A run that fails right after any stage still leaves nothing behind (--fail-at STAGE, on the lab)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshvm.stages import STAGE_NAMES
from tests.lab.test_e2e_infra import no_lab_leftovers, suite

pytestmark = pytest.mark.lab


def fails_right_after(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    r = suite("--platform", "lab", "--until", "bookinfo_gateway", "--fail-at", name, "--artifacts-dir", str(out))
    phases = {p["name"]: p for p in json.loads((out / "phases.json").read_text())["phases"]}
    cleanup = json.loads((out / "cleanup.json").read_text())
    assert r.returncode == 1, f"exit {r.returncode}: " + r.stdout[-2000:]
    assert "injected failure right after stage" in (phases[name]["error"] or "")
    assert cleanup["remaining"] + cleanup["leftovers"] == []
    no_lab_leftovers(out)


class FailingRightAfter:
    def test_failing_right_after_it_leaves_nothing(self, tmp_path: Path, name: str) -> None:
        fails_right_after(tmp_path, name)


# Five classes of three stages, so that pytest-xdist (a test class per worker) spreads them over its
# workers, beside the other lab tests.
@pytest.mark.parametrize("name", STAGE_NAMES[0:3])
class TestStages1To3(FailingRightAfter):
    pass


@pytest.mark.parametrize("name", STAGE_NAMES[3:6])
class TestStages4To6(FailingRightAfter):
    pass


@pytest.mark.parametrize("name", STAGE_NAMES[6:9])
class TestStages7To9(FailingRightAfter):
    pass


@pytest.mark.parametrize("name", STAGE_NAMES[9:12])
class TestStages10To12(FailingRightAfter):
    pass


@pytest.mark.parametrize("name", STAGE_NAMES[12:])
class TestStages13On(FailingRightAfter):  # and any stage added later
    pass
