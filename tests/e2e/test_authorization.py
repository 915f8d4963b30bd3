"""Beyond the recipe: authorization on the VM path. An ALLOW policy on ratings for reviews' identity only:
the stars stay, another mesh client gets 403; a DENY of the VM's identity on details: the VM's call gets
403. Each policy is removed afterwards and its path answers again."""

import pytest

from meshvm import exercises, mesh_security, retry
from meshvm.deadlines import Deadline
from meshvm.recipe import ratings

pytestmark = pytest.mark.exercise


@pytest.mark.order(10)
def test_only_reviews_may_call_ratings_on_the_vm(world, kube, ingress, vm, agent, client_pod):
    wait = world.cfg.exercise_deadline
    url = "ratings.ratings:9080/ratings/123"
    mesh_security.apply_policy(kube, "authz-ratings-readers")
    try:
        retry.until(f"ratings to refuse pod {client_pod} (not reviews)",
                    lambda: mesh_security.http_call(kube, "default", client_pod, url),
                    Deadline.after(wait, "403"), accept=lambda r: r == mesh_security.DENIED, ceiling=3)
        retry.until("the stars on the product page (reviews is allowed)",
                    lambda: exercises.page_problems(exercises.load_pages(ingress, world.platform.guard())), Deadline.after(wait, "stars"),
                    transient=(OSError,), accept=lambda problems: problems == [], ceiling=10)
    finally:
        mesh_security.remove_policy(kube, "authz-ratings-readers", Deadline.after(wait, "remove ALLOW"))
    retry.until(f"ratings to answer pod {client_pod} again", lambda: exercises.pod_calls_ratings(kube, client_pod),
                Deadline.after(wait, "policy gone"), accept=lambda a: a == ratings.EXPECTED, ceiling=5)


@pytest.mark.order(11)
def test_details_denies_the_vms_identity(world, kube, vm, agent):
    wait = world.cfg.exercise_deadline
    url = exercises.DETAILS_PATH
    mesh_security.apply_policy(kube, "authz-deny-vm-on-details")
    try:
        retry.until("details to refuse the VM's identity", lambda: mesh_security.vm_call(vm.shell, url),
                    Deadline.after(wait, "403"), accept=lambda r: r == mesh_security.DENIED, ceiling=3)
    finally:
        mesh_security.remove_policy(kube, "authz-deny-vm-on-details", Deadline.after(wait, "remove DENY"))
    retry.until("details to answer the VM again", lambda: exercises.vm_calls_details(vm.shell),
                Deadline.after(wait, "policy gone"), accept=exercises.details_ok, ceiling=5)
