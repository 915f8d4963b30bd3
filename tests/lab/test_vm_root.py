"""A VM's own root: writes stay in its upper dir, first-boot apt holds the dpkg lock, no way out."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from meshvm.lab.hostsys import wait_until
from meshvm.lab.vmhost import VmHost
from tests.lab.conftest import BOOT_TIMEOUT, BootVm

pytestmark = pytest.mark.lab

DPKG_LOCK_HOLD = 3.0
# A POSIX record-lock probe, the kind apt and dpkg take (not flock).
TRY_LOCK = (
    "import fcntl, os\n"
    "fd = os.open('/var/lib/dpkg/lock-frontend', os.O_RDWR)\n"
    "try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n    print('held')\n"
    "else:\n    print('free')\n"
)


def dpkg_lock_state(vm: VmHost) -> str:
    proc = vm.run(["python3", "-c", TRY_LOCK], timeout=10)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_dpkg_lock_held_after_boot_and_apt_waits_for_it(boot_vm: BootVm) -> None:
    vm = boot_vm("apt-vm", dpkg_lock_hold=DPKG_LOCK_HOLD)
    booted = time.monotonic()
    assert dpkg_lock_state(vm) == "held"

    apt = vm.run(["apt-get", "-o", "DPkg::Lock::Timeout=60", "-y", "remove", "lab-no-such-package"], timeout=60)
    waited = time.monotonic() - booted
    output = apt.stdout + apt.stderr
    assert "lock-frontend" in output, output  # apt reported it had to wait for the lock
    assert waited >= DPKG_LOCK_HOLD - 0.5, f"apt-get returned after {waited:.1f}s: {output}"
    assert dpkg_lock_state(vm) == "free"


@pytest.fixture
def host_file(tmp_path):  # noqa: ANN001, ANN201
    """Files this test creates on the host (never one of the host's own), removed afterwards."""
    made: list[str] = []

    def make(path: str, text: str = "the host's\n") -> str:
        assert not os.path.exists(path), path
        with open(path, "w") as f:
            f.write(text)
        made.append(path)
        return path

    yield make
    for path in made:
        if os.path.exists(path):
            os.unlink(path)


def test_writes_land_in_upper_dir_not_on_host(boot_vm: BootVm, host_file) -> None:  # noqa: ANN001
    vm = boot_vm("root-vm")
    tag = vm.attachment.netns if vm.attachment else vm.name
    probe = f"/etc/lab-probe-{tag}"
    victim = host_file(f"/etc/lab-victim-{tag}")  # a host file of this test's, which the VM deletes
    with open(victim, "rb") as f:
        host_victim = f.read()
    assert not os.path.exists(probe)

    assert vm.run(["sh", "-c", f"echo from-the-vm > {probe} && rm {victim}"]).returncode == 0

    with open(vm.root_path(probe)) as f:
        assert f.read() == "from-the-vm\n"
    assert not os.path.exists(probe), "the VM wrote to the host's /etc"
    assert vm.run(["test", "-e", victim]).returncode != 0
    with open(victim, "rb") as f:
        assert f.read() == host_victim, "the VM's rm reached the host's file"
    whiteout = os.lstat(vm.root_path(victim))  # overlayfs records the deletion in the upper dir
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0


def test_vm_has_no_way_out_and_local_dns_only(boot_vm: BootVm, host_file) -> None:  # noqa: ANN001
    vm = boot_vm("net-vm")
    routes = vm.run(["ip", "-4", "route", "show"]).stdout
    assert "default" not in routes, routes
    assert vm.run(["ip", "route", "get", "192.0.2.1"]).returncode != 0  # the host's own gateway
    assert vm.run(["cat", "/etc/resolv.conf"]).stdout.split() == ["nameserver", "127.0.0.1"]
    assert vm.run(["getent", "hosts", vm.hostname]).returncode == 0  # sudo needs this
    assert vm.run(["hostname"]).stdout.strip() == vm.hostname
    for tree in ("/work", "/mnt", "/root"):  # the host's private trees are hidden: a probe in each
        if os.path.isdir(tree):
            probe = host_file(f"{tree}/lab-hidden-probe-{vm.name}")
            assert vm.run(["test", "-e", probe]).returncode != 0, f"the VM sees the host's {probe}"


def test_systemd_is_running_with_standins_and_masked_timers(boot_vm: BootVm) -> None:
    vm = boot_vm("sysd-vm", agent_delay=0.0, dpkg_lock_hold=0.0)
    wait_until(lambda: vm.run(["systemctl", "is-system-running"]).stdout.strip() in ("running", "degraded"),
               time.monotonic() + 10, "systemd to finish booting", interval=0.1)
    failed = vm.run(["systemctl", "--failed", "--no-legend", "--plain"]).stdout.strip()
    assert failed == "", failed
    assert vm.run(["systemctl", "is-enabled", "apt-daily.timer"]).stdout.strip() == "masked"
    assert "getty" not in vm.run(["systemctl", "list-units", "--no-legend", "--plain"]).stdout
    for unit in KERNEL_UNITS:  # none that writes the kernel's global state
        assert vm.run(["systemctl", "is-enabled", unit]).stdout.strip() == "masked", unit


KERNEL_UNITS = (Path(__file__).resolve().parents[2] / "meshvm" / "lab" / "vm-masked-kernel-units").read_text().split()
SYSCTL = "/proc/sys/fs/protected_fifos"  # global; the host's sysctl.d sets it to 1
BINFMT = "/proc/sys/fs/binfmt_misc"
HANDLER = "meshvm-lab-probe"


def test_a_vm_leaves_the_hosts_kernel_settings_alone(boot_vm: BootVm) -> None:
    """A global sysctl changed at run time and a harmless binfmt handler registered on the host are
    both as they were after a lab VM booted and halted (its /proc/sys and /sys are read-only)."""
    with open(SYSCTL) as f:
        original = f.read().strip()
    mounted_here = not os.path.exists(f"{BINFMT}/register")
    try:
        if mounted_here:
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT], check=True, timeout=10)
        with open(SYSCTL, "w") as f:
            f.write("0")
        with open(f"{BINFMT}/register", "w") as f:  # any file starting with the magic runs /bin/false
            f.write(f":{HANDLER}:M::MESHVMLABPROBE::/bin/false:")
        vm = boot_vm("kernel-vm", agent_delay=0.0, dpkg_lock_hold=0.0)
        wait_until(lambda: vm.run(["systemctl", "is-system-running"]).stdout.strip() in ("running", "degraded"),
                   time.monotonic() + 20, "systemd to finish booting", interval=0.1)
        write = vm.run(["sh", "-c", f"echo 1 > {SYSCTL}"])
        assert write.returncode != 0 and "Read-only" in write.stderr, write.stderr
        assert vm.run(["sh", "-c", "echo 1 > /sys/kernel/mm/ksm/run"]).returncode != 0
        vm.halt()
        with open(SYSCTL) as f:
            assert f.read().strip() == "0", "the VM re-applied a global sysctl"
        assert os.path.exists(f"{BINFMT}/{HANDLER}"), "the VM unregistered the host's binfmt handler"
    finally:
        if os.path.exists(f"{BINFMT}/{HANDLER}"):
            with open(f"{BINFMT}/{HANDLER}", "w") as f:
                f.write("-1")
        if mounted_here:
            subprocess.run(["umount", BINFMT], check=False, timeout=10)
        with open(SYSCTL, "w") as f:
            f.write(original)


def test_first_boot_holds_the_lists_lock_and_the_suite_waits_for_it(boot_vm: BootVm) -> None:
    """On a new VM, `DPkg::Lock::Timeout` does not cover apt's lists lock: a plain `apt-get update`
    fails at once; the suite's apt_get tries again until first boot is done, and `cloud-init status
    --wait` returns once it is."""
    from meshvm.deadlines import Deadline
    from meshvm.recipe import ratings
    from meshvm.seams import Result

    class AsRoot:  # the VmShell seam over the VM's own exec (root inside the VM)
        def run(self, command: str, *, step: str, sudo: bool = False, timeout: float = 60, check: bool = True,
                env: dict | None = None) -> Result:
            exports = "".join(f"export {k}={v}; " for k, v in (env or {}).items())
            p = vm.run(["sh", "-c", exports + command], timeout=timeout)
            return Result(p.returncode, p.stdout, p.stderr)

    vm = boot_vm("lists-vm", dpkg_lock_hold=DPKG_LOCK_HOLD)
    nothing = "update -o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts=/nonexistent"  # lock, no fetch
    plain = vm.run(["sh", "-c", f"apt-get -q -o DPkg::Lock::Timeout=60 {nothing}"], timeout=60)
    assert plain.returncode != 0 and ratings.LISTS_LOCK in plain.stdout + plain.stderr, plain.stderr
    booted = time.monotonic()
    ratings.apt_get(AsRoot(), nothing, Deadline.after(60, "apt"), "test: apt-get update")
    assert time.monotonic() - booted < 60
    done = vm.run(["cloud-init", "status", "--wait"], timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == "status: done", done.stdout + done.stderr


def test_a_reboot_inside_the_vm_boots_it_again_on_the_same_disk(boot_vm: BootVm) -> None:
    """`systemctl reboot` in the VM: a new boot (new boot id, empty /run, no packet filter rules of the
    last boot), the same disk (its writes and /etc/hosts kept), the same address."""
    vm = boot_vm("reboot-vm")

    def sh(command: str) -> str:
        return vm.run(["sh", "-c", command]).stdout.strip()

    first = sh("cat /proc/sys/kernel/random/boot_id")
    assert first and first != open("/proc/sys/kernel/random/boot_id").read().strip(), "the VM's boot id is its own"
    r = vm.run(["sh", "-c", "echo kept > /etc/lab-reboot-probe && echo gone > /run/lab-reboot-probe && "
                "echo '10.9.9.9 istiod.istio-system.svc' >> /etc/hosts && iptables -t nat -N LAB_REBOOT_PROBE"])
    assert r.returncode == 0, r.stderr
    pid1 = vm.pid1
    vm.run(["systemctl", "reboot"])
    deadline = time.monotonic() + BOOT_TIMEOUT

    def again() -> bool:  # systemd of the second boot up (before it, PID 1 is vm-init, still on the host's root)
        try:
            return (vm.boots == 2 and vm.pid1 not in (None, pid1)
                    and sh("systemctl is-system-running") in ("running", "degraded"))
        except RuntimeError:  # between the two boots
            return False

    assert wait_until(again, deadline, "the VM booted again")
    assert sh("cat /proc/sys/kernel/random/boot_id") not in ("", first), "a new boot has a new boot id"
    assert sh("cat /etc/lab-reboot-probe; test -e /run/lab-reboot-probe || echo /run-emptied") == "kept\n/run-emptied"
    assert "10.9.9.9 istiod.istio-system.svc" in sh("cat /etc/hosts"), "a reboot keeps /etc/hosts"
    assert "LAB_REBOOT_PROBE" not in sh("iptables -t nat -S"), "a booting kernel has no rules of the last boot"
