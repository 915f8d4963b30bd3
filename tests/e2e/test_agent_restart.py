"""Beyond the recipe, the VM's lifecycle: the agent restarted within the grace period. `systemctl restart
istio` on the VM: the same WorkloadEntry (same UID) stays, reconnected, and a pod's call of ratings
answers again; how long that took is measured (phases.json, lifecycle.json)."""

import time

import pytest

from meshvm import lifecycle
from meshvm.deadlines import Deadline
from meshvm.recipe import sidecar

pytestmark = pytest.mark.exercise
NAME = "test_agent_restart"
GRACE_MARGIN_S = 5.0  # istiod's delayed queue runs the delete a moment after the grace period


@pytest.mark.order(13)
def test_an_agent_restart_within_the_grace_period_keeps_the_entry(world, kube, vm, agent, client_pod, book):
    wait, ip = world.cfg.exercise_deadline, vm.info.internal_ip
    before = lifecycle.entry(kube, ip)
    assert lifecycle.uid(before), f"no WorkloadEntry ratings-{ip} before the restart"
    vm.shell.run("systemctl restart istio", sudo=True, step="lifecycle: systemctl restart istio")
    since = time.monotonic()
    sidecar.wait_ready(vm.shell, Deadline.after(wait, "the agent ready again"))
    book.measure(NAME, "to_ready_s", round(time.monotonic() - since, 1))
    book.measure(NAME, "traffic_back_s", lifecycle.mesh_serves_ratings(kube, client_pod, since,
                                                                       Deadline.after(wait, "traffic back")))
    after, _ = lifecycle.timed("the entry connected again", lambda: lifecycle.entry(kube, ip),
                               lambda e: lifecycle.CONNECTED in lifecycle.notes(e), Deadline.after(wait, "entry"),
                               since)
    assert lifecycle.uid(after) == lifecycle.uid(before), (
        f"the entry was replaced by the restart (UID {lifecycle.uid(before)} -> {lifecycle.uid(after)}): "
        f"it must survive a reconnect within the {lifecycle.GRACE_S:.0f} s grace period")
    assert lifecycle.notes(after)[lifecycle.CONNECTED] != lifecycle.notes(before).get(lifecycle.CONNECTED), (
        "the entry's connectedAt did not change: the restart was never seen as a reconnect")
    # istiod saw the disconnect when the old Envoy exited (at the end of its drain, before `systemctl restart`
    # returned) and scheduled the delete GRACE_S later, to happen unless the entry is connected by then
    # (pilot/pkg/autoregistration/controller.go at 1.30.3): the same entry, connected, past that time.
    past = since + lifecycle.GRACE_S + GRACE_MARGIN_S

    def kept() -> bool:
        now = lifecycle.entry(kube, ip)
        notes = lifecycle.notes(now)
        assert lifecycle.uid(now) == lifecycle.uid(before) and lifecycle.CONNECTED in notes \
            and lifecycle.DISCONNECTED not in notes, (
                f"past the grace period the entry is {lifecycle.uid(now) or 'gone'} with {notes} (was "
                f"{lifecycle.uid(before)}, connected): the reconnect did not keep it")
        return time.monotonic() >= past
    lifecycle.timed("the entry kept and connected past the grace period", kept, bool,
                    Deadline.after(lifecycle.GRACE_S + GRACE_MARGIN_S + wait, "past the grace period"), since)
