"""The API stand-in's object store: resourceVersions, watch history, finalizers, garbage collection
of dependents (ownerReferences), namespace deletion. One lock; watchers wait on its condition."""

from __future__ import annotations

import builtins
import copy
import datetime
import threading
import uuid
from collections import deque
from dataclasses import dataclass

from meshvm.lab.kubeapi import fields, schema
from meshvm.lab.kubeapi.kinds import KINDS, Kind
from meshvm.lab.kubeapi.selectors import ApiError, matches

Key = tuple[str, str, str, str]  # group, plural, namespace ("" if cluster-scoped), name
_NS = next(k for k in KINDS if k.plural == "namespaces")


@dataclass(frozen=True)
class Event:
    rv: int
    type: str
    kind: Kind
    obj: dict


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    def __init__(self, history: int = 1000):
        self.cond = threading.Condition()
        self._rv = 0
        self._compacted = 0  # newest resourceVersion dropped from the watch history
        self._history: deque[Event] = deque()
        self._limit = history
        self._objs: dict[Key, dict] = {}
        self._owners: dict[Key, dict[fields.Owner, set[fields.Path]]] = {}

    # ---- reading
    def head(self) -> int:
        with self.cond:
            return self._rv

    def get(self, kind: Kind, ns: str, name: str) -> dict:
        with self.cond:
            return copy.deepcopy(self._require(kind, ns, name))

    def list(self, kind: Kind, ns: str, labels: str | None, field_sel: str | None) -> tuple[list[dict], int]:
        with self.cond:
            items = [copy.deepcopy(o) for k, o in sorted(self._objs.items())
                     if k[:2] == (kind.group, kind.plural) and (not ns or k[2] == ns)
                     and self.selected(o, labels, field_sel)]
            return items, self._rv

    @staticmethod
    def selected(obj: dict, labels: str | None, field_sel: str | None) -> bool:
        meta = obj.get("metadata", {})
        flat = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace", "")}
        return matches(labels, meta.get("labels") or {}) and matches(field_sel, flat)

    def events_after(self, rv: int, wait_s: float) -> tuple[builtins.list[Event], int]:
        """Events newer than `rv` (waiting up to wait_s for one); 410 Expired if history lost them."""
        with self.cond:
            if rv < self._compacted:
                raise ApiError(410, "Expired", f"too old resource version: {rv} ({self._compacted + 1})")
            if self._rv <= rv:
                self.cond.wait(wait_s)
            return [e for e in self._history if e.rv > rv], self._rv

    def compact(self, keep: int = 0) -> None:
        """Drop watch history (keep the newest `keep` events): older resourceVersions expire."""
        with self.cond:
            self._limit = keep
            self._trim()

    # ---- writing
    def write(self, kind: Kind, ns: str, body: dict, manager: str, *, sub: str = "", mode: str = "update",
              force: bool = False, strict: bool = False) -> dict:
        """create | update (PUT) | merge (merge patch) | apply (server-side apply) of one object."""
        with self.cond:
            name = body.get("metadata", {}).get("name") or ""
            if mode == "create" and not name and body.get("metadata", {}).get("generateName"):
                name = body["metadata"]["generateName"] + uuid.uuid4().hex[:5]
            key = (kind.group, kind.plural, ns if kind.namespaced else "", name)
            cur = self._objs.get(key)
            if mode == "create" and cur is not None:
                raise ApiError(409, "AlreadyExists", f'{kind.plural} "{name}" already exists',
                               {"name": name, "kind": kind.plural})
            if cur is None and (mode in ("update", "merge") or sub):
                raise self._not_found(kind, name)
            if cur is None:
                self._check_namespace(kind, ns)
            owners = self._owners.setdefault(key, {}) if cur else {}
            new = self._compose(kind, cur, body, manager, owners, mode, sub, force)
            new.setdefault("metadata", {})["name"] = name
            self._admit(kind, new, strict)
            return copy.deepcopy(self._commit(kind, key, cur, new, owners))

    def _compose(self, kind: Kind, cur: dict | None, body: dict, manager: str, owners: dict,
                 mode: str, sub: str, force: bool) -> dict:
        body = _restrict(kind, cur, copy.deepcopy(body), mode, sub)
        me = (manager, "Apply" if mode == "apply" else "Update", sub)
        if mode == "apply":
            try:
                return fields.apply(cur or {}, body, owners, me, force)
            except fields.Conflicts as c:
                raise _conflict_error(kind, body, c) from None
        if mode == "merge":
            new = fields.merge_patch(cur, body)
            assert isinstance(new, dict)
        else:
            new = body
            want = body.get("metadata", {}).get("resourceVersion")
            if cur is not None and want and want != cur["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.plural} "'
                               f'{cur["metadata"]["name"]}": the object has been modified; please apply '
                               "your changes to the latest version and try again")
        fields.record_update(cur, new, owners, me)
        return new

    def _admit(self, kind: Kind, obj: dict, strict: bool) -> None:
        if not kind.schema:
            return
        causes, unknown = schema.validate(kind.kind, obj, prune=not strict)
        name = obj["metadata"]["name"]
        if strict and unknown:
            raise ApiError(400, "BadRequest", "strict decoding error: " +
                           ", ".join(f'unknown field "{u}"' for u in unknown))
        if causes:
            text = "; ".join(f"{c.field}: {c.message}" for c in causes)
            raise ApiError(422, "Invalid", f'{kind.kind}.{kind.group} "{name}" is invalid: {text}',
                           {"name": name, "group": kind.group, "kind": kind.kind, "causes": [
                               {"reason": c.reason, "message": c.message, "field": c.field} for c in causes]})

    def _commit(self, kind: Kind, key: Key, cur: dict | None, new: dict, owners: dict) -> dict:
        meta = new.setdefault("metadata", {})
        old_meta = (cur or {}).get("metadata", {})
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
            if k in old_meta:
                meta[k] = old_meta[k]
        if cur is None:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            if kind.namespaced:
                meta["namespace"] = key[2]
            if kind is _NS:
                new["status"] = {"phase": "Active"}
        elif _spec_of(cur) != _spec_of(new):
            meta["generation"] = old_meta.get("generation", 1) + 1
        meta["managedFields"] = fields.managed_fields(owners, new.get("apiVersion", ""), now())
        self._owners[key] = owners
        self._emit(kind, key, new, "ADDED" if cur is None else "MODIFIED")
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(kind, key)
        return new

    def delete(self, kind: Kind, ns: str, name: str, propagation: str = "Background") -> dict:
        with self.cond:
            obj = copy.deepcopy(self._require(kind, ns, name))
            if kind is _NS:
                obj["status"] = {"phase": "Terminating"}
            return self._delete_key(kind, obj, propagation)

    def _delete_key(self, kind: Kind, obj: dict, propagation: str = "Background") -> dict:
        key = _key(kind, obj)
        meta = obj["metadata"]
        if propagation == "Orphan":
            self._orphan(meta["uid"])
        if meta.get("finalizers") or kind is _NS:
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"], meta["deletionGracePeriodSeconds"] = now(), 0
                self._emit(kind, key, obj, "MODIFIED")
            if kind is _NS:
                for k in [k for k in self._objs if k[2] == meta["name"]]:
                    if k in self._objs:  # a cascade may have taken it already
                        self._delete_key(_kind_of(k), copy.deepcopy(self._objs[k]))
                self._reap_namespace(meta["name"])
            return obj
        return self._remove(kind, key)

    def _remove(self, kind: Kind, key: Key) -> dict:
        obj = self._objs.pop(key)
        self._owners.pop(key, None)
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._record(Event(self._rv, "DELETED", kind, copy.deepcopy(obj)))
        self._collect_garbage()
        if key[2]:
            self._reap_namespace(key[2])
        return obj

    def _collect_garbage(self) -> None:
        """Background cascade: a dependent all of whose owners are gone is deleted."""
        uids = {o["metadata"]["uid"] for o in self._objs.values()}
        for k, o in list(self._objs.items()):
            refs = o["metadata"].get("ownerReferences") or []
            if k in self._objs and refs and not any(r.get("uid") in uids for r in refs):
                self._delete_key(_kind_of(k), copy.deepcopy(o))

    def _orphan(self, uid: str) -> None:
        for k, o in list(self._objs.items()):
            refs = o["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs):
                o = copy.deepcopy(o)
                o["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                self._emit(_kind_of(k), k, o, "MODIFIED")

    def _reap_namespace(self, ns: str) -> None:
        key = ("", "namespaces", "", ns)
        obj = self._objs.get(key)
        if obj and obj["metadata"].get("deletionTimestamp") and not any(k[2] == ns for k in self._objs):
            self._remove(_NS, key)

    # ---- helpers
    def _emit(self, kind: Kind, key: Key, obj: dict, type_: str) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._objs[key] = obj
        self._record(Event(self._rv, type_, kind, copy.deepcopy(obj)))

    def _record(self, event: Event) -> None:
        self._history.append(event)
        self._trim()
        self.cond.notify_all()

    def _trim(self) -> None:
        while len(self._history) > self._limit:
            self._compacted = self._history.popleft().rv
        if not self._history:
            self._compacted = self._rv

    def _require(self, kind: Kind, ns: str, name: str) -> dict:
        obj = self._objs.get((kind.group, kind.plural, ns if kind.namespaced else "", name))
        if obj is None:
            raise self._not_found(kind, name)
        return obj

    @staticmethod
    def _not_found(kind: Kind, name: str) -> ApiError:
        what = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
        return ApiError(404, "NotFound", f'{what} "{name}" not found', {"name": name, "kind": kind.plural})

    def _check_namespace(self, kind: Kind, ns: str) -> None:
        if not kind.namespaced:
            return
        obj = self._objs.get(("", "namespaces", "", ns))
        if obj is None:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
        if obj["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "Forbidden", f'{kind.plural} is forbidden: unable to create new content in '
                           f"namespace {ns} because it is being terminated")


def _restrict(kind: Kind, cur: dict | None, body: dict, mode: str, sub: str) -> dict:
    """A /status write changes only status; a main write never changes status (kinds with /status)."""
    body.get("metadata", {}).pop("managedFields", None)
    if not kind.status:
        return body
    if sub:
        part = {k: body[k] for k in ("apiVersion", "kind") if k in body} | {"status": body.get("status")}
        return part if mode in ("merge", "apply") else {**copy.deepcopy(cur or {}), "status": body.get("status")}
    if mode in ("merge", "apply") or cur is None:
        body.pop("status", None)
    else:
        body["status"] = copy.deepcopy(cur.get("status"))
    return body


def _key(kind: Kind, obj: dict) -> Key:
    meta = obj["metadata"]
    return kind.group, kind.plural, meta.get("namespace", "") if kind.namespaced else "", meta["name"]


def _kind_of(key: Key) -> Kind:
    return next(k for k in KINDS if (k.group, k.plural) == key[:2])


def _spec_of(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _conflict_error(kind: Kind, body: dict, c: fields.Conflicts) -> ApiError:
    n = len(c.conflicts)
    parts = [f'conflict with "{m}": {fields.path_text(p)}' for m, p in c.conflicts]
    message = f"Apply failed with {n} conflict{'s' if n > 1 else ''}: " + "\n".join(parts)
    causes = [{"type": "FieldManagerConflict", "message": f'conflict with "{m}"', "field": fields.path_text(p)}
              for m, p in c.conflicts]
    return ApiError(409, "Conflict", message, {"name": body.get("metadata", {}).get("name", ""),
                                               "group": kind.group, "kind": kind.plural, "causes": causes})
