"""Exercise 3: a mesh pod reaches ratings on the VM through the `ratings` Service."""

import pytest

from meshvm import exercises, retry
from meshvm.deadlines import Deadline
from meshvm.recipe import ratings

pytestmark = pytest.mark.exercise


@pytest.mark.order(3)
def test_pod_reaches_ratings_on_the_vm(world, kube, vm, agent, client_pod):
    before = exercises.proxy_stat(vm.shell, exercises.INBOUND_STAT)
    retry.until(f"ratings' answer {ratings.EXPECTED} from pod {client_pod}",
                lambda: exercises.pod_calls_ratings(kube, client_pod),
                Deadline.after(world.cfg.exercise_deadline, "exercise 3"),
                accept=lambda answer: answer == ratings.EXPECTED, ceiling=5)
    after = exercises.proxy_stat(vm.shell, exercises.INBOUND_STAT)
    assert after > before, (f"the VM proxy's {exercises.INBOUND_STAT} stayed at {before}: "
                            "the call did not arrive through the VM's sidecar")
