"""Waiting for long-running operations with our own loops.

Compute: `ExtendedOperation.result()` polls through an internal client that ignores the configured
endpoint (docs/facts.md section 3), so we call the `wait` method of the zone/region/global operations
client until DONE (each call returns when the operation is done or after <= ~2 minutes).
GKE: `get_operation` until DONE (enum 3 over REST), logging progress.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from google.cloud import compute_v1, container_v1

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.gcp import errors
from meshvm.gcp.clients import Clients, not_found

log = logging.getLogger(__name__)
WAIT_CALL = 120.0  # the server's own cap on one wait call is ~2 minutes
_DONE = compute_v1.Operation.Status.DONE
_GKE_DONE = container_v1.Operation.Status.DONE


def wait_compute(c: Clients, op: compute_v1.Operation | object, what: str, deadline: Deadline, *,
                 zone: str | None = None, region: str | None = None) -> None:
    """Wait for a compute operation (zonal, regional or global by where it lives); raise if it failed."""
    name = getattr(op, "name", "")
    client: Any
    where: dict[str, Any]
    if zone:
        client, where = c.compute(compute_v1.ZoneOperationsClient), {"zone": zone}
    elif region:
        client, where = c.compute(compute_v1.RegionOperationsClient), {"region": region}
    else:
        client, where = c.compute(compute_v1.GlobalOperationsClient), {}

    def poll() -> compute_v1.Operation:
        return c.call_retrying(f"{what}: waiting for {name}", client.wait, deadline, project=c.project,
                               operation=name, call_timeout=WAIT_CALL + 30, **where)

    done = retry.until(what, poll, deadline, accept=lambda o: o.status == _DONE, initial=0.2, ceiling=2.0)
    failure = errors.from_compute_operation(done)
    if failure is not None:
        raise errors.clear(failure, what, c.project) from failure


def wait_gke(c: Clients, location: str, op: container_v1.Operation, what: str, deadline: Deadline) -> None:
    """Poll a GKE operation until DONE, logging progress; raise if it failed."""
    name = f"projects/{c.project}/locations/{location}/operations/{op.name}"
    start, last = time.monotonic(), [""]

    def poll() -> container_v1.Operation:
        got = c.call_retrying(f"{what}: polling {op.name}", c.container.get_operation, deadline, name=name)
        line = f"{got.status.name} {got.detail or got.status_message or ''}".strip()
        if line != last[0]:
            log.info("%s: %s (%.0fs)", what, line, time.monotonic() - start)
            last[0] = line
        return got

    # GKE's cluster operations take minutes, its small ones seconds: polls close together at first, then
    # at most every 15 s
    done = retry.until(what, poll, deadline, accept=lambda o: o.status == _GKE_DONE, initial=0.5, ceiling=15.0)
    failure = errors.from_gke_operation(done)
    if failure is not None:
        raise errors.clear(failure, what, c.project) from failure
    log.info("%s: done in %.0fs", what, time.monotonic() - start)


def delete_and_wait(c: Clients, what: str, fn: Callable[..., Any], deadline: Deadline, **kw: Any) -> None:
    """Delete a compute resource and wait for it; NotFound (before or during) means done. A 400 that
    says it is still in use or not ready (right after a cluster delete) is retried until the deadline."""
    def attempt() -> None:
        try:
            op = c.call_retrying(what, fn, deadline, project=c.project, **kw)
            wait_compute(c, op, what, deadline, zone=kw.get("zone"), region=kw.get("region"))
        except errors.CloudError as e:
            if not_found(e):
                return
            if errors.not_yet_deletable(e.__cause__ or e.cause):
                raise errors.Transient(str(e)) from e
            raise

    try:
        retry.until(what, attempt, deadline, transient=(errors.Transient,), accept=lambda _: True,
                    initial=2.0, ceiling=20.0)
    except retry.WaitFailed as e:
        raise errors.CloudError("not-yet-deletable", str(e)) from e


def exists(c: Clients, fn: Callable[..., Any], deadline: Deadline, **kw: str) -> bool:
    try:
        c.call("checking existence", fn, deadline, project=c.project, **kw)
        return True
    except errors.CloudError as e:
        if not_found(e):
            return False
        raise
