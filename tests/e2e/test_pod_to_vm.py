"""Exercise 3: a mesh pod reaches ratings on the VM through the `ratings` Service, over mutual TLS."""

import pytest

from meshvm import exercises, retry, telemetry
from meshvm.deadlines import Deadline
from meshvm.recipe import ratings

pytestmark = pytest.mark.exercise


@pytest.mark.order(3)
def test_pod_reaches_ratings_on_the_vm(world, kube, vm, agent, client_pod):
    before = telemetry.vm_requests(vm.shell)
    call = lambda: exercises.pod_calls_ratings(kube, client_pod)  # noqa: E731
    retry.until(f"ratings' answer {ratings.EXPECTED} from pod {client_pod}", call,
                Deadline.after(world.cfg.exercise_deadline, "exercise 3"),
                accept=lambda answer: answer == ratings.EXPECTED, ceiling=5)
    exercises.repeat(f"ratings from pod {client_pod}", call, lambda answer: answer == ratings.EXPECTED,
                     exercises.CALLS - 1)
    caller = exercises.pod_principal(kube, "default", client_pod)
    exercises.metrics_grew(vm.shell, before, {
        "reporter": "destination", "destination_service": exercises.RATINGS_SERVICE, "source_principal": caller,
        "connection_security_policy": "mutual_tls", "response_code": "200"},
        exercises.CALLS, f"the calls did not arrive at the VM's sidecar over mutual TLS from {caller}")
