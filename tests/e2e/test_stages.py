"""Each recipe stage as a testcase of its own, in recipe order: passed, failed with its error, or
skipped naming the stage it needed (stage gating: fixtures/gating.py)."""

import pytest

from fixtures.gating import run_stage
from meshvm.stages import WIRED


@pytest.mark.order(0)
@pytest.mark.parametrize("name", WIRED)
def test_stage(request: pytest.FixtureRequest, book, name: str) -> None:
    run_stage(request, book, name)
