"""The gcp code against the stand-in backed by REAL lab VMs (root): the VM boots, the guest agent
stand-in creates the ssh-keys user, the published host keys pin SSH, firewall rules made through
the API decide what reaches the VM, and teardown leaves no namespace behind."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.gcp.cloud import GcpCloud
from meshvm.lab.gcloud.backing import LabBacking
from meshvm.lab.gcloud.server import GCloudStandIn
from meshvm.lab.netsafety import assert_local_route
from meshvm.ledger import Ledger
from tests.contract.gcp_fixtures import *  # noqa: F403
from tests.contract.gcp_fixtures import PROJECT, TlsStubBackend, deadline, make_cfg
from tests.lab._helpers import pinned_client
from tests.root import require_root

pytestmark = pytest.mark.lab
USER = "tester"


@pytest.fixture
def lab_standin(tmp_path: Path):
    require_root()
    backing = LabBacking.up(f"ct-gcp-{os.getpid()}", str(tmp_path / "vms"), hostkey_delay=0.5, agent_delay=0.5)
    server = GCloudStandIn(PROJECT, backing, lambda name: TlsStubBackend(), op_delay=0.05, wait_cap=1.0)
    tag = backing.router.addrs.tag
    with server:
        yield server
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    assert tag not in netns, f"lab namespaces left behind: {netns}"


@pytest.fixture
def ssh_key(tmp_path: Path) -> Path:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", USER, "-f", str(key)], check=True, timeout=10)
    return key


def _ssh(ip: str, host_keys: dict, key: Path) -> paramiko.SSHClient:
    assert_local_route(ip)
    client = pinned_client(ip, host_keys)
    try:
        client.connect(ip, 22, username=USER, key_filename=str(key), allow_agent=False, look_for_keys=False,
                       timeout=3, banner_timeout=3, auth_timeout=3)
    except BaseException:
        client.close()
        raise
    return client


def _reachable(ip: str, port: int = 22) -> bool:
    assert_local_route(ip)
    try:
        with socket.create_connection((ip, port), timeout=1.0):
            return True
    except OSError:
        return False


def test_vm_via_the_api_is_a_real_host_with_pinned_keys_behind_the_firewall(lab_standin, tmp_path, token_file,
                                                                              ssh_key):
    router = lab_standin.backing.router
    cfg = make_cfg(lab_standin, tmp_path, token_file, ssh_source_ranges=[f"{router.external_source}/32"])
    cloud = GcpCloud(cfg, Ledger(cfg.artifacts_dir / "ledger.json"))
    try:
        net = cloud.create_network(deadline())
        cloud.create_firewall_rules(net, deadline())
        start = time.monotonic()
        vm = cloud.create_vm(net, USER, ssh_key.with_suffix(".pub").read_text(), deadline(120))
        print(f"VM via the API: {time.monotonic() - start:.2f}s to RUNNING with host keys")
        assert vm.internal_ip in str(router.addrs.vm_subnet) or vm.internal_ip.startswith("172.29.")
        client = retry.until("the guest agent stand-in to create the user",
                             lambda: _ssh(vm.external_ip, dict(vm.host_keys), ssh_key),
                             Deadline.after(30, "ssh"), transient=(paramiko.AuthenticationException,
                                                                   paramiko.SSHException, OSError))
        with client:
            _, out, _ = client.exec_command("id -un; sudo -n true && echo sudo-ok", timeout=10)
            assert out.read().decode().split() == [USER, "sudo-ok"]
        wrong = {"ssh-ed25519": "AAAAC3NzaC1lZDI1NTE5AAAAIHd3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3"}
        with pytest.raises(paramiko.SSHException):
            _ssh(vm.external_ip, wrong, ssh_key)  # a host key that is not the published one is refused

        lab_rules = {r.name: r for r in router.rules()}  # source tags became the VM's address
        assert lab_rules[cfg.names.firewall("vm-to-eastwest")].source_ranges == (f"{vm.internal_ip}/32",)
        assert lab_rules[cfg.names.firewall("pods-to-vm")].target_tags == (cfg.names.vm_tag,)
        ssh_rule = [e for e in cloud.ledger.entries() if e.name == cfg.names.firewall("ssh")][0]
        cloud.deleters()["firewall"](ssh_rule)  # the API rule was all that let SSH in
        assert not _reachable(vm.external_ip)
    finally:
        summary = cloud.teardown(cfg.artifacts_dir / "cleanup.json")
    assert summary["remaining"] == [] and summary["leftovers"] == []
    assert router.hosts() == () and router.rules() == ()
