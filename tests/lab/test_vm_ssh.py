"""A VM boots, answers SSH with its own host keys, and lets the metadata user in once the guest agent ran."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from meshvm import ssh
from meshvm.deadlines import Deadline
from meshvm.lab.hostsys import wait_until
from tests.lab._helpers import SSH_USER, ssh_connect, ssh_run
from tests.lab.conftest import BootVm

pytestmark = pytest.mark.lab


def test_ssh_works_once_guest_agent_created_the_user(boot_vm: BootVm, ssh_key: Path) -> None:
    vm = boot_vm("ssh-vm", agent_delay=2.0)
    assert set(vm.host_keys()) >= {"ssh-ed25519"}

    # Right after boot the pinned host key is accepted, but the user does not exist yet (as on GCE).
    with pytest.raises(paramiko.AuthenticationException):
        ssh_connect(vm, ssh_key).close()

    def connected() -> paramiko.SSHClient | None:
        try:
            return ssh_connect(vm, ssh_key)
        except paramiko.AuthenticationException:
            return None

    client = wait_until(connected, time.monotonic() + 10, "the guest agent to create labuser", interval=0.2)
    with client:
        assert ssh_run(client, "id -un") == (0, f"{SSH_USER}\n")
        assert ssh_run(client, "sudo -n id -u") == (0, "0\n")
        assert ssh_run(client, "stat -c %a ~/.ssh/authorized_keys") == (0, "600\n")


def test_wrong_or_missing_host_key_is_refused(boot_vm: BootVm, ssh_key: Path, tmp_path: Path) -> None:
    vm = boot_vm("hostkey-vm", agent_delay=0.0)
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, timeout=10)
    key_type, b64 = other.with_suffix(".pub").read_text().split()[:2]

    with pytest.raises(paramiko.BadHostKeyException):
        ssh_connect(vm, ssh_key, host_keys={key_type: b64})
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        ssh_connect(vm, ssh_key, host_keys={})


IDLE_DROP_S = 3


@pytest.mark.parametrize("keepalive", [1, 0], ids=["keepalive", "no keepalive"])
def test_the_run_shell_survives_a_router_that_drops_idle_connections(boot_vm: BootVm, ssh_key: Path, lab_router,
                                                                       monkeypatch, caplog, keepalive: int) -> None:
    """The router forgets connections idle for 3 s and then drops their packets silently (as NAT
    gateways do after minutes; the run's one SSH connection idles while the cluster stages run). With
    keepalives more often than that the connection never goes idle; without them the next command
    finds it dead and reconnects once, to the same pinned host key."""
    vm = boot_vm("idle-vm", agent_delay=0.0)
    monkeypatch.setattr(ssh, "KEEPALIVE_S", keepalive)
    key = paramiko.Ed25519Key.from_private_key_file(str(ssh_key))
    with lab_router.dropping_idle_after(IDLE_DROP_S):
        shell = ssh.SshShell(vm.ip, SSH_USER, key, vm.host_keys(), connect_timeout=3)
        shell.connect(Deadline.after(20, "ssh"))
        try:
            assert shell.run("echo before", step="idle").stdout == "before\n"
            time.sleep(3 * IDLE_DROP_S)  # the connection idles: what this test is about
            with caplog.at_level(logging.WARNING, logger="meshvm.ssh"):
                assert shell.run("echo after", step="idle", timeout=10).stdout == "after\n"
        finally:
            shell.close()
    reconnected = [r for r in caplog.records if "reconnecting" in r.getMessage()]
    assert (len(reconnected) == 1) == (not keepalive), [r.getMessage() for r in reconnected]
