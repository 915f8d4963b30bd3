"""A lab VM: a host attached to the router that boots systemd with sshd on its own root filesystem.

Namespaces: its own netns (from Router.attach) plus mount, pid, uts, ipc and cgroup namespaces
(`unshare --fork --kill-child`, the launcher stays a child of this process). Root: an overlay over
the host's / whose upper dir (per VM, under the state dir) gets every write; `root_path()` reads it.
vm-init.sh builds that root, a private /dev and cgroup2 at /sys/fs/cgroup, then execs systemd.

Before boot the upper dir is seeded like a fresh GCE image: per-VM sshd host keys (published by
`host_keys()` like the guest attributes `hostkeys/`), a machine-id, the instance metadata, and two
stand-in units: the guest agent (creates the `ssh-keys` users a little after sshd is up) and
Ubuntu's first-boot apt run (holds the dpkg frontend lock a little while).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from meshvm.lab.hostsys import (
    LAB_CGROUP,
    cgroup2_root,
    child_pids,
    entered_processes,
    remove_cgroup,
    run_in_netns,
    wait_until,
)
from meshvm.lab.netsafety import assert_local_route
from meshvm.lab.router import Attachment, Router

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
VM_INIT = HERE / "vm-init.sh"
STANDINS = HERE / "standins"
HOST_KEY_TYPES = ("ed25519", "ecdsa")
_CMD_TIMEOUT = 30.0


class VmHost:
    """One lab VM. `boot()` then `halt()`; call `halt()` in a finally even if boot failed."""

    def __init__(
        self,
        router: Router,
        name: str,
        ip: str,
        state_dir: str,
        *,
        metadata: Mapping[str, str] | None = None,
        tags: tuple[str, ...] = (),
        alias_ranges: tuple[str, ...] = (),
        hostname: str | None = None,
        agent_delay: float = 2.0,
        dpkg_lock_hold: float = 3.0,
    ) -> None:
        self.router, self.name, self.ip = router, name, ip
        self.state_dir = os.path.abspath(state_dir)
        self.metadata = dict(metadata or {})
        self.tags, self.alias_ranges = tuple(tags), tuple(alias_ranges)
        self.hostname = hostname or name
        self.agent_delay, self.dpkg_lock_hold = agent_delay, dpkg_lock_hold
        self.attachment: Attachment | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.cgroup: str | None = None
        self.boots = 0  # a reboot inside the VM (`systemctl reboot`) boots it again, as GCE does
        self._console: IO[bytes] | None = None
        self._halting = threading.Event()
        self._launching = threading.Lock()

    @property
    def console_log(self) -> str:
        return os.path.join(self.state_dir, "console.log")

    def root_path(self, path: str) -> str:
        """Host path of a file the VM wrote (its overlay upper dir); unwritten files are absent."""
        return os.path.join(self.state_dir, "upper", path.lstrip("/"))

    def host_keys(self) -> dict[str, str]:
        """The VM's sshd host public keys, {key type: base64}, as GCE publishes under hostkeys/."""
        keys = {}
        for kind in HOST_KEY_TYPES:
            with open(self.root_path(f"/etc/ssh/ssh_host_{kind}_key.pub")) as f:
                key_type, b64 = f.read().split()[:2]
            keys[key_type] = b64
        return keys

    def boot(self, deadline: float) -> None:
        """Start the VM; return once its sshd sends a banner. `deadline` is a time.monotonic() value."""
        self._seed_root()
        self.attachment = self.router.attach(self.name, self.ip, self.tags, self.alias_ranges)
        self.cgroup = os.path.join(cgroup2_root(), LAB_CGROUP, self.attachment.netns)
        os.makedirs(self.cgroup, exist_ok=True)
        self._launch(self.attachment.netns, self.cgroup)
        assert_local_route(self.ip)
        run_in_netns(self.router.netns, lambda: self._wait_for_sshd(deadline))
        log.info("VM %s (%s) answers SSH", self.name, self.ip)

    @property
    def pid1(self) -> int | None:
        """Host pid of the VM's PID 1 (the launcher's only child)."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        children = child_pids(self.proc.pid)
        return children[0] if children else None

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """argv that runs a command inside the VM (all its namespaces, its root) from the host."""
        pid = self.pid1
        if pid is None:
            raise RuntimeError(f"VM {self.name} is not running")
        return ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w", "--", *argv]

    def spawn(self, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start a long-running command inside the VM as root; stop it with `stop()`."""
        return subprocess.Popen(self.exec_argv(argv), start_new_session=True, **popen_kwargs)

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
        """Stop a spawned command by signalling it inside the VM, so that nsenter reaps it.

        Killing nsenter instead would orphan the command to the host's init, whose slow reaping
        holds up the VM's halt.
        """
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in child_pids(proc.pid):
                os.kill(pid, sig)
            try:
                proc.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                continue
        proc.kill()
        proc.wait(timeout)

    def run(self, argv: Sequence[str], timeout: float = _CMD_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run a command inside the VM as root; never raises on a non-zero exit."""
        proc = self.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            raise
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)

    def halt(self, grace: float = 5.0) -> None:
        """Stop systemd (SIGRTMIN+3, then SIGKILL), then remove the VM's link, netns and cgroup."""
        self._halting.set()
        try:
            with self._launching:
                self._stop(grace)
        finally:
            self.router.detach(self.name)  # the host-side veth goes before the netns
            if self.cgroup:
                remove_cgroup(self.cgroup, time.monotonic() + grace)
            if self._console:
                self._console.close()
                self._console = None
        log.info("VM %s halted", self.name)

    def console_tail(self, limit: int = 4000) -> str:
        try:
            with open(self.console_log, "rb") as f:
                return f.read()[-limit:].decode(errors="replace")
        except OSError:
            return ""

    def _stop(self, grace: float) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        pid1 = self.pid1
        if pid1:
            for pid in entered_processes(pid1):  # let their nsenter parents reap them, see stop()
                os.kill(pid, signal.SIGKILL)
            os.kill(pid1, signal.SIGRTMIN + 3)  # systemd's "halt"; SIGTERM would only re-exec it
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("VM %s did not halt within %.1fs; killing it", self.name, grace)
            proc.kill()  # --kill-child: the VM's PID 1 gets SIGKILL, and with it the pid namespace
            proc.wait(_CMD_TIMEOUT)

    def _launch(self, netns: str, cgroup: str) -> None:
        # The launcher moves itself into the VM's cgroup2 subtree before `unshare --cgroup`, so
        # systemd's cgroup root is that subtree and not the host's.
        argv = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup,
                "ip", "netns", "exec", netns,
                "unshare", "--mount", "--propagation", "private", "--uts", "--ipc", "--pid", "--cgroup",
                "--fork", "--kill-child", "bash", str(VM_INIT), self.state_dir, self.hostname]
        if self._console is None:
            self._console = open(self.console_log, "ab")
        self.proc = proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._console,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.boots += 1
        threading.Thread(target=self._on_exit, args=(proc, netns, cgroup), name=f"vm-{self.name}-boot{self.boots}",
                         daemon=True).start()

    def _on_exit(self, proc: subprocess.Popen[bytes], netns: str, cgroup: str) -> None:
        """A reboot inside the VM ends its PID 1 with SIGHUP (the kernel's reboot(2) in a pid namespace;
        `unshare --fork` passes the signal on): boot it again on the same disk, network and address."""
        if proc.wait() != -signal.SIGHUP or self._halting.is_set():
            return
        with self._launching:
            if self._halting.is_set():
                return
            log.info("VM %s rebooted: booting it again", self.name)
            remove_cgroup(cgroup, time.monotonic() + 5)
            os.makedirs(cgroup, exist_ok=True)
            self._launch(netns, cgroup)

    def _wait_for_sshd(self, deadline: float) -> bool:
        def banner() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"VM {self.name} exited during boot; console:\n{self.console_tail()}")
            try:
                timeout = max(0.05, min(0.5, deadline - time.monotonic()))
                with socket.create_connection((self.ip, 22), timeout=timeout) as s:
                    return s.recv(4).startswith(b"SSH-")
            except OSError:
                return False

        try:
            return wait_until(banner, deadline, f"sshd on VM {self.name} ({self.ip}:22)")
        except TimeoutError as e:
            raise TimeoutError(f"{e}; console:\n{self.console_tail()}") from None

    def _seed_root(self) -> None:
        """Write, into the not-yet-mounted upper dir, what makes this VM itself (kept across reboots)."""
        upper = Path(self.root_path("/"))
        for d in ("etc/ssh/sshd_config.d", "etc/lab-standin", "usr/local/lib/lab-standin", "usr/local/bin",
                  "etc/systemd/system/multi-user.target.wants"):
            (upper / d).mkdir(parents=True, exist_ok=True, mode=0o755)
        for kind in HOST_KEY_TYPES:
            key = upper / f"etc/ssh/ssh_host_{kind}_key"
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"root@{self.hostname}",
                                "-f", str(key)], check=True, capture_output=True, timeout=_CMD_TIMEOUT)
        (upper / "etc/ssh/sshd_config.d/00-lab-vm.conf").write_text(
            "".join(f"HostKey /etc/ssh/ssh_host_{k}_key\n" for k in HOST_KEY_TYPES))
        if not (upper / "etc/machine-id").exists():
            (upper / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        (upper / "etc/lab-standin/metadata.json").write_text(json.dumps(self.metadata))
        (upper / "etc/lab-standin/env").write_text(
            f"LAB_STANDIN_AGENT_DELAY={self.agent_delay}\nLAB_STANDIN_DPKG_LOCK_HOLD={self.dpkg_lock_hold}\n")
        cloud_init = upper / "usr/local/bin/cloud-init"  # GCE's Ubuntu images run cloud-init at first boot
        cloud_init.write_text("#!/bin/sh\nexec /usr/bin/python3 /usr/local/lib/lab-standin/lab-standin-cloud-init.py \"$@\"\n")
        cloud_init.chmod(0o755)
        for src in STANDINS.glob("lab-standin-*"):  # the VM-wide stand-ins only, not other fixtures
            if src.suffix == ".py":
                shutil.copyfile(src, upper / "usr/local/lib/lab-standin" / src.name)
            elif src.suffix == ".service":
                shutil.copyfile(src, upper / "etc/systemd/system" / src.name)
                wants = upper / "etc/systemd/system/multi-user.target.wants" / src.name
                if not wants.is_symlink():
                    wants.symlink_to(f"/etc/systemd/system/{src.name}")

