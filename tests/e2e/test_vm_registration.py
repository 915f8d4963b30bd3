"""Exercise 1: the VM's WorkloadEntry appears when its agent starts (auto-registration)."""

import pytest

from meshvm import exercises
from meshvm.deadlines import Deadline
from meshvm.recipe import sidecar

pytestmark = pytest.mark.exercise


@pytest.mark.order(1)
def test_workload_entry_appears_when_the_vm_agent_starts(world, kube, vm, sidecar_installed):
    deadline = Deadline.after(world.cfg.exercise_deadline, "exercise 1")
    watch = exercises.watch_entries(kube, deadline)  # before the agent starts: nothing can be missed
    vm.shell.run("systemctl start istio", sudo=True, step="exercise 1: systemctl start istio")
    entry = exercises.wait_entry(watch, vm.info.internal_ip, world.cfg.wg_probe, deadline)
    assert exercises.entry_problems(entry, vm.info.internal_ip, world.cfg.wg_probe) == []
    sidecar.wait_ready(vm.shell, deadline)  # ready on 15021, restart count stable
