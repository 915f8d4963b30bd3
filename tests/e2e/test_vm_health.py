"""Beyond the recipe, the VM's lifecycle: unhealthy, then healthy. With ratings stopped on the VM the
WorkloadGroup's probe fails: the entry's condition Healthy turns False, callers' Envoys no longer hold
the VM as a healthy endpoint of ratings (read from a caller's /clusters), the page says ratings are
unavailable and a pod's call is answered 503 at once (no hang). Ratings started again: Healthy True,
the stars back. The times are measured (phases.json, lifecycle.json)."""

import time

import pytest

from meshvm import exercises, lifecycle
from meshvm.deadlines import Deadline
from meshvm.recipe import ratings

pytestmark = pytest.mark.exercise
NAME = "test_vm_health"


@pytest.mark.order(12)
def test_the_vm_turns_unhealthy_then_healthy_again(world, kube, ingress, vm, agent, client_pod, book):
    if not world.cfg.wg_probe:
        pytest.skip("--wg-probe is off: istiod does not health-check the VM")
    wait, ip, guard = world.cfg.exercise_deadline, vm.info.internal_ip, world.platform.guard()
    group = kube.get("networking.istio.io/v1", "WorkloadGroup", "ratings", "ratings") or {}
    probe = (group.get("spec") or {}).get("probe") or {}
    budget = lifecycle.probe_budget(probe)
    lifecycle.timed(f"pod {client_pod}'s Envoy to hold the VM ({ip}) as a healthy endpoint of ratings (the control)",
                    lambda: lifecycle.caller_endpoint(kube, client_pod, ip), lambda s: s == "healthy",
                    Deadline.after(wait, "healthy endpoint"), time.monotonic())
    ratings.stop_ratings(vm.shell)
    since = time.monotonic()
    try:
        _, took = lifecycle.timed("the VM's WorkloadEntry Healthy=False once ratings stopped (probe failing)",
                                  lambda: lifecycle.entry(kube, ip), lambda e: exercises.healthy(e or {}) is False,
                                  Deadline.after(budget, "unhealthy"), since)
        book.measure(NAME, "to_unhealthy_s", took)
        state, took = lifecycle.timed(f"pod {client_pod}'s Envoy to hold no healthy endpoint {ip} for ratings",
                                      lambda: lifecycle.caller_endpoint(kube, client_pod, ip),
                                      lambda s: s == "absent" or "failed_eds_health" in str(s),
                                      Deadline.after(wait, "callers' EDS"), since)
        book.measure(NAME, "callers_eds", state)
        book.measure(NAME, "out_of_callers_eds_s", took)
        lifecycle.timed("the product page to say ratings are unavailable", lambda: exercises.ratings_gone_from_page(
            ingress, guard), bool, Deadline.after(wait, "page"), since, transient=(OSError,))
        code = lifecycle.pod_call_code(kube, client_pod)
        assert code == lifecycle.NO_ENDPOINT, (
            f"a pod's call of ratings without a healthy endpoint: {code!r}, expected {lifecycle.NO_ENDPOINT!r} at once (the caller's own Envoy)")
    finally:
        ratings.start_ratings(vm.shell, Deadline.after(wait, "start ratings"))
    since = time.monotonic()
    _, took = lifecycle.timed("the VM's WorkloadEntry Healthy=True once ratings started",
                              lambda: lifecycle.entry(kube, ip), lambda e: exercises.healthy(e or {}) is True,
                              Deadline.after(lifecycle.probe_budget(probe, healthy=True), "healthy"), since)
    book.measure(NAME, "to_healthy_s", took)
    lifecycle.timed(f"pod {client_pod}'s Envoy to hold the VM as a healthy endpoint of ratings again",
                    lambda: lifecycle.caller_endpoint(kube, client_pod, ip), lambda s: s == "healthy",
                    Deadline.after(wait, "healthy endpoint again"), since)
    _, took = lifecycle.timed("the stars back on the product page", lambda: exercises.page_problems(
        exercises.load_pages(ingress, guard)), lambda p: p == [], Deadline.after(wait, "stars"), since, ceiling=5,
        transient=(OSError,))
    book.measure(NAME, "to_stars_s", took)
