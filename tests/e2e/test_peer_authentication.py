"""Beyond the recipe: STRICT mutual TLS on the VM. With PeerAuthentication STRICT in `ratings`, the mesh
path to ratings still works and a client outside the mesh (a pod of a namespace without injection,
calling the VM's address) is refused; answered before, as the control. The policy and the client go
afterwards."""

import pytest

from meshvm import exercises, mesh_security, retry
from meshvm.deadlines import Deadline
from meshvm.recipe import ratings

pytestmark = pytest.mark.exercise


@pytest.mark.order(9)
def test_strict_refuses_plaintext_and_keeps_the_mesh_path(world, kube, vm, agent, client_pod):
    wait = world.cfg.exercise_deadline
    url = f"http://{vm.info.internal_ip}:9080/ratings/123"
    try:
        plain = mesh_security.deploy_plain_client(kube, Deadline.after(wait, "plaintext client"))

        def call():
            return mesh_security.http_call(kube, mesh_security.PLAIN_NS, plain, url)
        retry.until(f"the VM's ratings to answer a plaintext client ({plain}) under PERMISSIVE", call,
                    Deadline.after(wait, "plaintext before STRICT"), accept=lambda r: r[0] == 200, ceiling=5)
        mesh_security.apply_policy(kube, "peer-authentication-strict")
        try:
            retry.until("the VM's sidecar to refuse the plaintext client under STRICT", call,
                        Deadline.after(wait, "STRICT"), accept=mesh_security.refused, ceiling=3)
            retry.until("the mesh path to ratings under STRICT", lambda: exercises.pod_calls_ratings(kube, client_pod),
                        Deadline.after(wait, "mesh path"), accept=lambda a: a == ratings.EXPECTED, ceiling=5)
        finally:
            mesh_security.remove_policy(kube, "peer-authentication-strict", Deadline.after(wait, "remove STRICT"))
        retry.until("the plaintext client answered again once STRICT is gone", call,
                    Deadline.after(wait, "STRICT gone"), accept=lambda r: r[0] == 200, ceiling=3)
    finally:
        mesh_security.remove_plain_client(kube, Deadline.after(wait, "remove the plaintext client"))
