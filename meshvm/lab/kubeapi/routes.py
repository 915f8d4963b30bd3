"""Request routing of the Kubernetes API stand-in: discovery, CRUD, watch, exec."""

from __future__ import annotations

import json
import time
from typing import Any

from meshvm.lab.kubeapi import kinds, wsexec
from meshvm.lab.kubeapi.kinds import Kind
from meshvm.lab.kubeapi.selectors import ApiError

_MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
_FOREVER = 1800.0  # the API server's default watch timeout bounds a watch without timeoutSeconds


def route(h: Any, method: str, path: str, q: dict[str, str], multi: dict[str, list[str]], body: bytes) -> None:
    """`h` is the request handler (send_json, parse_body, chunk streams, the server and its owner)."""
    parts = [p for p in path.split("/") if p]
    doc = _discovery(h, parts) if method == "GET" else None
    if doc is not None:
        return h.send_json(200, doc)
    kind, version, ns, name, sub = _resolve(parts)
    store = h.server.owner.store
    if sub == "exec":
        return _exec(h, ns, name, multi)
    if sub == "log" and method == "GET":
        return _log(h, kind, ns, name, q)
    if sub == "token" and method == "POST":
        return h.send_json(201, _token_request(h, ns, name, body))
    if method == "GET" and not name:
        if q.get("watch") in ("1", "true"):
            return _watch(h, kind, version, ns, q)
        items, rv = store.list(kind, ns, q.get("labelSelector"), q.get("fieldSelector"))
        return h.send_json(200, {"kind": f"{kind.kind}List", "apiVersion": kind.api_version(version),
                                 "metadata": {"resourceVersion": str(rv)},
                                 "items": [_out(o, kind, version) for o in items]})
    manager = q.get("fieldManager") or h.headers.get("User-Agent", "unknown").split("/")[0]
    strict = q.get("fieldValidation") == "Strict"
    if method == "GET":
        obj = store.get(kind, ns, name)
    elif method == "POST" and not name:
        obj = store.write(kind, ns, h.parse_body(body), manager, mode="create", strict=strict)
        return h.send_json(201, _out(obj, kind, version))
    elif method == "PUT" and name:
        obj = store.write(kind, ns, _named(h.parse_body(body), name), manager, sub=sub, strict=strict)
    elif method == "PATCH" and name:
        obj = _patch(h, kind, ns, name, sub, q, body)
    elif method == "DELETE" and name:
        options = json.loads(body or b"{}")
        policy = q.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
        obj = store.delete(kind, ns, name, policy)
    else:
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on {path}")
    h.send_json(200, _out(obj, kind, version))


def _discovery(h: Any, parts: list[str]) -> dict | None:
    if parts == ["version"]:
        return kinds.VERSION
    if parts == ["api"]:
        return kinds.api_versions(f"{h.server.owner.host}:{h.server.owner.port}")
    if parts == ["apis"]:
        return kinds.group_list()
    if parts[:1] == ["api"] and len(parts) == 2:
        return _or_404(kinds.resource_list("", parts[1]), parts)
    if parts[:1] == ["apis"] and len(parts) == 3:
        return _or_404(kinds.resource_list(parts[1], parts[2]), parts)
    if parts == ["openapi", "v3"]:
        return kinds.openapi_index()
    if parts[:2] == ["openapi", "v3"] and len(parts) in (4, 5):
        gv = parts[3:] if parts[2] == "api" else parts[3:]
        group, version = ("", gv[0]) if parts[2] == "api" else (gv[0], gv[-1])
        return _or_404(kinds.openapi_doc(group, version), parts)
    if parts[:1] not in (["api"], ["apis"]):
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return None


def _or_404(doc: dict | None, parts: list[str]) -> dict:
    if doc is None:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({'/'.join(parts)})")
    return doc


def _resolve(parts: list[str]) -> tuple[Kind, str, str, str, str]:
    """/api/v1/... or /apis/G/V/... -> kind, version, namespace, name, subresource."""
    group, version, rest = ("", parts[1], parts[2:]) if parts[0] == "api" else (parts[1], parts[2], parts[3:])
    ns = ""
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        ns, rest = rest[1], rest[2:]
    kind = kinds.find(group, version, rest[0]) if rest else None
    if kind is None or len(rest) > 3 or (kind.namespaced and len(rest) > 1 and not ns):
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    name, sub = (rest + ["", ""])[1:3]
    if sub and not ((sub == "status" and kind.status) or (sub in ("exec", "log") and kind.plural == "pods")
                    or (sub == "token" and kind.plural == "serviceaccounts")):
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({sub})")
    return kind, version, ns, name, sub


def _log(h: Any, kind: Any, ns: str, name: str, q: dict[str, str]) -> None:
    """A pod's log (text/plain, `tailLines` honoured) from the pod's log source; a pod whose container
    the lab does not run has none: 400, as the API answers for a container that never started."""
    owner = h.server.owner
    owner.store.get(kind, ns, name)  # 404 when the pod does not exist
    source = owner.log_source(ns, name)
    if source is None:
        raise ApiError(400, "BadRequest", f'container in pod "{name}" is waiting to start: no logs in the lab')
    lines = source().splitlines(keepends=True)
    tail = int(q.get("tailLines") or 0)
    data = "".join(lines[-tail:] if tail > 0 else lines).encode()
    h.send_response(200)
    h.send_header("Content-Type", "text/plain")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def _token_request(h: Any, ns: str, name: str, body: bytes) -> dict:
    """TokenRequest for an existing service account (audiences, expirationSeconds)."""
    owner = h.server.owner
    sa_kind = kinds.find("", "v1", "serviceaccounts")
    assert sa_kind is not None
    owner.store.get(sa_kind, ns, name)  # 404 when the service account does not exist
    spec = (h.parse_body(body) or {}).get("spec") or {}
    seconds = int(spec.get("expirationSeconds") or 3600)
    if seconds < 600:  # the API server's validation, as on every real cluster
        raise ApiError(422, "Invalid", f'TokenRequest.authentication.k8s.io "{name}" is invalid: '
                       f"spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than "
                       "10 minutes")
    issued = owner.service_account_tokens.issue(ns, name, list(spec.get("audiences") or []), seconds)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(issued["claims"]["exp"]))
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": ns}, "spec": {**spec, "expirationSeconds": seconds},
            "status": {"token": issued["token"], "expirationTimestamp": expires}}


def _named(doc: dict, name: str) -> dict:
    doc.setdefault("metadata", {})
    if doc["metadata"].get("name", name) != name:
        raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
    doc["metadata"]["name"] = name
    return doc


def _patch(h: Any, kind: Kind, ns: str, name: str, sub: str, q: dict[str, str], body: bytes) -> dict:
    ctype = h.headers.get("Content-Type", "").split(";")[0].strip()
    store, strict = h.server.owner.store, q.get("fieldValidation") == "Strict"
    if ctype == "application/apply-patch+yaml":
        if not q.get("fieldManager"):
            raise ApiError(400, "BadRequest", "PATCH, application/apply-patch+yaml: fieldManager: Required "
                           "value: is required for apply patch")
        doc = _named(h.parse_body(body), name)
        return store.write(kind, ns, doc, q["fieldManager"], sub=sub, mode="apply",
                           force=q.get("force") == "true", strict=strict)
    if ctype in _MERGE_TYPES:
        manager = q.get("fieldManager") or h.headers.get("User-Agent", "unknown").split("/")[0]
        return store.write(kind, ns, _named(h.parse_body(body), name), manager, sub=sub, mode="merge",
                           strict=strict)
    raise ApiError(415, "UnsupportedMediaType", f"the stand-in does not support patch type {ctype!r}")


def _out(obj: dict, kind: Kind, version: str) -> dict:
    return {**obj, "apiVersion": kind.api_version(version), "kind": kind.kind}


def _watch(h: Any, kind: Kind, version: str, ns: str, q: dict[str, str]) -> None:
    """A watch stream: one JSON event per chunk; 410 Expired as an ERROR event, like the real API."""
    store, server = h.server.owner.store, h.server
    labels, field_sel = q.get("labelSelector"), q.get("fieldSelector")
    end = time.monotonic() + float(q.get("timeoutSeconds") or _FOREVER)
    h.start_chunks()
    h.close_connection = True
    rv_param = q.get("resourceVersion", "")
    if rv_param in ("", "0"):  # start from the current state: synthetic ADDED events
        items, rv = store.list(kind, ns, labels, field_sel)
        for o in items:
            h.chunk(_event("ADDED", o, kind, version))
    else:
        rv = int(rv_param)
    while not server.stopping and time.monotonic() < end:
        try:
            events, head = store.events_after(rv, min(1.0, max(0.0, end - time.monotonic())))
        except ApiError as e:
            h.chunk(json.dumps({"type": "ERROR", "object": e.status()}).encode() + b"\n")
            break
        for ev in events:
            meta = ev.obj["metadata"]
            if ev.kind is kind and (not ns or meta.get("namespace") == ns) and store.selected(ev.obj, labels, field_sel):
                h.chunk(_event(ev.type, ev.obj, kind, version))
        rv = head
    h.chunk(b"")


def _event(type_: str, obj: dict, kind: Kind, version: str) -> bytes:
    return json.dumps({"type": type_, "object": _out(obj, kind, version)}).encode() + b"\n"


def _exec(h: Any, ns: str, pod: str, multi: dict[str, list[str]]) -> None:
    """Websocket exec (v4/v5.channel.k8s.io). SPDY and stdin streaming are not modelled."""
    owner = h.server.owner
    obj = owner.store.get(kinds.find("", "v1", "pods"), ns, pod)  # 404 as the API does
    argv = multi.get("command", [])
    protocol = wsexec.choose_protocol(h.headers.get("Sec-WebSocket-Protocol", ""))
    if h.headers.get("Upgrade", "").lower() != "websocket" or protocol is None:
        raise ApiError(400, "BadRequest", "stand-in: exec needs a websocket upgrade with protocol "
                       f"{' or '.join(wsexec.PROTOCOLS)} (SPDY is not modelled)")
    if not argv or multi.get("stdin", ["false"])[-1] in ("true", "1") or multi.get("tty", [""])[-1] == "true":
        raise ApiError(400, "BadRequest", "stand-in: exec needs a command, and takes no stdin or tty")
    container = multi.get("container", [""])[-1]
    names = [c.get("name") for c in obj.get("spec", {}).get("containers", [])]
    if container and container not in names:
        raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {pod}")
    h.send_response(101, "Switching Protocols")
    h.send_header("Upgrade", "websocket")
    h.send_header("Connection", "Upgrade")
    h.send_header("Sec-WebSocket-Accept", wsexec.accept_key(h.headers.get("Sec-WebSocket-Key", "")))
    h.send_header("Sec-WebSocket-Protocol", protocol)
    h.end_headers()
    h.wfile.flush()
    h.close_connection = True
    wsexec.run(wsexec.Socket(h.rfile, h.wfile), h.connection, owner.exec_backend(ns, pod), argv, f"{ns}/{pod}")
