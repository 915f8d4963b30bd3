"""VmShell over paramiko: the same code on GCE and on lab VMs.

The VM's host keys are pinned (RejectPolicy: an unknown or changed key is refused, never learnt).
Authentication failures are retried only inside a boot window, because GCE's guest agent creates
the user from the `ssh-keys` metadata a few seconds after sshd starts. Every command has a timeout;
output is streamed to the log line by line (secrets are scrubbed by the log record factory).
"""

from __future__ import annotations

import base64
import logging
import select
import shlex
import socket
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import paramiko

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.seams import CommandFailed, Result

log = logging.getLogger(__name__)
OUTPUT_CAP = 1 << 20  # bytes kept per stream; the rest is only logged
KEEPALIVE_S = 30  # some networks drop a connection idle for ~4 min
RECONNECT_S = 60
LINES_POLL_S = 0.2  # how soon a closed RemoteLines stops iterating
# Errors that mean "sshd not (yet) there": retried until the connect deadline. Other SSHExceptions
# (no common algorithm, host key, authentication) are final, or turned into final errors.
_NOT_UP = (socket.timeout, ConnectionError, EOFError, paramiko.ssh_exception.NoValidConnectionsError)


class CommandTimeout(Exception):
    pass


class HostKeyRejected(Exception):
    """The VM presented a key other than the pinned one: final, never retried, never learnt."""


class AuthFailed(Exception):
    """The user's key was still refused after the boot window: final."""


class _PinnedOnly(paramiko.RejectPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        raise HostKeyRejected(f"{hostname} presented an unpinned {key.get_name()} host key "
                              f"{key.fingerprint}: refused")


def pinned_keys(host: str, host_keys: Mapping[str, str]) -> paramiko.HostKeys:
    """Host keys as GCE publishes them in guest attributes: key type -> base64 blob."""
    keys = paramiko.HostKeys()
    for key_type, blob in host_keys.items():
        keys.add(host, key_type, paramiko.PKey.from_type_string(key_type, base64.b64decode(blob)))
    return keys


class SshShell:
    def __init__(self, host: str, user: str, key: paramiko.PKey, host_keys: Mapping[str, str], *,
                 before_connect: Callable[[str], None] | None = None, connect_timeout: float = 10):
        if not host_keys:
            raise ValueError(f"no pinned host key for {host}: refusing to connect unpinned")
        self.host, self.user, self._key = host, user, key
        self._host_keys = pinned_keys(host, host_keys)
        self._before_connect = before_connect
        self._connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None

    def connect(self, deadline: Deadline, auth_window: float = 60.0) -> None:
        """Connect, retrying while sshd comes up and, for `auth_window` s, while the user is missing."""
        window = Deadline.after(min(auth_window, deadline.remaining()), "auth window")

        def attempt() -> paramiko.SSHClient:
            try:
                return self._open(deadline)
            except paramiko.BadHostKeyException as e:
                raise HostKeyRejected(f"{self.host}: host key changed: {e}") from None
            except paramiko.AuthenticationException:
                if window.expired():
                    raise AuthFailed(f"{self.user}@{self.host}: key refused for {auth_window:.0f}s "
                                     "after sshd came up") from None
                raise _AuthNotYet(f"{self.user}@{self.host}: key refused (user not created yet?)") from None
            except paramiko.SSHException as e:  # after its subclasses above: only sshd still starting
                if "banner" in str(e).lower() or "reset" in str(e).lower():
                    raise _AuthNotYet(f"{self.host}: {e}") from None
                raise

        self._client = retry.until(f"ssh to {self.user}@{self.host}", attempt, deadline,
                                   transient=(*_NOT_UP, _AuthNotYet), initial=0.2, ceiling=3)

    def _open(self, deadline: Deadline) -> paramiko.SSHClient:
        if self._before_connect:
            self._before_connect(self.host)
        client = paramiko.SSHClient()
        for key_type, key in (self._host_keys.lookup(self.host) or {}).items():
            client.get_host_keys().add(self.host, key_type, key)
        client.set_missing_host_key_policy(_PinnedOnly())
        timeout = deadline.cap(self._connect_timeout)
        try:
            client.connect(self.host, 22, username=self.user, pkey=self._key, timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout, allow_agent=False,
                           look_for_keys=False)
            # The one connection idles for minutes while the cluster stages run: networks that drop
            # idle connections (docs/facts.md section 6) see traffic every KEEPALIVE_S.
            client.get_transport().set_keepalive(KEEPALIVE_S)  # type: ignore[union-attr]
        except BaseException:
            client.close()
            raise
        return client

    def _transport(self) -> paramiko.Transport:
        """The live connection: if it was dropped meanwhile, one reconnect first (the same pinned host
        key: a changed one is refused). Never in the middle of a command: a command never runs twice."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            log.warning("ssh to %s: the connection was dropped; reconnecting", self.host)
            self._reconnect()
            transport = self.client.get_transport()
        return transport  # type: ignore[return-value]

    def _reconnect(self) -> None:
        self.close()
        self.connect(Deadline.after(RECONNECT_S, f"reconnecting to {self.host}"), auth_window=0)

    def _session(self) -> paramiko.Channel:
        try:
            return self._transport().open_session(timeout=self._connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as e:  # lost between the check and the open
            log.warning("ssh to %s: the connection was lost (%s); reconnecting", self.host, e)
            self._reconnect()
            return self._transport().open_session(timeout=self._connect_timeout)

    def close(self) -> None:
        if self._client:
            self._client.close()
            self._client = None

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None:
            raise RuntimeError(f"not connected to {self.host}: call connect() first")
        return self._client

    def run(self, command: str | Sequence[str], *, step: str, sudo: bool = False, timeout: float = 60,
            check: bool = True, env: Mapping[str, str] | None = None) -> Result:
        line = render(command, sudo=sudo, env=env)
        log.debug("[%s] $ %s", step, line)
        channel = self._session()
        try:
            channel.exec_command(line)
            channel.shutdown_write()
            result = _collect(channel, step, Deadline.after(timeout, f"{step}: {line}"))
        finally:
            channel.close()
        if check and not result.ok:
            raise CommandFailed(step, line, result)
        return result

    def lines(self, command: str, *, step: str, deadline: Deadline) -> RemoteLines:
        line = render(command)
        log.debug("[%s] $ %s (its lines as they arrive)", step, line)
        channel = self._session()
        channel.exec_command(line)
        channel.shutdown_write()
        return RemoteLines(channel, deadline)

    def upload(self, local: Path, remote: str, *, mode: int | None = None) -> None:
        self._transport()
        sftp = self.client.open_sftp()
        sftp.get_channel().settimeout(self._connect_timeout * 3)  # type: ignore[union-attr]
        try:
            _put(sftp, local, remote, mode)
        finally:
            sftp.close()


class RemoteLines:
    """The stdout lines of a command on the VM as they arrive (meshvm.seams.Lines). Closing the channel
    closes the command's pipe: its next write ends it (SIGPIPE)."""

    def __init__(self, channel: paramiko.Channel, deadline: Deadline):
        self._channel, self._deadline, self._closed = channel, deadline, threading.Event()

    def __iter__(self) -> Iterator[str]:
        pending, waiter = b"", select.poll()
        waiter.register(self._channel.fileno(), select.POLLIN)
        try:
            while not self._closed.is_set() and not self._deadline.expired():
                if self._channel.recv_ready():
                    *done, pending = (pending + self._channel.recv(32768)).split(b"\n")
                    yield from (line.decode(errors="replace") for line in done)
                elif self._channel.exit_status_ready() or self._channel.closed:
                    return
                else:  # output, EOF or the next look at `closed`, bounded by the deadline
                    waiter.poll(self._deadline.cap(LINES_POLL_S) * 1000)
        finally:
            self._channel.close()

    def close(self) -> None:
        self._closed.set()


class _AuthNotYet(Exception):
    """Transient while the VM boots: sshd not answering its banner yet, or the user not created yet."""


def render(command: str | Sequence[str], *, sudo: bool = False, env: Mapping[str, str] | None = None) -> str:
    """Quoting lives here only: argv is joined safely; a snippet runs under `sh -c` when wrapped."""
    text = command if isinstance(command, str) else shlex.join(command)
    if env:
        text = shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), "sh", "-c", text])
    if sudo:
        text = shlex.join(["sudo", "-n", "--", "sh", "-c", text])
    return text


def _collect(channel: paramiko.Channel, step: str, deadline: Deadline) -> Result:
    out, err = _Stream(step, "out"), _Stream(step, "err")
    waiter = select.poll()
    waiter.register(channel.fileno(), select.POLLIN)
    while True:
        progressed = False
        while channel.recv_ready():
            out.feed(channel.recv(32768))
            progressed = True
        while channel.recv_stderr_ready():
            err.feed(channel.recv_stderr(32768))
            progressed = True
        # sshd may send the exit status before the last output: done only at EOF too.
        if (channel.exit_status_ready() and channel.eof_received and not channel.recv_ready()
                and not channel.recv_stderr_ready()):
            break
        if deadline.expired():
            raise CommandTimeout(f"{deadline.what}: no exit after its timeout; last output: "
                                 f"{(err.tail() or out.tail())!r}")
        if not progressed:
            # Block briefly until output or EOF arrives (the channel's fileno is a pipe paramiko signals),
            # bounded by the command's deadline: not a bare sleep, and no spin once the status is in.
            # poll, not select: a long test session holds file descriptors above select's 1024.
            waiter.poll(deadline.cap(0.05) * 1000)
    return Result(channel.recv_exit_status(), out.text(), err.text())


class _Stream:
    """Keeps up to OUTPUT_CAP bytes and logs complete lines as they arrive."""

    def __init__(self, step: str, name: str):
        self.step, self.name, self.kept, self.pending = step, name, bytearray(), b""

    def feed(self, data: bytes) -> None:
        if len(self.kept) < OUTPUT_CAP:
            self.kept += data[: OUTPUT_CAP - len(self.kept)]
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            log.debug("[%s] %s| %s", self.step, self.name, line.decode(errors="replace"))

    def text(self) -> str:
        if self.pending:
            log.debug("[%s] %s| %s", self.step, self.name, self.pending.decode(errors="replace"))
            self.pending = b""
        return self.kept.decode(errors="replace")

    def tail(self, n: int = 300) -> str:
        return self.kept[-n:].decode(errors="replace")


def _put(sftp: paramiko.SFTPClient, local: Path, remote: str, mode: int | None) -> None:
    if local.is_dir():
        try:
            sftp.mkdir(remote, mode=0o700 if mode is not None else 0o755)
        except OSError:
            if not stat.S_ISDIR(sftp.stat(remote).st_mode or 0):
                raise
        for child in sorted(local.iterdir()):
            _put(sftp, child, f"{remote}/{child.name}", mode)
        return
    sftp.put(str(local), remote)
    sftp.chmod(remote, mode if mode is not None else local.stat().st_mode & 0o777)

