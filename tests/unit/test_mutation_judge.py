"""The mutation runner's reading of a run (tests/mutations/run.py): when the mutation breaks a stage,
a stage it stopped while running beside it is no earlier failure; anything else before it is."""

from __future__ import annotations

import pytest

from tests.mutations.run import passed_or_stopped_by

ISTIO_FAILED = ("test_stages", "test_stage[istio]", "failure", "stage istio failed: HubMismatch")
EXERCISE_FAILED = ("test_vm_registration", "test_workload_entry_appears", "failure", "not reached")


@pytest.mark.parametrize(("row", "first", "ok"), [
    (("test_stages", "test_stage[vm]", "", ""), ISTIO_FAILED, True),
    (("test_stages", "test_stage[ratings]", "skipped", "stage ratings was stopped: stage istio failed"), ISTIO_FAILED, True),
    (("test_stages", "test_stage[ratings]", "skipped", "stage ratings was stopped: stage vm failed"), ISTIO_FAILED, False),
    (("test_stages", "test_stage[ratings]", "skipped", "needs stage vm, which failed"), ISTIO_FAILED, False),
    (("test_stages", "test_stage[vm]", "failure", "boom"), ISTIO_FAILED, False),
    (("test_stages", "test_stage[ratings]", "skipped", "stage ratings was stopped: stage istio failed"), EXERCISE_FAILED, False),
])
def test_a_stage_before_the_first_failure(row, first, ok):
    assert passed_or_stopped_by(row, first) is ok
