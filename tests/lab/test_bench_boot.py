"""Benchmark: VM boot to SSH banner.

Target: < 1 s per boot on this machine (2 cores); measured, not asserted.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshvm.lab.router import Router
from meshvm.lab.vmhost import VmHost

pytestmark = pytest.mark.lab


def test_boot_to_ssh(benchmark, lab_router: Router, host_numbers: Iterator[int], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    vms: list[VmHost] = []
    names = itertools.count()

    def setup() -> tuple[tuple[VmHost], dict[str, object]]:
        if vms:
            vms[-1].halt()  # halting the previous round's VM is not part of the measurement
        n = next(names)
        vm = VmHost(lab_router, f"bench{n}", str(lab_router.addrs.vm_ip(next(host_numbers))),
                    str(tmp_path / f"bench{n}"), agent_delay=0.0, dpkg_lock_hold=0.0)
        vms.append(vm)
        return (vm,), {}

    try:
        benchmark.pedantic(lambda vm: vm.boot(time.monotonic() + 20), setup=setup, rounds=3, iterations=1)
    finally:
        if vms:
            vms[-1].halt()
