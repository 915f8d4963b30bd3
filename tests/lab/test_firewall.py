"""The router firewall models GCP VPC rules: default deny ingress, rules by source range, target tag
and protocol/port, applied to a host's primary IP and its alias ranges."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from meshvm.lab.netsafety import run_ip
from meshvm.lab.router import Attachment, FirewallRule, Router
from meshvm.lab.vmhost import VmHost
from tests.lab._helpers import BLOCKED, start_netns_server, start_vm_server, stop, tcp_try
from tests.lab.conftest import VM_TAG, BootVm

pytestmark = pytest.mark.lab

PORT = 9080
NODE_TAG = "gke-node"


@dataclass(frozen=True)
class Scene:
    router: Router
    vm: VmHost
    node: Attachment  # a "GKE node" owning the pod range
    pod_ip: str


@pytest.fixture
def scene(lab_router: Router, boot_vm: BootVm, host_numbers: Iterator[int]) -> Iterator[Scene]:
    addrs = lab_router.addrs
    node = lab_router.attach("gke-node", str(addrs.vm_ip(next(host_numbers))), tags=(NODE_TAG,),
                             alias_ranges=(str(addrs.pod_range),))
    server, vm = None, None
    try:
        pod_ip = str(addrs.pod_range.network_address + 7)
        run_ip("addr", "add", f"{pod_ip}/32", "dev", "lo", netns=node.netns)
        vm = boot_vm("fw-vm", tags=(VM_TAG, "ratings"), agent_delay=0.0, dpkg_lock_hold=0.0)
        server = start_vm_server(vm, PORT)
        yield Scene(lab_router, vm, node, pod_ip)
    finally:
        if server and vm:
            vm.stop(server)
        for rule in lab_router.rules():
            if rule.name.startswith("test-"):
                lab_router.delete_rule(rule.name)
        lab_router.detach("gke-node")


def from_pod(s: Scene, port: int = PORT) -> str:
    return tcp_try(s.node.netns, s.pod_ip, s.vm.ip, port)


def pods_to_vm(name: str, tags: tuple[str, ...], s: Scene, ports: tuple[str, ...] = (str(PORT),)) -> FirewallRule:
    return FirewallRule(name, (str(s.router.addrs.pod_range),), tags, (("tcp", ports),))


def test_ingress_denied_without_a_rule(scene: Scene) -> None:
    assert from_pod(scene) == BLOCKED


def test_rule_admits_its_source_range_only(scene: Scene) -> None:
    scene.router.add_rule(pods_to_vm("test-pods-to-ratings", ("ratings",), scene))
    assert from_pod(scene) == "ok"
    # the node's own address is not in the pod range
    assert tcp_try(scene.node.netns, scene.node.ip, scene.vm.ip, PORT) == BLOCKED


def test_rule_for_another_target_tag_does_not_admit_until_the_vm_carries_it(scene: Scene) -> None:
    scene.router.add_rule(pods_to_vm("test-pods-to-details", ("details",), scene))
    assert from_pod(scene) == BLOCKED
    scene.router.set_tags(scene.vm.name, (VM_TAG, "details"))
    assert from_pod(scene) == "ok"


def test_deleting_the_rule_blocks_again(scene: Scene) -> None:
    scene.router.add_rule(pods_to_vm("test-pods-to-ratings", ("ratings",), scene))
    assert from_pod(scene) == "ok"
    scene.router.delete_rule("test-pods-to-ratings")
    assert from_pod(scene) == BLOCKED


def test_rule_for_another_port_does_not_admit(scene: Scene) -> None:
    scene.router.add_rule(pods_to_vm("test-pods-to-other-port", ("ratings",), scene, ports=("9000-9079", "9081")))
    assert from_pod(scene) == BLOCKED


def test_alias_range_is_a_target_and_egress_is_free(scene: Scene) -> None:
    """VM -> pod IP (an alias range of the node) needs a rule targeting the node's tag."""
    netns = scene.node.netns
    server = start_netns_server(netns, scene.pod_ip, 8080)
    try:
        vm_ns = scene.vm.attachment.netns if scene.vm.attachment else ""
        assert tcp_try(vm_ns, scene.vm.ip, scene.pod_ip, 8080) == BLOCKED
        scene.router.add_rule(FirewallRule("test-vm-to-pods", (f"{scene.vm.ip}/32",), (NODE_TAG,),
                                           (("tcp", ("8080",)),)))
        assert tcp_try(vm_ns, scene.vm.ip, scene.pod_ip, 8080) == "ok"
    finally:
        stop(server)


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="protocol"):
        FirewallRule("x", ("10.0.0.0/8",), (), (("gre", ()),))
    with pytest.raises(ValueError, match="port"):
        FirewallRule("x", ("10.0.0.0/8",), (), (("tcp", ("0-70000",)),))
    with pytest.raises(ValueError, match="name"):
        FirewallRule("Bad_Name", ("10.0.0.0/8",))
