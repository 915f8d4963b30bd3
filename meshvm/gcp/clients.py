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
from google.cloud import compute_v1, container_v1

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.gcp import errors

log = logging.getLogger(__name__)
T = TypeVar("T")
CALL_TIMEOUT = 60.0  # one HTTP call; waits are loops of calls under their own deadline


class Target(Protocol):
    """Where the APIs are: a Config, or the janitor's arguments."""

    gcp_project: str | None
    compute_endpoint: str | None
    container_endpoint: str | None
    gcp_access_token_file: Path | None


class Clients:
    """Lazily built clients; `compute(compute_v1.InstancesClient)` and `container` are cached."""

    def __init__(self, cfg: Target, creds: ga_credentials.Credentials) -> None:
        self.cfg, self.creds = cfg, creds
        self.project = str(cfg.gcp_project)

    @functools.cache  # noqa: B019 - one client per class for the life of the run
    def compute(self, cls: type[T]) -> T:
        return cls(credentials=self.creds, transport="rest", client_options=_options(self.cfg.compute_endpoint))

    @functools.cached_property
    def container(self) -> container_v1.ClusterManagerClient:
        return container_v1.ClusterManagerClient(
            credentials=self.creds, transport="rest", client_options=_options(self.cfg.container_endpoint))

    @property
    def instances(self) -> compute_v1.InstancesClient:
        return self.compute(compute_v1.InstancesClient)

    @property
    def firewalls(self) -> compute_v1.FirewallsClient:
        return self.compute(compute_v1.FirewallsClient)

    def call(self, what: str, fn: Callable[..., T], deadline: Deadline | None = None, **kwargs: Any) -> T:
        """One API call with a timeout and no library retry; API errors become CloudError."""
        timeout = deadline.cap(CALL_TIMEOUT) if deadline else CALL_TIMEOUT
        try:
            return fn(**kwargs, timeout=timeout, retry=None)
        except gexc.GoogleAPICallError as e:
            raise errors.clear(e, what, self.project) from e

    def call_retrying(self, what: str, fn: Callable[..., T], deadline: Deadline, *,
                      stockout_final: bool = True, call_timeout: float = CALL_TIMEOUT, **kwargs: Any) -> T:
        """`call`, retrying transient errors until the deadline. A stock-out is final when the caller
        falls back to another zone instead (`stockout_final`)."""
        def attempt() -> T:
            try:
                return fn(**kwargs, timeout=deadline.cap(call_timeout), retry=None)
            except gexc.GoogleAPICallError as e:
                if errors.transient(e) and not (stockout_final and errors.is_stockout(e)):
                    raise errors.Transient(errors.describe(e, what, self.project)) from e
                raise errors.clear(e, what, self.project) from e

        return retry.until(what, attempt, deadline, transient=(errors.Transient,), accept=lambda _: True,
                           initial=1.0, ceiling=20.0)


def insert(c: Clients, what: str, fn: Callable[..., T], deadline: Deadline, record: Callable[[], object],
           **kwargs: Any) -> T:
    """A create call whose resource is recorded the moment the request is accepted (before any wait).

    A 409 is NOT recorded: the name may belong to something that is not this run's (a chosen
    --cluster-name); if it is the run's own (a retried insert whose first attempt went through), the
    final label sweep of teardown reports it and the janitor removes it.
    """
    accepted = c.call_retrying(what, fn, deadline, **kwargs)
    record()
    return accepted


def _options(endpoint: str | None) -> dict[str, str] | None:
    return {"api_endpoint": endpoint.rstrip("/")} if endpoint else None


def not_found(exc: BaseException) -> bool:
    """True for a NotFound, raw or mapped (deletes treat it as done)."""
    cause = exc.cause if isinstance(exc, errors.CloudError) else exc
    return isinstance(cause, gexc.NotFound)
