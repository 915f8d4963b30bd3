"""Error injection for the stand-in: make the next N calls of an API method fail like Google would.

    server.faults.inject("compute.instances.insert", "stockout", times=1)
    server.faults.inject("container.clusters.create", "quota", in_operation=True)

`in_operation` fails the long-running operation (accepted, then DONE with an error) instead of
the HTTP call, as Compute Engine reports a stock-out or a quota error found after acceptance.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Fault:
    status: int
    reason: str
    message: str
    details: tuple[dict, ...] = ()


def preset(kind: str, api: str = "compute.googleapis.com") -> Fault:
    """The error bodies Google sends for each class of failure (docs/facts.md section 3)."""
    title = {"compute.googleapis.com": "Compute Engine API",
             "container.googleapis.com": "Kubernetes Engine API"}.get(api, api)
    presets = {
        "quota": Fault(403, "QUOTA_EXCEEDED", "Quota 'CPUS' exceeded.  Limit: 8.0 in region us-central1."),
        "stockout": Fault(503, "ZONE_RESOURCE_POOL_EXHAUSTED",
                          "The zone does not have enough resources available to fulfill the request. "
                          "Try a different zone, or try again later."),
        "bad-request": Fault(400, "invalid", "Invalid value for field 'resource.network': 'no-such-net'. "
                             "The referenced network resource cannot be found."),
        "org-policy": Fault(412, "conditionNotMet", "Constraint constraints/compute.vmExternalIpAccess "
                            "violated for project meshvm-lab."),
        "disabled": Fault(403, "accessNotConfigured",
                          f"{title} has not been used in project 123 before or it is disabled.",
                          ({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED",
                            "domain": "googleapis.com", "metadata": {"service": api}},)),
        "in-progress": Fault(400, "failedPrecondition", "Operation operation-1 is currently creating cluster. "
                             "Please wait and try again once it is done."),
        "rate-limit": Fault(429, "rateLimitExceeded", "Rate Limit Exceeded"),
        "unavailable": Fault(503, "backendError", "The service is currently unavailable."),
    }
    return presets[kind]


@dataclass
class _Pending:
    fault: Fault
    times: int
    in_operation: bool


@dataclass
class Faults:
    _pending: dict[str, list[_Pending]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(self, method: str, kind: str | Fault, *, times: int = 1, in_operation: bool = False) -> None:
        api = "container.googleapis.com" if method.startswith("container.") else "compute.googleapis.com"
        fault = kind if isinstance(kind, Fault) else preset(kind, api)
        with self._lock:
            self._pending.setdefault(method, []).append(_Pending(fault, times, in_operation))

    def take(self, method: str, in_operation: bool = False) -> Fault | None:
        """The fault for this call of `method`, if one is armed (consumes one of its N calls)."""
        with self._lock:
            for p in self._pending.get(method, []):
                if p.in_operation == in_operation and p.times > 0:
                    p.times -= 1
                    return p.fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()


def error_body(f: Fault) -> dict:
    """Google's JSON error envelope (what google.api_core.exceptions.from_http_response parses)."""
    status = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS",
              412: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}.get(f.status, "UNKNOWN")
    return {"error": {"code": f.status, "message": f.message, "status": status,
                      "errors": [{"reason": f.reason, "message": f.message, "domain": "global"}],
                      "details": list(f.details)}}


class ApiError(Exception):
    """Raised by handlers; the server turns it into Google's error envelope."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.fault = Fault(status, reason, message)


def not_found(what: str) -> ApiError:
    return ApiError(404, "notFound", f"The resource '{what}' was not found")


def conflict(what: str) -> ApiError:
    return ApiError(409, "alreadyExists", f"The resource '{what}' already exists")
