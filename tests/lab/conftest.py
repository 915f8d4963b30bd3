"""Fixtures for the lab self-tests: one lab network per session, VMs per test, an SSH key."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshvm.lab import addressing
from meshvm.lab.router import FirewallRule, Router
from meshvm.lab.vmhost import VmHost
from tests.lab._helpers import SSH_USER
from tests.root import require_root

VM_TAG = "lab-vm"
BOOT_TIMEOUT = 20.0


@pytest.fixture(scope="session")
def lab_router() -> Iterator[Router]:
    """The session's lab network; the host machine may SSH to every VM (tag lab-vm)."""
    require_root()
    addrs = addressing.allocate(f"pytest-lab-{os.getpid()}")
    router = Router(addrs)
    try:
        router.up()
        router.add_rule(FirewallRule("allow-ssh-from-host", (f"{router.external_source}/32",), (VM_TAG,),
                                     (("tcp", ("22",)),)))
        yield router
    finally:
        router.down()
        addrs.release()


@pytest.fixture(scope="session")
def host_numbers() -> Iterator[int]:
    return itertools.count(10)


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sshkey")
    d.chmod(0o700)
    key = d / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab-test", "-f", str(key)],
                   check=True, timeout=10)
    return key


BootVm = Callable[..., VmHost]


@pytest.fixture
def boot_vm(lab_router: Router, ssh_key: Path, host_numbers: Iterator[int],
            tmp_path: Path) -> Iterator[BootVm]:
    """Factory: boot a VM whose metadata authorises `ssh_key` for labuser; halted at teardown."""
    vms: list[VmHost] = []

    def boot(name: str, **kwargs: object) -> VmHost:
        pub = ssh_key.with_suffix(".pub").read_text().strip()
        ip = str(lab_router.addrs.vm_ip(next(host_numbers)))
        kwargs.setdefault("tags", (VM_TAG,))
        vm = VmHost(lab_router, name, ip, str(tmp_path / name), metadata={"ssh-keys": f"{SSH_USER}:{pub}"},
                    **kwargs)  # type: ignore[arg-type]
        vms.append(vm)
        vm.boot(time.monotonic() + BOOT_TIMEOUT)
        return vm

    try:
        yield boot
    finally:
        for vm in reversed(vms):
            vm.halt()
