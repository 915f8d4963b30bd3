"""Put it all together: the product page through the ingress gateway shows the VM's ratings."""

import pytest

from meshvm import exercises, retry
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
    exercises.page_shows_vm_stars(kube, vm.shell, ingress, world.platform.guard(),
                                  Deadline.after(world.cfg.exercise_deadline, "the page"))


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
