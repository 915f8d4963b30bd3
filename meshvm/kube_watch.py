"""A watch that survives expiry: on 410 Expired (history compacted) relist, report what changed
meanwhile as ADDED/MODIFIED/DELETED, and continue from the list's resourceVersion."""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Iterator
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from meshvm.deadlines import Deadline
from meshvm.kube_errors import KubeError, refused

log = logging.getLogger(__name__)
_SERVER_TIMEOUT = 60  # seconds per watch request; the stream is re-opened from the last resourceVersion


class _Expired(Exception):
    pass


def watch_events(kube: Any, res: Any, api_version: str, kind: str, namespace: str | None,
                 deadline: Deadline) -> Iterator[tuple[str, dict]]:
    """(event type, object) until the deadline: first the current objects as ADDED, then changes."""
    known: dict[str, dict] = {}  # uid -> last object seen
    rv = yield from _relist(kube, res, api_version, kind, namespace, known)
    while not deadline.expired():
        try:
            for type_, obj in _watch_once(kube, res, namespace, rv, deadline):
                rv = obj["metadata"].get("resourceVersion", rv)
                if type_ == "BOOKMARK":
                    continue
                uid = obj["metadata"].get("uid", "")
                known.pop(uid, None) if type_ == "DELETED" else known.__setitem__(uid, obj)
                yield type_, {"apiVersion": api_version, "kind": kind, **obj}
        except _Expired as e:
            log.info("watch of %s expired (%s): relisting", kind, e)
            rv = yield from _relist(kube, res, api_version, kind, namespace, known)


def _relist(kube: Any, res: Any, api_version: str, kind: str, namespace: str | None,
            known: dict[str, dict]) -> Generator[tuple[str, dict], None, str]:
    try:
        data = kube.call(kube.dyn.get, res, namespace=namespace, _request_timeout=kube.call_timeout).to_dict()
    except ApiException as e:
        raise refused(f"list {kind}", e) from None
    current = {i["metadata"]["uid"]: {"apiVersion": api_version, "kind": kind, **i} for i in data.get("items") or []}
    for uid, obj in current.items():
        before = known.get(uid)
        if before is None or before["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
            yield ("ADDED" if before is None else "MODIFIED"), obj
    for uid in known.keys() - current.keys():
        yield "DELETED", known[uid]
    known.clear()
    known.update(current)
    return str(data["metadata"]["resourceVersion"])


def _watch_once(kube: Any, res: Any, namespace: str | None, rv: str, deadline: Deadline) -> Iterator[tuple[str, dict]]:
    server_timeout = max(1, int(min(deadline.remaining(), _SERVER_TIMEOUT)))
    try:
        resp = kube.call(kube.dyn.request, "get", res.path(namespace=namespace), serialize=False, watch=True,
                         resource_version=rv, timeout_seconds=server_timeout, allow_watch_bookmarks=True,
                         _request_timeout=(kube.call_timeout, server_timeout + 15))
    except ApiException as e:
        if e.status == 410:
            raise _Expired(f"{e.status} {e.reason}") from None
        raise refused(f"watch {res.kind}", e) from None
    try:
        for line in iter_resp_lines(resp):
            event = json.loads(line)
            obj = event.get("object") or {}
            if event.get("type") == "ERROR":
                if obj.get("code") == 410:
                    raise _Expired(obj.get("message", "410"))
                raise KubeError(f"watch {res.kind}: {obj.get('code')} {obj.get('message')}", obj.get("code", 0))
            yield event["type"], obj
            if deadline.expired():
                return
    finally:
        resp.close()
        resp.release_conn()
