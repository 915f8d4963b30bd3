"""Exercise 2: from the VM, `curl details.default.svc:9080/details/123` goes through the sidecar."""

import pytest

from meshvm import exercises, retry, telemetry
from meshvm.deadlines import Deadline

pytestmark = pytest.mark.exercise


@pytest.mark.order(2)
def test_vm_reaches_details_through_its_sidecar(world, vm, agent):
    before = telemetry.vm_requests(vm.shell)
    retry.until("details' JSON for id 123 from the VM", lambda: exercises.vm_calls_details(vm.shell),
                Deadline.after(world.cfg.exercise_deadline, "exercise 2"), accept=exercises.details_ok, ceiling=5)
    exercises.repeat("details from the VM", lambda: exercises.vm_calls_details(vm.shell), exercises.details_ok,
                     exercises.CALLS - 1)
    exercises.metrics_grew(vm.shell, before, {"reporter": "source", "destination_service": exercises.DETAILS_SERVICE,
                                              "response_code": "200"},
                           exercises.CALLS, "the calls did not go through the VM's sidecar")
