"""The Google API clients of one run: REST transport, the run's credentials, the configured endpoints,
and the one way this package calls them (a per-call timeout, no hidden library retries, errors
mapped, transient errors retried through `meshvm.retry`)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from google.api_core import exceptions as gexc
from google.auth import credentials as ga_credentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import compute_v1, container_v1

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.gcp import errors

log = logging.getLogger(__name__)
T = TypeVar("T")
CALL_TIMEOUT = 60.0  # one HTTP call; waits are loops of calls under their own deadline
_GOOGLE = {"iam": "https://iam.googleapis.com", "resourcemanager": "https://cloudresourcemanager.googleapis.com"}


class Target(Protocol):
    """Where the APIs are: a Config, or the janitor's arguments."""

    @property
    def gcp_project(self) -> str | None: ...
    @property
    def compute_endpoint(self) -> str | None: ...
    @property
    def container_endpoint(self) -> str | None: ...
    @property
    def gcp_access_token_file(self) -> Path | None: ...


class Clients:
    """Lazily built clients; `compute(compute_v1.InstancesClient)` and `container` are cached."""

    def __init__(self, cfg: Target, creds: ga_credentials.Credentials) -> None:
        self.cfg, self.creds = cfg, creds
        self.project = str(cfg.gcp_project)

    @functools.cache  # noqa: B019 - one client per class for the life of the run
    def compute(self, cls: type[T]) -> T:
        make: Callable[..., T] = cls
        return make(credentials=self.creds, transport="rest", client_options=_options(self.cfg.compute_endpoint))

    @functools.cached_property
    def container(self) -> container_v1.ClusterManagerClient:
        return container_v1.ClusterManagerClient(
            credentials=self.creds, transport="rest", client_options=_options(self.cfg.container_endpoint))

    def post(self, api: str, path: str, body: dict[str, Any], what: str, deadline: Deadline) -> dict[str, Any]:
        """A REST call the client libraries of this suite do not cover (IAM, Resource Manager): POST
        `path` on the API's endpoint (`iam` or `resourcemanager`: the configured one, else Google's),
        with a timeout; transient errors retried, API errors mapped like every other call."""
        base = (getattr(self.cfg, f"{api}_endpoint", None) or _GOOGLE[api]).rstrip("/")

        def call(timeout: float, retry: object = None) -> dict[str, Any]:
            r = AuthorizedSession(self.creds).request("POST", base + path, json=body, timeout=timeout)
            if r.status_code >= 400:
                raise gexc.from_http_response(r)
            return dict(r.json())

        return self.call_retrying(what, call, deadline)

    @property
    def instances(self) -> compute_v1.InstancesClient:
        return self.compute(compute_v1.InstancesClient)

    @property
    def firewalls(self) -> compute_v1.FirewallsClient:
        return self.compute(compute_v1.FirewallsClient)

    def call(self, what: str, fn: Callable[..., T], deadline: Deadline | None = None, **kwargs: Any) -> T:
        """A READ-ONLY call (get/list) with a timeout and no library retry: transient errors
        (`errors.transient`) are retried until the deadline, API errors become CloudError."""
        deadline = deadline or Deadline.after(CALL_TIMEOUT, what)
        return self.call_retrying(what, fn, deadline, **kwargs)

    def call_retrying(self, what: str, fn: Callable[..., T], deadline: Deadline, *,
                      stockout_final: bool = True, call_timeout: float = CALL_TIMEOUT, **kwargs: Any) -> T:
        """`call`, retrying transient errors until the deadline: for reads, waits, polls and deletes
        (a repeated delete answers NotFound, which deleters take as done). Never for a create: that is
        `insert`. A stock-out is final when the caller falls back to another zone (`stockout_final`)."""
        def attempt() -> T:
            try:
                return fn(**kwargs, timeout=deadline.cap(call_timeout), retry=None)
            except Exception as e:
                raise self._retryable(e, what, stockout_final)  # noqa: B904 - chained in _retryable

        return retry.until(what, attempt, deadline, transient=(errors.Transient,), accept=lambda _: True,
                           initial=1.0, ceiling=20.0)

    def _retryable(self, e: Exception, what: str, stockout_final: bool = True) -> BaseException:
        """What to raise for `e` inside a retry loop: Transient (retried) or the final error, chained to `e`."""
        if errors.transient(e) and not (stockout_final and errors.is_stockout(e)):
            out: BaseException = errors.Transient(errors.describe_any(e, what, self.project))
        else:
            out = errors.clear(e, what, self.project)
        if out is not e:
            out.__cause__ = e
        return out


def insert(c: Clients, what: str, fn: Callable[..., T], deadline: Deadline, record: Callable[[], object],
           **kwargs: Any) -> T:
    """A create call whose resource is in the ledger (`record`, idempotent) before anyone waits for it.

    Recorded when the request is accepted, and also the moment it MAY have been accepted: a transport
    error (ConnectionError, ReadTimeout: the response was lost, not the request), a 5xx, an interrupt
    in the middle of the request. That happens BEFORE a retry is sent or the error propagates; nothing
    is ever un-recorded (deleters treat NotFound as done). Transient errors are retried until the
    deadline, like any call.

    A 409 on the FIRST attempt is not recorded: the name may belong to something that is not this
    run's (a chosen --cluster-name or --vm-name). A 409 on a RETRY is this run's own earlier attempt
    having gone through: it is recorded, and the create fails with a clear line (the operation that
    made it was lost with the response; teardown deletes it).
    """
    attempts: list[BaseException] = []

    def attempt() -> T:
        try:
            return fn(**kwargs, timeout=deadline.cap(CALL_TIMEOUT), retry=None)
        except gexc.Conflict as e:
            if not attempts:
                raise errors.clear(e, what, c.project) from e
            record()
            raise errors.CloudError("conflict", f"{what}: it exists after a retried request: the first "
                                    f"attempt ({_short(attempts[0])}) went through; recorded as this run's "
                                    "for teardown", e) from e
        except BaseException as e:
            if errors.maybe_accepted(e):
                record()
            if not isinstance(e, Exception):
                raise  # an interrupt: recorded above, now let it stop the run
            attempts.append(e)
            raise c._retryable(e, what)  # noqa: B904 - chained in _retryable

    accepted = retry.until(what, attempt, deadline, transient=(errors.Transient,), accept=lambda _: True,
                           initial=1.0, ceiling=20.0)
    record()
    return accepted


def _short(exc: BaseException) -> str:
    text = errors.describe_any(exc, "", "PROJECT").removeprefix(": ")
    return text if len(text) <= 120 else text[:120] + "..."


def _options(endpoint: str | None) -> dict[str, str] | None:
    return {"api_endpoint": endpoint.rstrip("/")} if endpoint else None


def not_found(exc: BaseException) -> bool:
    """True for a NotFound, raw or mapped (deletes treat it as done)."""
    cause = exc.cause if isinstance(exc, errors.CloudError) else exc
    return isinstance(cause, gexc.NotFound)
