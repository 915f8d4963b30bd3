"""Exercise 2: from the VM, `curl details.default.svc:9080/details/123` goes through the sidecar."""

import pytest

from meshvm import exercises
from meshvm.deadlines import Deadline

pytestmark = pytest.mark.exercise


@pytest.mark.order(2)
def test_vm_reaches_details_through_its_sidecar(world, vm, agent):
    exercises.vm_reaches_details(vm.shell, Deadline.after(world.cfg.exercise_deadline, "exercise 2"))
