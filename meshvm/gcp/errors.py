"""Google API errors as one clear line, and the one answer to "is this worth retrying?".

Over REST every error is an HTTP status (docs/facts.md section 3): 400 BadRequest, 403 Forbidden (quota or
a disabled API), 404, 409, 412 (org policy), 429, 500/502/503/504. A request can also fail below
HTTP (connection refused or reset, read timeout): requests raises those, never a GoogleAPICallError. Failed long-running operations carry the
same information in their error list; `from_compute_operation` / `from_gke_operation` turn them
into the same exception types so one mapping serves both.
"""

from __future__ import annotations

import re

import requests
from google.api_core import exceptions as gexc

STOCKOUT_REASONS = ("ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS")
_API_NAMES = {"compute.googleapis.com": "Compute Engine API", "container.googleapis.com": "Kubernetes Engine API"}
_URL_PREFIX = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ")
_IN_PROGRESS = re.compile(r"operation .* is currently|incompatible operation|another operation", re.I)
_SERVER_ERRORS = {500: "server-error", 502: "server-error", 503: "unavailable", 504: "server-error"}


class CloudError(Exception):
    """A Google Cloud call failed: `kind` names the class of problem, str() is one line for people."""

    def __init__(self, kind: str, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.kind, self.cause = kind, cause


class Transient(Exception):
    """Raised inside retry loops for an error worth another attempt (the original is `__cause__`)."""


def _message(exc: gexc.GoogleAPICallError) -> str:
    text = _URL_PREFIX.sub("", str(exc.message or "")).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _reasons(exc: gexc.GoogleAPICallError) -> set[str]:
    found = {str(e.get("reason", "")) for e in (exc.errors or []) if isinstance(e, dict)}
    if getattr(exc, "reason", None):
        found.add(str(exc.reason))
    return found - {""}


def is_stockout(exc: BaseException) -> bool:
    if not isinstance(exc, gexc.GoogleAPICallError):
        return False
    return bool(_reasons(exc) & set(STOCKOUT_REASONS)) or "does not have enough resources" in _message(exc)


def is_in_progress(exc: BaseException) -> bool:
    return isinstance(exc, gexc.BadRequest) and bool(_IN_PROGRESS.search(_message(exc)))


def kind(exc: gexc.GoogleAPICallError) -> str:
    reasons, msg = _reasons(exc), _message(exc)
    if is_stockout(exc):
        return "stockout"
    if reasons & {"accessNotConfigured", "SERVICE_DISABLED"}:
        return "api-disabled"
    if exc.code == 429 or reasons & {"rateLimitExceeded", "RATE_LIMIT_EXCEEDED", "userRateLimitExceeded"}:
        return "rate-limited"
    if reasons & {"QUOTA_EXCEEDED", "quotaExceeded"} or (exc.code == 403 and "quota" in msg.lower()):
        return "quota"
    if is_in_progress(exc):
        return "in-progress"
    return {400: "bad-request", 401: "unauthenticated", 403: "permission-denied", 404: "not-found",
            409: "conflict", 412: "org-policy", **_SERVER_ERRORS}.get(int(exc.code or 0), "error")


def is_transport(exc: BaseException) -> bool:
    """The request failed below HTTP: connection refused/reset/dropped, connect or read timeout."""
    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def transient(exc: BaseException) -> bool:
    """Worth retrying: a transport error, stock-out (in another zone), rate limits, 500/502/503/504,
    an operation in progress. THE answer for every call; a create retries only through
    `clients.insert`, which records the resource first (`maybe_accepted`)."""
    if isinstance(exc, Transient) or is_transport(exc):
        return True
    if not isinstance(exc, gexc.GoogleAPICallError):
        return False
    return kind(exc) in ("stockout", "rate-limited", "unavailable", "server-error", "in-progress")


# Right after a cluster delete, GKE still holds the network's resources: a delete answers 400 with
# one of these for minutes (docs/facts.md section 6); in teardown that is transient.
NOT_YET_DELETABLE = {"resourceInUseByAnotherResource", "resourceNotReady"}


def not_yet_deletable(exc: BaseException | None) -> bool:
    return isinstance(exc, gexc.GoogleAPICallError) and int(exc.code or 0) == 400 \
        and bool(_reasons(exc) & NOT_YET_DELETABLE)


def maybe_accepted(exc: BaseException) -> bool:
    """After a create request failed this way, may Google still have accepted it? Yes unless the
    server answered with a refusal: a transport error (the response was lost), a 5xx other than a
    stock-out, an interrupt in the middle of the request."""
    if isinstance(exc, gexc.GoogleAPICallError):
        return int(exc.code or 0) >= 500 and not is_stockout(exc)
    return True


def describe(exc: gexc.GoogleAPICallError, what: str, project: str = "PROJECT") -> str:
    """One line: what we were doing, the class of problem with what to do about it, the server's words."""
    k, msg = kind(exc), _message(exc)
    hint = {
        "stockout": "the zone is out of this machine type (stock-out); try another zone (--zone, repeatable)",
        "quota": "quota exceeded; raise it (IAM & Admin > Quotas) or use smaller machines / fewer nodes",
        "rate-limited": "rate limited by the API (429)",
        "in-progress": "another operation on this resource is still running",
        "bad-request": "rejected as invalid (400): check the network/subnetwork and the settings",
        "unauthenticated": "credentials rejected (401): refresh the token or the ADC login",
        "permission-denied": "permission denied (403): the identity lacks a role on the project",
        "not-found": "not found (404)",
        "conflict": "already exists or conflicts (409)",
        "org-policy": "refused by an organization policy (412), e.g. external IPs forbidden; "
                      "ask the org admin or use another project",
        "unavailable": "service unavailable (503)",
        "server-error": f"server error ({exc.code})",
    }.get(k, f"failed ({exc.code})")
    if k == "api-disabled":
        service = _service(exc, msg)
        hint = (f"the {_API_NAMES.get(service, service)} is disabled on the project; enable it: "
                f"gcloud services enable {service} --project {project}")
    return f"{what}: {hint}: {msg}"


def _service(exc: gexc.GoogleAPICallError, msg: str) -> str:
    service = (getattr(exc, "metadata", None) or {}).get("service")
    if service:
        return str(service)
    for name, title in _API_NAMES.items():
        if title.lower() in msg.lower() or name in msg:
            return name
    return "compute.googleapis.com"


def describe_any(exc: BaseException, what: str, project: str = "PROJECT") -> str:
    """`describe` for API errors; one line for a transport error too (no request line, no traceback)."""
    if isinstance(exc, gexc.GoogleAPICallError):
        return describe(exc, what, project)
    return f"{what}: no answer from the API ({type(exc).__name__}): {str(exc).splitlines()[0] if str(exc) else ''}"


def clear(exc: BaseException, what: str, project: str = "PROJECT") -> BaseException:
    """The exception to raise for `exc`: a CloudError for API errors, else `exc` unchanged."""
    if isinstance(exc, gexc.GoogleAPICallError):
        return CloudError(kind(exc), describe(exc, what, project), exc)
    return exc


def from_compute_operation(op: object) -> gexc.GoogleAPICallError | None:
    """A DONE compute Operation's failure as the exception its HTTP status maps to (None if it worked)."""
    errs = list(getattr(getattr(op, "error", None), "errors", []) or [])
    if not errs and not getattr(op, "http_error_status_code", 0):
        return None
    status = int(getattr(op, "http_error_status_code", 0) or 400)
    message = "; ".join(e.message for e in errs) or str(getattr(op, "http_error_message", "")) or "operation failed"
    return gexc.from_http_status(status, message, errors=[{"reason": e.code, "message": e.message} for e in errs])


def from_gke_operation(op: object) -> gexc.GoogleAPICallError | None:
    """A DONE GKE Operation's failure (op.error is a google.rpc.Status; gRPC codes mapped to HTTP)."""
    err = getattr(op, "error", None)
    message = (getattr(err, "message", "") if err else "") or getattr(op, "status_message", "")
    code = int(getattr(err, "code", 0) or 0) if err else 0
    if not message and not code:
        return None
    http = {3: 400, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 14: 503}.get(code, 500)
    reason = STOCKOUT_REASONS[0] if "does not have enough resources" in message else ""
    if "quota" in message.lower():  # GKE reports quota as RESOURCE_EXHAUSTED: not a rate limit
        http, reason = 403, "QUOTA_EXCEEDED"
    return gexc.from_http_status(http, message, errors=[{"reason": reason}] if reason else [])
