"""Put it all together: the product page through the ingress gateway shows the VM's ratings."""

import pytest

from meshvm import exercises, retry, telemetry
from meshvm.deadlines import Deadline
from meshvm.recipe import ratings

pytestmark = pytest.mark.exercise


@pytest.mark.order(4)
def test_no_ratings_workload_outside_the_ratings_namespace(kube):
    found = [f"{o['kind']} {o['metadata']['namespace']}/{o['metadata']['name']}"
             for o in kube.list("v1", "Service") + kube.list("apps/v1", "Deployment")
             if o["metadata"]["name"].startswith("ratings") and o["metadata"]["namespace"] != "ratings"]
    assert found == [], "stars could come from these instead of the VM"


@pytest.mark.order(5)
def test_product_page_shows_the_vms_stars(world, kube, ingress, vm, agent):
    """The stars, and the VM's proxy saw reviews (by its identity, over mTLS) ask ratings for them."""
    before = telemetry.vm_requests(vm.shell)
    last = []

    def problems():
        last[:] = exercises.load_pages(ingress, world.platform.guard())
        return exercises.page_problems(last)

    retry.until(f"{exercises.LOADS} loads of /productpage with 9 stars on every v2/v3 page", problems,
                Deadline.after(world.cfg.exercise_deadline, "the page"),
                transient=(OSError,), accept=lambda found: found == [], ceiling=10)
    rated = sum(r.version in ("v2", "v3") for r in last)
    reviews = exercises.workload_principal(kube, "default", "reviews-v2")
    exercises.metrics_grew(vm.shell, before, {
        "reporter": "destination", "destination_service": exercises.RATINGS_SERVICE, "source_principal": reviews,
        "destination_principal": telemetry.spiffe("ratings", "bookinfo-ratings"),
        "connection_security_policy": "mutual_tls", "response_code": "200"},
        rated, f"the stars of {rated} rated pages did not come from ratings on the VM, asked by {reviews}")


@pytest.mark.order(6)
def test_stars_come_from_the_vm(world, ingress, vm, agent):
    """Negative control: ratings stopped on the VM -> unavailable; restarted -> stars again."""
    wait = world.cfg.exercise_deadline
    try:
        exercises.stop_ratings_shows_unavailable(vm.shell, ingress, world.platform.guard(), Deadline.after(wait, "stop"))
    finally:
        ratings.start_ratings(vm.shell, Deadline.after(wait, "restart ratings"))
    retry.until("the stars back after ratings restarted on the VM",
                lambda: exercises.page_problems(exercises.load_pages(ingress, world.platform.guard())), Deadline.after(wait, "stars back"),
                transient=(OSError,), accept=lambda problems: problems == [], ceiling=10)
