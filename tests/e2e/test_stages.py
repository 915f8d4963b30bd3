"""Each recipe stage as a testcase of its own, in recipe order: passed, failed with its error, or
skipped naming the stage it needed (stage gating: fixtures/gating.py). The stages themselves run as a
graph, overlapping where the recipe allows; each testcase waits for its stage."""

import pytest

from fixtures.gating import run_stage
from meshvm.stages import WIRED


@pytest.mark.order(0)
@pytest.mark.timeout(0)  # the wait is bounded by the deadlines of the stages leading to it (meshvm.stagegraph)
@pytest.mark.parametrize("name", WIRED)
def test_stage(graph, name: str) -> None:
    run_stage(graph, name)
