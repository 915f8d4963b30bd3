"""Beyond the recipe: the VM's workload identity. Its Envoy holds the certificate of the VM's service
account (`spiffe://<trust domain>/ns/ratings/sa/bookinfo-ratings`), signed by the mesh's root. Right
after registration: the paths the other exercises check all depend on this identity (exercise 4 checks
that reviews' calls arrive over mutual TLS at this identity)."""

import pytest

from meshvm import mesh_security, retry, telemetry
from meshvm.deadlines import Deadline

pytestmark = pytest.mark.exercise
VM_IDENTITY = telemetry.spiffe("ratings", "bookinfo-ratings")
AFTER_REGISTRATION = {"after": "test_vm_registration.py::test_workload_entry_appears_when_the_vm_agent_starts",
                      "before": "test_vm_to_mesh.py::test_vm_reaches_details_through_its_sidecar"}


@pytest.mark.order(**AFTER_REGISTRATION)
def test_the_vms_envoy_holds_its_service_accounts_certificate_from_the_mesh_root(world, kube, vm, agent):
    roots = mesh_security.mesh_roots(kube)
    problems = retry.until(  # only the certificate's arrival is waited for: a wrong one is final
        "the VM's Envoy to hold a workload certificate",
        lambda: mesh_security.identity_problems(mesh_security.vm_workload_chain(vm.shell), roots, VM_IDENTITY),
        Deadline.after(world.cfg.exercise_deadline, "the VM's certificate"),
        accept=lambda p: p != [mesh_security.NO_CERTIFICATE], ceiling=5)
    assert problems == [], f"the VM's Envoy should hold a certificate for {VM_IDENTITY} from the mesh root: {problems}"
