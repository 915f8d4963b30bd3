"""Lab traffic stays on this machine: addresses outside the lab, or not routed to a lab link, are refused."""

from __future__ import annotations

import ipaddress
import json
import subprocess

import pytest

from meshvm.lab import addressing, netsafety
from meshvm.lab.netsafety import LAB_RANGE, LabSafetyError, assert_local_route, ensure_blackhole, run_ip
from meshvm.lab.router import Router

pytestmark = pytest.mark.lab


def blackhole_present() -> bool:
    return bool(json.loads(run_ip("-j", "route", "show", "type", "blackhole", "exact", LAB_RANGE).stdout or "[]"))


@pytest.mark.parametrize("ip", ["8.8.8.8", "192.0.2.1", "127.0.0.1", "10.0.0.1", "not-an-ip"])
def test_outside_the_lab_range_is_refused(lab_router: Router, ip: str) -> None:
    with pytest.raises(LabSafetyError, match="not inside the lab range"):
        assert_local_route(ip)


def test_lab_address_no_run_routes_is_refused(lab_router: Router) -> None:
    ensure_blackhole()
    assert blackhole_present()
    lab = ipaddress.ip_network(LAB_RANGE)
    unrouted = next(str(b.network_address + 10) for b in lab.subnets(new_prefix=22)
                    if not b.overlaps(lab_router.addrs.block) and _no_route_but_blackhole(str(b.network_address + 10)))
    with pytest.raises(LabSafetyError, match="refusing to contact"):
        assert_local_route(unrouted)


def test_routed_lab_host_is_accepted_but_own_uplink_address_is_not(lab_router: Router) -> None:
    assert_local_route(str(lab_router.addrs.vm_ip(200)))  # routed via the run's uplink
    with pytest.raises(LabSafetyError, match="local"):  # the host machine itself, via lo
        assert_local_route(lab_router.external_source)


def test_blocks_are_distinct_and_stale_claims_are_taken_over(lab_router: Router) -> None:
    first = addressing.allocate("pytest-alloc-a")
    try:
        assert not first.block.overlaps(lab_router.addrs.block)
        assert first.tag != lab_router.addrs.tag
        names = [first.router_netns, first.uplink_host_dev, first.uplink_router_dev,
                 first.host_netns(99, "a-very-long-gce-instance-name"), first.router_dev(99)]
        assert all(len(n) <= 15 and n.startswith(first.tag) for n in names), names
        assert [first.vm_subnet.prefixlen, first.pod_range.prefixlen] == [24, 24]
    finally:
        first.release()
    dead = subprocess.Popen(["true"])
    dead.wait(5)
    with open(first.claim_path, "w") as f:  # a claim left by a run that died
        json.dump({"run_id": "dead-run", "tag": "mvlabdead00", "pid": dead.pid, "start": 1}, f)
    second = addressing.allocate("pytest-alloc-b")
    try:
        assert second.block == first.block
    finally:
        second.release()


def _no_route_but_blackhole(ip: str) -> bool:
    return run_ip("route", "get", ip, check=False).returncode != 0


def test_blackhole_is_refused_over_a_range_the_machine_needs(tmp_path):
    """The resolver once lived inside a candidate lab range: a blackhole there cut off DNS."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 172.29.255.53\n")
    assert netsafety.range_in_use(str(resolv)) == "the nameserver 172.29.255.53"
    resolv.write_text("nameserver 10.255.255.53\n")
    assert netsafety.range_in_use(str(resolv)) is None


def test_a_route_over_a_device_the_run_did_not_create_is_refused(lab_router: Router) -> None:
    """An admin's `mv0` carrying a lab address: named like the lab's old prefix, but no run's uplink."""
    ip = str(lab_router.addrs.vm_ip(201))
    run_ip("link", "add", "mv0", "type", "veth", "peer", "name", "mv0peer")
    try:
        run_ip("link", "set", "mv0", "up")
        run_ip("route", "add", f"{ip}/32", "dev", "mv0")
        with pytest.raises(LabSafetyError, match=r"via dev mv0 \(expected the uplink of the run that claimed it"):
            assert_local_route(ip)
        assert netsafety.range_in_use("/dev/null") == f"the route {ip} via mv0"
    finally:
        run_ip("link", "del", "mv0", check=False)
    assert_local_route(ip)  # over the run's own uplink again
