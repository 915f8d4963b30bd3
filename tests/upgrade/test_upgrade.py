"""An Istio upgrade with the VM in the mesh (nox -s upgrade), in-place or canary (--strategy; the other
strategy's phases are deselected): each phase a testcase, after the recipe and its four exercises at --from
(tests/e2e, run first in the same session). Background traffic rides every path from the first phase to the
verdict; after each phase every layer must run the release it should (meshvm.upgrade_phases.expected) and
the four exercises pass again (meshvm.exercises.all_four). A phase after a failed one is skipped naming it;
the verdict judges the traffic of every phase that ran. The facts: docs/facts.md section 6, "Upgrading with
a VM" and "Canary"."""

import time

import pytest

from meshvm import exercises, lifecycle, retry, upgrade_phases, versions
from meshvm.deadlines import Deadline
from meshvm.recipe import canary
from meshvm.recipe import upgrade as steps

pytestmark = pytest.mark.upgrade
BASELINE = 25  # requests on every path before the upgrade starts, and after each disruption (5 s each)
# Before the baseline, every path must have answered this many times in a row (10 s): the exercises just
# before stopped ratings on the VM, and its health probe (period 5 s) may turn the entry unhealthy late.
STEADY = 50
SETTLE_S = 30  # for the layers to show what the phase's rollouts and restart did
# A replaced pod's sidecar drains this long (ProxyConfig terminationDrainDuration's default, 5 s:
# pkg/config/mesh/mesh.go at 1.30.3) while its app is gone: a caller still routed to it gets 503 until
# its endpoints are pushed. BookInfo's announced disruption lasts that long beyond the rollout.
TERMINATION_DRAIN_S = 5.0


def phase_deadline(upgrade, name):
    return Deadline.after(upgrade_phases.phase(upgrade.strategy, name).deadline, f"upgrade phase {name}")


def revision(world):
    """The canary revision of --to (None in place)."""
    return canary.revision_of(str(world.cfg.upgrade_to)) if world.cfg.upgrade_strategy == "canary" else None


def gate(upgrade, name):
    if reason := upgrade.blocked(name):
        pytest.skip(f"needs the upgrade up to phase {name}: {reason}")


def layers_as_expected(world, kube, vm, record, phase):
    """Every layer on the release it must run after `phase` (recorded in upgrade.json either way), within
    SETTLE_S: pods of a finished rollout may still be going."""
    cfg = world.cfg
    want = upgrade_phases.expected(cfg.upgrade_strategy, phase, cfg.istio_version, str(cfg.upgrade_to))
    found = []

    def look():
        record.facts["versions"] = seen = versions.layers(kube, vm.shell, revision(world))
        found[:] = versions.problems(seen, want)
        return found

    try:
        retry.until(f"every layer on its release after phase {phase}", look, Deadline.after(SETTLE_S, "the layers"),
                    accept=lambda problems: problems == [], ceiling=5)
    except retry.WaitFailed:
        pass  # the assertion names every layer that is not
    assert found == [], f"after phase {phase}: " + "; ".join(found)


def judged_after_the_disruption(upgrade, deadline):
    """The phase goes on until every path has BASELINE requests after its disruption ended: its success
    rate then judges how the mesh serves once the restart is over, not only the restart itself."""
    retry.until(f"{BASELINE} requests on every path after the announced disruption", upgrade.after_disruptions,
                deadline, accept=lambda counts: min(counts.values()) >= BASELINE, ceiling=1)


def restarted(upgrade, kube, record, deadline):
    """The client, then BookInfo, restarted inside one announced disruption: injected again, at --to. The
    client first: the pod path's loop follows it to its new pod."""
    with upgrade.recorder.disruption("the client and BookInfo's pods replaced", tail_s=TERMINATION_DRAIN_S):
        upgrade.follow_client(kube, steps.restart_client(kube, deadline))
        record.facts["restarted"] = steps.restart_bookinfo(kube, deadline)


def four(world, kube, vm, upgrade, ingress):
    """The four exercises, from the client pod the background traffic runs in."""
    exercises.all_four(kube, vm.shell, vm.info.internal_ip, world.cfg.wg_probe, upgrade.client_pod, ingress,
                       world.platform.guard(), world.cfg.exercise_deadline)


def controller_among(world, kube, vm, pods, what):
    """The VM's entry's controller once it is one of `pods()`, within an exercise's wait (the entry may be
    gone for a moment while its agent reconnects)."""
    return retry.until(what, lambda: lifecycle.notes(lifecycle.entry(kube, vm.info.internal_ip)).get(
        lifecycle.CONTROLLER), Deadline.after(world.cfg.exercise_deadline, what), accept=lambda c: c in pods(), ceiling=2)


def moved_vm(world, graph, work, upgrade, kube, vm, istioctl, record, files_args=()):
    """The VM's files again (istioctl of --to), the package of --to, the agent restarted inside an announced
    disruption, its entry back and healthy; its layers, the four exercises, traffic after the restart."""
    ip, to, deadline = vm.info.internal_ip, str(world.cfg.upgrade_to), phase_deadline(upgrade, "vm")
    before = lifecycle.entry(kube, ip)
    files = work.vm_files_of(istioctl, graph, f"vm_files-{to}", deadline, *files_args)
    package = world.platform.sidecar_package(to, world.secrets.sub(f"deb-{to}"))
    waits = world.cfg.exercise_deadline  # each as long as exercise 1's (the agent's first start)
    steps.vm_in_place(vm.shell, files, package, deadline, waits,
                      restarting=lambda: upgrade.recorder.disruption("the VM's agent restarts", outage=True),
                      back=lambda: exercises.entry_registered(kube, ip, world.cfg.wg_probe, Deadline.after(
                          min(waits, deadline.remaining()), "the VM's entry back")))
    layers_as_expected(world, kube, vm, record, "vm")
    judged_after_the_disruption(upgrade, deadline)
    after = lifecycle.entry(kube, ip)
    # Back within the grace period: the same entry; away longer: a fresh one (docs/facts.md section 6).
    record.facts["entry"] = {"same_uid": lifecycle.uid(after) == lifecycle.uid(before),
                             "controller": lifecycle.notes(after).get(lifecycle.CONTROLLER)}


@pytest.mark.order(20)
@pytest.mark.upgrade("before")
def test_traffic_flows_on_every_path_at_the_first_release(world, upgrade, kube, vm, agent, client_pod, ingress):
    deadline = phase_deadline(upgrade, "before")
    with upgrade.phase("before", judged=False) as record:
        upgrade.start_traffic(kube, client_pod, vm.shell, ingress, world.platform.guard(),
                              upgrade_phases.worst_case_s(upgrade.strategy, world.cfg.exercise_deadline))
        retry.until(f"{STEADY} successes in a row on every path (not judged)", upgrade.steady, deadline,
                    accept=lambda runs: min(runs.values()) >= STEADY, ceiling=1)
        with upgrade.recorder.phase("before"):
            start = upgrade.counts()
            retry.until(f"{BASELINE} requests on every path", upgrade.counts, deadline,
                        accept=lambda counts: min(counts[p] - start[p] for p in counts) >= BASELINE, ceiling=1)
            layers_as_expected(world, kube, vm, record, "before")


# -- in place ------------------------------------------------------------------------------------------------

@pytest.mark.order(21)
@pytest.mark.upgrade("control_plane")
@pytest.mark.strategy("in-place")
@pytest.mark.timeout(0)  # bounded by the phase's deadline and its exercise waits
def test_control_plane_moves_in_place_and_the_old_proxies_still_work(world, upgrade, kube, vm, mesh, next_istioctl,
                                                                     ingress):
    gate(upgrade, "control_plane")
    cfg, ip = world.cfg, vm.info.internal_ip
    with upgrade.phase("control_plane") as record:
        old, since = lifecycle.istiod_pods(kube), time.monotonic()
        steps.control_plane_in_place(next_istioctl, kube, list(cfg.ssh_source_ranges), cfg.istio_hub, cfg.eastwest_lb,
                                     vm.info.external_ip, mesh.cluster_id, mesh.eastwest,
                                     world.secrets.sub("work-upgrade"), phase_deadline(upgrade, "control_plane"))

        def follows(found):
            controller = lifecycle.notes(found).get(lifecycle.CONTROLLER)
            return controller not in old and controller in lifecycle.istiod_pods(kube)

        entry, took = lifecycle.timed(f"the VM's entry connected to an istiod pod of {cfg.upgrade_to} (not {old})",
                                      lambda: lifecycle.entry(kube, ip), follows,
                                      Deadline.after(cfg.exercise_deadline, "the VM reconnected"), since)
        record.facts["entry"] = {"controller": lifecycle.notes(entry).get(lifecycle.CONTROLLER), "reconnected_s": took}
        layers_as_expected(world, kube, vm, record, "control_plane")
        four(world, kube, vm, upgrade, ingress)  # the skew point: old proxies, new istiod


@pytest.mark.order(22)
@pytest.mark.upgrade("vm")
@pytest.mark.strategy("in-place")
@pytest.mark.timeout(0)
def test_the_vm_moves_to_the_next_release(world, graph, work, upgrade, kube, vm, next_istioctl, ingress):
    gate(upgrade, "vm")
    with upgrade.phase("vm") as record:
        moved_vm(world, graph, work, upgrade, kube, vm, next_istioctl, record)
        four(world, kube, vm, upgrade, ingress)


@pytest.mark.order(23)
@pytest.mark.upgrade("bookinfo")
@pytest.mark.strategy("in-place")
@pytest.mark.timeout(0)
def test_bookinfo_restarts_onto_the_next_release(world, upgrade, kube, vm, ingress):
    gate(upgrade, "bookinfo")
    deadline = phase_deadline(upgrade, "bookinfo")
    with upgrade.phase("bookinfo") as record:
        restarted(upgrade, kube, record, deadline)
        layers_as_expected(world, kube, vm, record, "bookinfo")
        four(world, kube, vm, upgrade, ingress)
        judged_after_the_disruption(upgrade, deadline)


# -- canary --------------------------------------------------------------------------------------------------

@pytest.mark.order(21)
@pytest.mark.upgrade("control_plane")
@pytest.mark.strategy("canary")
@pytest.mark.timeout(0)
def test_a_canary_control_plane_runs_beside_the_old_one(world, upgrade, kube, vm, mesh, next_istioctl, ingress):
    gate(upgrade, "control_plane")
    cfg, rev = world.cfg, revision(world)
    with upgrade.phase("control_plane") as record:
        old = lifecycle.istiod_pods(kube, canary.OLD)
        canary.control_plane(next_istioctl, kube, list(cfg.ssh_source_ranges), cfg.istio_hub, cfg.eastwest_lb,
                             vm.info.external_ip, mesh.cluster_id, mesh.eastwest, rev,
                             world.secrets.sub("work-upgrade"), phase_deadline(upgrade, "control_plane"))
        layers_as_expected(world, kube, vm, record, "control_plane")
        record.facts["entry"] = {"controller": controller_among(
            world, kube, vm, lambda: old, f"the VM's entry still controlled by the old istiod ({old}): nothing moved it")}
        four(world, kube, vm, upgrade, ingress)  # both control planes: every sidecar and the VM still on the old one (the gateways moved)


@pytest.mark.order(22)
@pytest.mark.upgrade("bookinfo")
@pytest.mark.strategy("canary")
@pytest.mark.timeout(0)
def test_bookinfo_moves_to_the_canary_revision(world, upgrade, kube, vm, ingress):
    gate(upgrade, "bookinfo")
    deadline = phase_deadline(upgrade, "bookinfo")
    with upgrade.phase("bookinfo") as record:
        canary.move_namespace(kube, "default", revision(world))
        restarted(upgrade, kube, record, deadline)
        layers_as_expected(world, kube, vm, record, "bookinfo")
        four(world, kube, vm, upgrade, ingress)
        judged_after_the_disruption(upgrade, deadline)


@pytest.mark.order(23)
@pytest.mark.upgrade("vm")
@pytest.mark.strategy("canary")
@pytest.mark.timeout(0)
def test_the_vm_moves_to_the_canary_revision(world, graph, work, upgrade, kube, vm, next_istioctl, ingress):
    gate(upgrade, "vm")
    rev = revision(world)
    with upgrade.phase("vm") as record:
        moved_vm(world, graph, work, upgrade, kube, vm, next_istioctl, record, (rev,))
        record.facts["entry"]["controller"] = controller_among(
            world, kube, vm, lambda: lifecycle.istiod_pods(kube, rev), f"the VM's entry controlled by an istiod-{rev} pod")
        four(world, kube, vm, upgrade, ingress)


@pytest.mark.order(24)
@pytest.mark.upgrade("old_revision")
@pytest.mark.strategy("canary")
@pytest.mark.timeout(0)
def test_the_old_revision_goes_and_nothing_used_it(world, upgrade, kube, vm, next_istioctl, ingress):
    gate(upgrade, "old_revision")
    with upgrade.phase("old_revision") as record:
        users = canary.old_revision_users(kube, ("default", "istio-system"))
        record.facts["old_revision_users"] = users
        assert users == [], f"pods of the old revision before it is removed: {users}"
        canary.remove_old_revision(next_istioctl, kube, phase_deadline(upgrade, "old_revision"))
        layers_as_expected(world, kube, vm, record, "old_revision")
        four(world, kube, vm, upgrade, ingress)


@pytest.mark.order(29)
@pytest.mark.upgrade("verdict")
def test_the_traffic_held_through_every_phase(upgrade):
    if not upgrade.records:
        pytest.skip("the upgrade did not start")
    problems = upgrade.finish(phase_deadline(upgrade, "verdict"))
    assert problems == [], "the background traffic (upgrade.json, traffic.png):\n" + "\n".join(problems)
