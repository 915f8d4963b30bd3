"""Halting a VM and taking the network down leaves nothing of the run behind (but the shared blackhole)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from meshvm.lab import addressing
from meshvm.lab.leaks import find_leftovers
from meshvm.lab.netsafety import LAB_RANGE, run_ip
from meshvm.lab.router import FirewallRule, Router
from meshvm.lab.vmhost import VmHost

pytestmark = pytest.mark.lab


def test_nothing_left_after_halt_and_down(tmp_path: Path) -> None:
    addrs = addressing.allocate("pytest-teardown")
    router = Router(addrs)
    vm = VmHost(router, "leak-vm", str(addrs.vm_ip(10)), str(tmp_path / "vm"), agent_delay=0.0, dpkg_lock_hold=0.0)
    try:
        router.up()
        router.add_rule(FirewallRule("allow-all", ("0.0.0.0/0",)))
        router.attach("node", str(addrs.vm_ip(11)), alias_ranges=(str(addrs.pod_range),))
        vm.boot(time.monotonic() + 20)
        spawned = vm.spawn(["sleep", "600"])  # a stray the halt must handle
        during = "\n".join(find_leftovers(addrs.tag))
        for kind in ("netns", "link", "route", "cgroup", "process", "claim", "mount"):
            assert f"{kind} " in during, f"find_leftovers misses the live {kind}:\n{during}"
    finally:
        vm.halt()
        router.down()
        addrs.release()
    spawned.wait(5)
    assert find_leftovers(addrs.tag) == []
    assert addrs.tag not in run_ip("netns", "list").stdout
    blackhole = json.loads(run_ip("-j", "route", "show", "type", "blackhole", "exact", LAB_RANGE).stdout)
    assert blackhole, "the shared blackhole route must stay"
