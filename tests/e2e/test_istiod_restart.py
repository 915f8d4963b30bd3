"""Beyond the recipe, the VM's lifecycle: istiod restarted (`kubectl rollout restart deployment/istiod`).
The VM's agent follows it: its WorkloadEntry is connected again and names a new istiod pod as
`istio.io/workloadController`; and the inbound path to ratings on the VM still carries identity (a
pod's calls arrive over mutual TLS at ratings' SPIFFE identity, from the VM's metrics): the reconnect
kept the VM's inbound listener, cluster and certificate, as the new istiod sent them (the VM's Envoy
accepted a new LDS and CDS answer first). The times are measured (phases.json, lifecycle.json)."""

import time

import pytest

from meshvm import exercises, lifecycle, telemetry
from meshvm.deadlines import Deadline
from meshvm.recipe import waits

pytestmark = pytest.mark.exercise
NAME = "test_istiod_restart"


@pytest.mark.order(15)
def test_the_vm_follows_istiod_through_a_rollout_restart(world, kube, vm, agent, client_pod, book):
    wait, ip = world.cfg.exercise_deadline, vm.info.internal_ip
    old_pods, before = lifecycle.istiod_pods(kube), lifecycle.entry(kube, ip)
    assert old_pods, "no Running istiod pod before the restart"
    assert lifecycle.notes(before).get(lifecycle.CONTROLLER) in old_pods, (
        f"the VM's entry names {lifecycle.notes(before).get(lifecycle.CONTROLLER)!r}, not an istiod pod of {old_pods}")
    pushes = lifecycle.xds_updates(vm.shell)
    assert len(pushes) == 2, f"the VM's Envoy shows no LDS and CDS update counts: {pushes}"
    lifecycle.rollout_restart(kube, "istio-system", "istiod")
    since = time.monotonic()
    waits.rollout(kube, "istio-system", "istiod", Deadline.after(wait, "istiod rolled out"))
    book.measure(NAME, "rolled_out_s", round(time.monotonic() - since, 1))

    def follows(found):
        notes = lifecycle.notes(found)
        controller = notes.get(lifecycle.CONTROLLER)
        return lifecycle.CONNECTED in notes and controller not in old_pods and controller in lifecycle.istiod_pods(kube)

    after, took = lifecycle.timed(f"the VM's entry connected to a new istiod pod (not one of {old_pods})",
                                  lambda: lifecycle.entry(kube, ip), follows, Deadline.after(wait, "reconnected"), since)
    book.measure(NAME, "reconnected_s", took)
    book.measure(NAME, "same_entry", lifecycle.uid(after) == lifecycle.uid(before))
    # The entry names the new pod once it registered the VM, before its first push reached the VM's Envoy:
    # what follows must run on the new istiod's config, not on the listeners the old one sent.
    _, took = lifecycle.timed("the VM's Envoy took the new istiod's listeners and clusters",
                              lambda: lifecycle.xds_updates(vm.shell),
                              lambda now: all(now.get(k, 0) > v for k, v in pushes.items()),
                              Deadline.after(wait, "pushed"), since)
    book.measure(NAME, "pushed_s", took)
    metrics = telemetry.baseline(vm.shell, Deadline.after(wait, "the VM's metrics"))
    book.measure(NAME, "traffic_back_s", lifecycle.mesh_serves_ratings(kube, client_pod, since,
                                                                       Deadline.after(wait, "traffic back")))
    caller = exercises.pod_principal(kube, "default", client_pod)
    exercises.metrics_grew(vm.shell, metrics, {
        "reporter": "destination", "destination_service": exercises.RATINGS_SERVICE, "source_principal": caller,
        "destination_principal": telemetry.spiffe("ratings", "bookinfo-ratings"),
        "connection_security_policy": "mutual_tls", "response_code": "200"},
        1, f"after istiod's restart, calls from {caller} no longer arrive at the VM over mutual TLS at its identity")
