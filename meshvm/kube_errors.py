"""Errors of the Kube adapter: what the API refused, in its own words."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from meshvm.seams import TransientError


class KubeError(Exception):
    """A request the API refused, with its message (not a dump of HTTP headers)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class TransientKubeError(KubeError, TransientError):
    """Worth another try: throttled (429), a server error (5xx), or the connection failed."""


class ApplyConflict(KubeError):
    """Server-side apply hit fields another field manager owns with other values (never forced)."""

    def __init__(self, what: str, fields: list[str], message: str):
        self.fields = fields
        super().__init__(f"apply {what}: conflict on {', '.join(fields)}: another field manager owns them "
                         f"with other values (not forcing): {message}", 409)


class ExecTimeout(KubeError, TimeoutError):
    """A command in a pod did not end within its timeout."""


def message_of(e: ApiException) -> str:
    try:
        return str(json.loads(e.body or "").get("message") or e.reason)
    except (TypeError, ValueError, AttributeError):
        return f"{e.status} {e.reason}"


def refused(what: str, e: ApiException) -> KubeError:
    """The KubeError for an ApiException: transient for 429/5xx, with the API's message."""
    cls = TransientKubeError if e.status == 429 or e.status >= 500 else KubeError
    return cls(f"{what}: {e.status} {message_of(e)}", e.status)
