"""Exec in a pod over the Kubernetes streaming protocol (websocket, v5/v4.channel.k8s.io)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence

from kubernetes import client
from kubernetes.stream import stream
from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL

from meshvm.deadlines import Deadline
from meshvm.kube_errors import ExecTimeout, KubeError
from meshvm.seams import Result

LINES_POLL_S = 0.2  # how soon closed ExecLines stop iterating


def run_exec(api: client.ApiClient, namespace: str, pod: str, command: Sequence[str], container: str | None,
             timeout: float) -> Result:
    """Run argv in the pod; rc from the status on channel 3. `api` must be this call's own ApiClient:
    stream() swaps its transport while it runs, which would hijack concurrent requests."""
    kwargs = {"container": container} if container else {}
    ws = stream(client.CoreV1Api(api).connect_get_namespaced_pod_exec, pod, namespace, command=list(command),
                stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False,
                _request_timeout=timeout, **kwargs)
    try:
        ws.run_forever(timeout=timeout)
        # timeout=0: read what arrived; the default (None) would block while the command runs
        out, err = ws.read_channel(STDOUT_CHANNEL, 0) or "", ws.read_channel(STDERR_CHANNEL, 0) or ""
        if ws.is_open():
            raise ExecTimeout(f"exec in {namespace}/{pod} `{' '.join(command)}`: no exit after {timeout:.0f}s; "
                              f"output so far: {(err or out)[-500:]!r}")
        return Result(_rc(ws.read_channel(ERROR_CHANNEL), namespace, pod, command), out, err)
    finally:
        ws.close()


class ExecLines:
    """The stdout lines of a long-running command in a pod as they arrive (meshvm.seams.Lines); the
    stream has its own ApiClient, closed with it. Closing the stream closes the command's stdout: its
    next write ends it."""

    def __init__(self, api: client.ApiClient, namespace: str, pod: str, command: Sequence[str], container: str | None,
                 deadline: Deadline):
        kwargs = {"container": container} if container else {}
        self._api, self._deadline, self._closed = api, deadline, threading.Event()
        self._ws = stream(client.CoreV1Api(api).connect_get_namespaced_pod_exec, pod, namespace, command=list(command),
                          stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False,
                          _request_timeout=deadline.cap(60), **kwargs)

    def __iter__(self) -> Iterator[str]:
        pending = ""
        try:
            while not self._closed.is_set() and not self._deadline.expired() and self._ws.is_open():
                self._ws.update(timeout=self._deadline.cap(LINES_POLL_S))
                *done, pending = (pending + (self._ws.read_channel(STDOUT_CHANNEL, 0) or "")).split("\n")
                yield from done
        finally:
            self._ws.close()
            self._api.close()

    def close(self) -> None:
        self._closed.set()


def _rc(status_text: str, namespace: str, pod: str, command: Sequence[str]) -> int:
    where = f"exec in {namespace}/{pod} `{' '.join(command)}`"
    try:
        status = json.loads(status_text)
    except ValueError:
        raise KubeError(f"{where}: the stream ended without an exit status") from None
    if status.get("status") == "Success":
        return 0
    causes = (status.get("details") or {}).get("causes") or []
    code = next((c.get("message") for c in causes if c.get("reason") == "ExitCode"), None)
    if status.get("reason") == "NonZeroExitCode" and code is not None:
        return int(code)
    raise KubeError(f"{where}: could not run: {status.get('message') or status}")  # e.g. no such binary
