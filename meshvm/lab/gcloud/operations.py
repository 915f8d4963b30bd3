"""Long-running operations of the stand-in: PENDING -> RUNNING -> DONE, the work done in a thread.

The modelled latency (`delay`) is what a real operation takes before it starts to make progress; a
`wait` call returns when the operation is DONE or after `wait_cap` seconds (Google: ~2 minutes).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from meshvm.lab.gcloud.faults import ApiError, Fault, not_found

log = logging.getLogger(__name__)
_GKE_STATUS = {"PENDING": 1, "RUNNING": 2, "DONE": 3}
_GRPC = {400: 9, 403: 7, 404: 5, 409: 6, 412: 9, 429: 8, 503: 14}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Op:
    def __init__(self, name: str, style: str, fields: dict) -> None:
        self.name, self.style, self.fields = name, style, dict(fields)
        self.state, self.started = "PENDING", _now()
        self.ended = ""
        self.done = threading.Event()
        self.error: Fault | None = None

    def json(self) -> dict:
        if self.style == "gke":
            out = {**self.fields, "name": self.name, "status": _GKE_STATUS[self.state], "startTime": self.started}
            if self.state == "DONE":
                out["endTime"] = self.ended
            if self.error:
                out["error"] = {"code": _GRPC.get(self.error.status, 2), "message": self.error.message}
                out["statusMessage"] = self.error.message
            return out
        out = {"kind": "compute#operation", **self.fields, "name": self.name, "status": self.state,
               "progress": 100 if self.state == "DONE" else 0, "insertTime": self.started}
        if self.error:
            out["error"] = {"errors": [{"code": self.error.reason, "message": self.error.message}]}
            out["httpErrorStatusCode"] = self.error.status
            out["httpErrorMessage"] = self.error.message
        return out


class Operations:
    def __init__(self, delay: float = 0.2, wait_cap: float = 2.0) -> None:
        self.delay, self.wait_cap = delay, wait_cap
        self._ops: dict[str, Op] = {}
        self._threads: list[threading.Thread] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def start(self, style: str, fields: dict, work: Callable[[], None], fail: Fault | None = None,
              delay: float | None = None) -> Op:
        op = Op(f"operation-{int(time.time() * 1000)}-{next(self._ids)}", style, fields)
        with self._lock:
            self._ops[op.name] = op
        t = threading.Thread(target=self._run, args=(op, work, fail, self.delay if delay is None else delay),
                             name=f"gcloud-{op.name}", daemon=True)
        self._threads.append(t)
        t.start()
        return op

    def _run(self, op: Op, work: Callable[[], None], fail: Fault | None, delay: float) -> None:
        self._stopping.wait(delay / 2)  # modelled queueing before the operation starts
        op.state = "RUNNING"
        self._stopping.wait(delay / 2)
        try:
            if fail is not None:
                raise ApiError(fail.status, fail.reason, fail.message)
            work()
        except ApiError as e:
            op.error = e.fault
        except Exception as e:  # a backing failure surfaces as the operation's error, like a 500
            log.exception("stand-in operation %s failed", op.name)
            op.error = Fault(500, "internalError", f"{type(e).__name__}: {e}")
        op.ended, op.state = _now(), "DONE"
        op.done.set()

    def get(self, name: str) -> Op:
        with self._lock:
            op = self._ops.get(name)
        if op is None:
            raise not_found(f"operations/{name}")
        return op

    def wait(self, name: str) -> Op:
        op = self.get(name)
        op.done.wait(self.wait_cap)
        return op

    def all(self) -> list[Op]:
        with self._lock:
            return list(self._ops.values())

    def stop(self, timeout: float = 60.0) -> None:
        """Let running work finish (a booting VM must be recorded so that it can be halted)."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
