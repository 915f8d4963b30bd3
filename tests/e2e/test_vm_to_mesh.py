"""Exercise 2: from the VM, `curl details.default.svc:9080/details/123` goes through the sidecar."""

import pytest

from meshvm import exercises, retry
from meshvm.deadlines import Deadline

pytestmark = pytest.mark.exercise


@pytest.mark.order(2)
def test_vm_reaches_details_through_its_sidecar(world, vm, agent):
    before = exercises.proxy_stat(vm.shell, exercises.DETAILS_STAT)
    retry.until("details' JSON for id 123 from the VM", lambda: exercises.vm_calls_details(vm.shell),
                Deadline.after(world.cfg.exercise_deadline, "exercise 2"), accept=exercises.details_ok, ceiling=5)
    after = exercises.proxy_stat(vm.shell, exercises.DETAILS_STAT)
    assert after > before, (f"the VM proxy's {exercises.DETAILS_STAT} stayed at {before}: "
                            "the call did not go through the sidecar")
