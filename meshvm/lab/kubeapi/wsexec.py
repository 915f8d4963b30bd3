"""Pod exec over the Kubernetes websocket streaming protocol (v4/v5.channel.k8s.io), for the stand-in.

Each message is one binary websocket frame whose first byte is the channel: 0 stdin, 1 stdout,
2 stderr, 3 error (a v1 Status when the command ends), 4 resize; v5 adds 255 CLOSE (client closes
a channel, e.g. stdin). The command runs through the pod's exec backend (a process-like object).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import IO, Protocol

log = logging.getLogger(__name__)
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CLOSE_CHANNEL = 255


class Process(Protocol):
    stdin: IO[bytes] | None
    stdout: IO[bytes] | None
    stderr: IO[bytes] | None

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


ExecBackend = Callable[[Sequence[str]], Process]


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()  # noqa: S324 (RFC 6455)


def choose_protocol(offered: str) -> str | None:
    names = [p.strip() for p in offered.split(",")]
    return next((p for p in PROTOCOLS if p in names), None)


class Socket:
    """Server side of a websocket over an HTTP connection's streams: frames out, frames in."""

    def __init__(self, rfile: IO[bytes], wfile: IO[bytes]):
        self.rfile, self.wfile, self._lock = rfile, wfile, threading.Lock()

    def send(self, payload: bytes, opcode: int = 0x2) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode]) + (bytes([n]) if n < 126 else
                                          struct.pack("!BH", 126, n) if n < 65536 else struct.pack("!BQ", 127, n))
        with self._lock:
            self.wfile.write(head + payload)
            self.wfile.flush()

    def recv(self) -> tuple[int, bytes]:
        b1, b2 = self._read(2)
        n = b2 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        mask = self._read(4) if b2 & 0x80 else b"\0\0\0\0"
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(self._read(n)))
        return b1 & 0x0F, data

    def _read(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) < n:
            raise EOFError("websocket closed")
        return data


def status(rc: int | None, argv: Sequence[str], error: str = "") -> dict:
    """The Status the kubelet sends on channel 3 when the command ends."""
    if error:
        return {"metadata": {}, "status": "Failure", "message": error, "reason": "InternalError"}
    if rc == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: error executing command {list(argv)}, "
                       f"exit code {rc}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(rc)}]}}


def run(ws: Socket, conn: socket.socket, backend: ExecBackend | None, argv: Sequence[str], where: str) -> None:
    """Run argv through the backend, stream its output, end with the status and a close frame."""
    if backend is None:
        result = status(None, argv, f"stand-in: pod {where} has no exec backend registered")
    else:
        try:
            proc = backend(argv)
        except OSError as e:
            result = status(None, argv, f"failed to exec in container: {e}")
        else:
            result = _stream(ws, conn, proc, argv)
    try:
        ws.send(b"\x03" + json.dumps(result).encode())
        ws.send(struct.pack("!H", 1000), opcode=0x8)
    except OSError:
        pass  # the client went away first


def _stream(ws: Socket, conn: socket.socket, proc: Process, argv: Sequence[str]) -> dict:
    """One thread does all socket I/O (an SSL socket must not be read and written concurrently):
    output pipes to channels 1/2; the client's close (or EOF) kills a command still running."""
    if proc.stdin:
        proc.stdin.close()  # stdin streaming is not modelled: the request is rejected before this
    sel = selectors.DefaultSelector()
    for channel, pipe in ((1, proc.stdout), (2, proc.stderr)):
        if pipe is not None:
            sel.register(pipe, selectors.EVENT_READ, channel)
    sel.register(conn, selectors.EVENT_READ, 0)
    try:
        while len(sel.get_map()) > 1:
            for key, _ in sel.select(timeout=1.0):
                if key.data == 0:
                    _client_frame(ws)
                elif chunk := os.read(key.fd, 65536):
                    ws.send(bytes([key.data]) + chunk)
                else:
                    sel.unregister(key.fileobj)
    except (OSError, EOFError, ValueError):
        proc.kill()
    finally:
        sel.close()
    return status(proc.wait(), argv)


def _client_frame(ws: Socket) -> None:
    opcode, data = ws.recv()
    if opcode == 0x8:
        raise EOFError("client closed the exec stream")
    if opcode == 0x9:
        ws.send(data, opcode=0xA)
