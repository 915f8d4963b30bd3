"""Beyond the recipe, the VM's lifecycle: the agent stopped past the grace period. `systemctl stop istio`:
the entry is marked disconnected (`istio.io/disconnectedAt`), then deleted once the grace period is
over, and a pod's call of ratings is answered 503 at once (no hang). `systemctl start istio`: a fresh
entry (a new UID) and the traffic back. The times are measured (phases.json, lifecycle.json)."""

import time

import pytest

from meshvm import exercises, lifecycle
from meshvm.deadlines import Deadline
from meshvm.recipe import sidecar

pytestmark = pytest.mark.exercise
NAME = "test_agent_stopped"


@pytest.mark.order(14)
def test_an_agent_away_past_the_grace_period_registers_afresh(world, kube, vm, agent, client_pod, book):
    wait, ip = world.cfg.exercise_deadline, vm.info.internal_ip
    first = lifecycle.uid(lifecycle.entry(kube, ip))
    assert first, f"no WorkloadEntry ratings-{ip} before the agent stopped"
    vm.shell.run("systemctl stop istio", sudo=True, step="lifecycle: systemctl stop istio")
    since = time.monotonic()
    try:
        _, took = lifecycle.timed(f"the entry annotated {lifecycle.DISCONNECTED}", lambda: lifecycle.entry(kube, ip),
                                  lambda e: e is None or lifecycle.DISCONNECTED in lifecycle.notes(e),
                                  Deadline.after(wait, "disconnected"), since)
        book.measure(NAME, "to_disconnected_s", took)
        _, took = lifecycle.timed("the entry deleted after the grace period", lambda: lifecycle.entry(kube, ip),
                                  lambda e: e is None, Deadline.after(wait, "deleted"), since)
        book.measure(NAME, "to_deleted_s", took)
        lifecycle.timed(f"pod {client_pod}'s Envoy to hold the VM ({ip}) no more", lambda: lifecycle.caller_endpoint(
            kube, client_pod, ip), lambda state: state == "absent", Deadline.after(wait, "callers' EDS"), since)
        code = lifecycle.pod_call_code(kube, client_pod)
        assert code == lifecycle.NO_ENDPOINT, (
            f"a pod's call of ratings with the VM gone from the mesh: {code!r}, expected {lifecycle.NO_ENDPOINT!r} at once (the caller's own Envoy)")
    finally:
        since = time.monotonic()
        sidecar.start_sidecar(vm.shell, Deadline.after(wait, "the agent started again"))
    again, took = lifecycle.timed("a fresh WorkloadEntry for the VM", lambda: lifecycle.entry(kube, ip),
                                  lambda e: not exercises.entry_problems(e, ip, world.cfg.wg_probe),
                                  Deadline.after(wait, "registered"), since)
    book.measure(NAME, "to_registered_s", took)
    assert lifecycle.uid(again) != first, f"the entry kept its UID {first}: it was never deleted"
    book.measure(NAME, "traffic_back_s", lifecycle.mesh_serves_ratings(kube, client_pod, since,
                                                                       Deadline.after(wait, "traffic back")))
