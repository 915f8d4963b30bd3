"""Beyond the recipe, the VM's lifecycle: the VM rebooted (`systemctl reboot`). It comes back with a new
boot id, `istio` and `ratings` start by themselves (ratings is enabled by the recipe, istio by the one
step the suite adds to it), the VM registers again and the four recipe exercises pass again: the
entry, the VM to details, a pod to ratings, the stars on the page. The times are measured
(phases.json, lifecycle.json)."""

import time

import paramiko
import pytest

from meshvm import exercises, lifecycle, retry
from meshvm.deadlines import Deadline

pytestmark = pytest.mark.exercise
NAME = "test_vm_reboot"
AWAY = (OSError, EOFError, paramiko.SSHException, retry.WaitFailed)  # the VM rebooting: SSH not back yet


@pytest.mark.order(16)
def test_the_vm_rejoins_the_mesh_after_a_reboot(world, kube, ingress, vm, agent, client_pod, book):
    wait, ip, guard = world.cfg.exercise_deadline, vm.info.internal_ip, world.platform.guard()
    first_boot, first_entry = lifecycle.boot_id(vm.shell), lifecycle.uid(lifecycle.entry(kube, ip))
    lifecycle.reboot(vm.shell)
    since = time.monotonic()
    _, took = lifecycle.timed("the VM back over SSH with a new boot id", lambda: lifecycle.boot_id(vm.shell),
                              lambda b: b not in ("", first_boot), Deadline.after(wait, "rebooted"), since, ceiling=3,
                              transient=AWAY)
    book.measure(NAME, "back_s", took)
    book.measure(NAME, "istio_token_after_boot", lifecycle.token_after_boot(vm.shell))
    _, took = lifecycle.timed("istio and ratings active after the boot, started by systemd",
                              lambda: lifecycle.units_active(vm.shell), lambda u: u == ["active", "active"],
                              Deadline.after(wait, "units"), since, transient=AWAY)
    book.measure(NAME, "units_active_s", took)
    entry, took = lifecycle.timed("exercise 1 again: the VM's WorkloadEntry registered after the reboot",
                                  lambda: lifecycle.entry(kube, ip),
                                  lambda e: not exercises.entry_problems(e, ip, world.cfg.wg_probe),
                                  Deadline.after(wait, "registered"), since)
    book.measure(NAME, "registered_s", took)
    book.measure(NAME, "same_entry", lifecycle.uid(entry) == first_entry)
    retry.until("exercise 2 again: details from the VM", lambda: exercises.vm_calls_details(vm.shell),
                Deadline.after(wait, "details"), accept=exercises.details_ok, transient=AWAY, ceiling=3)
    book.measure(NAME, "traffic_back_s", lifecycle.mesh_serves_ratings(kube, client_pod, since,
                                                                       Deadline.after(wait, "exercise 3 again")))
    retry.until("exercise 4 again: the stars on the product page", lambda: exercises.page_problems(
        exercises.load_pages(ingress, guard)), Deadline.after(wait, "stars"), transient=(OSError,),
        accept=lambda problems: problems == [], ceiling=5)
