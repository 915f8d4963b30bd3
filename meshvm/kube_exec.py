"""Exec in a pod over the Kubernetes streaming protocol (websocket, v5/v4.channel.k8s.io)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from kubernetes import client
from kubernetes.stream import stream
from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL

from meshvm.kube_errors import ExecTimeout, KubeError
from meshvm.seams import Result


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
