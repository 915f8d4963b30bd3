"""Exercise 3: a mesh pod reaches ratings on the VM through the `ratings` Service, over mutual TLS."""

import pytest

from meshvm import exercises
from meshvm.deadlines import Deadline

pytestmark = pytest.mark.exercise


@pytest.mark.order(3)
def test_pod_reaches_ratings_on_the_vm(world, kube, vm, agent, client_pod):
    exercises.pod_reaches_ratings(kube, vm.shell, client_pod, Deadline.after(world.cfg.exercise_deadline, "exercise 3"))
