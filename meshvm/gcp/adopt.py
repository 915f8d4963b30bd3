"""`--reuse`: a kept run's resource is adopted instead of created. Read it, check it is that run's
(its labels, or for networks and firewall rules the labels its description carries: meta.py),
record it in THIS run's ledger before anything uses it (so teardown deletes it), and use it.
Something with the run's name that is not the run's is never adopted: the run fails with one line."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from meshvm.config import Config
from meshvm.deadlines import Deadline
from meshvm.gcp import errors
from meshvm.gcp.clients import Clients, not_found
from meshvm.ledger import Ledger
from meshvm.naming import SUITE
from meshvm.settings import BY_FIELD

log = logging.getLogger(__name__)
T = TypeVar("T")
FLAG = BY_FIELD["reuse"].label


def find(c: Clients, what: str, fn: Callable[..., T], deadline: Deadline, **kw: Any) -> T | None:
    """The resource, or None when it does not exist."""
    try:
        return c.call(what, fn, deadline, **kw)
    except errors.CloudError as e:
        if not_found(e):
            return None
        raise


def record(cfg: Config, ledger: Ledger, kind: str, name: str, where: str, labels: Mapping[str, str]) -> None:
    """Record the kept run's `kind` `name` as this run's, once its labels say it is the kept run's."""
    if labels.get("e2e-suite") != SUITE or labels.get("e2e-run") != cfg.run_id:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k.startswith("e2e-")) or "none"
        raise errors.CloudError("not-ours", f"{FLAG}: {kind} {name} exists but is not kept run {cfg.run_id}'s "
                                f"(its suite labels: {shown}); refusing to adopt it")
    expires = labels.get("e2e-expires", "")
    ledger.record(kind, name, where, adopted="true", **({"e2e-expires": expires} if expires else {}))
    log.warning("%s: adopted %s %s of kept run %s (e2e-expires=%s)", "--reuse", kind, name, cfg.run_id,
                expires or "?")
