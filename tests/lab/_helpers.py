"""Helpers shared by the lab self-tests (not fixtures)."""

from __future__ import annotations

import base64
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import paramiko

from meshvm.lab.hostsys import run_in_netns, wait_until
from meshvm.lab.netsafety import assert_local_route
from meshvm.lab.vmhost import VmHost

SSH_USER = "labuser"
BLOCKED = "blocked"


def pinned_client(ip: str, host_keys: Mapping[str, str]) -> paramiko.SSHClient:
    """An SSHClient that trusts exactly `host_keys` for `ip` and rejects anything else."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    for key_type, b64 in host_keys.items():
        client.get_host_keys().add(ip, key_type, paramiko.PKey.from_type_string(key_type, base64.b64decode(b64)))
    return client


def ssh_connect(vm: VmHost, key: Path, host_keys: Mapping[str, str] | None = None) -> paramiko.SSHClient:
    assert_local_route(vm.ip)
    client = pinned_client(vm.ip, vm.host_keys() if host_keys is None else host_keys)
    try:
        client.connect(vm.ip, 22, username=SSH_USER, key_filename=str(key), allow_agent=False,
                       look_for_keys=False, timeout=3, banner_timeout=3, auth_timeout=3)
    except BaseException:
        client.close()
        raise
    return client


def ssh_run(client: paramiko.SSHClient, command: str, timeout: float = 10) -> tuple[int, str]:
    _, stdout, _ = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode()
    return stdout.channel.recv_exit_status(), out


def tcp_try(netns: str, src: str, dst: str, port: int, timeout: float = 0.6) -> str:
    """Connect from `src` inside `netns`: "ok", "blocked" (silently dropped) or the error."""
    assert_local_route(dst)

    def attempt() -> str:
        with socket.socket() as s:
            s.settimeout(timeout)
            s.bind((src, 0))
            try:
                s.connect((dst, port))
            except TimeoutError:
                return BLOCKED
            except OSError as e:
                return repr(e)
            return "ok"

    return run_in_netns(netns, attempt)


def wait_listening(netns: str, ip: str, port: int, stop: Callable[[], None]) -> None:
    """Wait until a just-started server accepts on ip:port (checked from its own netns); stop it if not."""
    try:
        wait_until(lambda: tcp_try(netns, ip, ip, port, timeout=0.3) == "ok", time.monotonic() + 10,
                   f"server on {ip}:{port}")
    except BaseException:
        stop()
        raise


def start_netns_server(netns: str, ip: str, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["ip", "netns", "exec", netns, "python3", "-m", "http.server", str(port), "--bind", ip],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(netns, ip, port, lambda: stop(proc))
    return proc


def start_vm_server(vm: VmHost, port: int) -> subprocess.Popen[bytes]:
    proc = vm.spawn(["python3", "-m", "http.server", str(port), "--bind", vm.ip],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert vm.attachment is not None
    wait_listening(vm.attachment.netns, vm.ip, port, lambda: vm.stop(proc))
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
