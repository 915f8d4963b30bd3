"""A VM boots, answers SSH with its own host keys, and lets the metadata user in once the guest agent ran."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import paramiko
import pytest

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
