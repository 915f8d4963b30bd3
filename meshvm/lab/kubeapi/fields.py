"""Field paths, field ownership (server-side apply) and JSON merge patch for the API stand-in.

Simplification of structured-merge-diff: every list is atomic (owned and replaced as a whole);
maps merge by key. Conflicts are checked on equal paths only.
"""

from __future__ import annotations

import copy
import json

Path = tuple[str, ...]
Owner = tuple[str, str, str]  # (manager, operation: Apply | Update, subresource or "")
_TRACKED_META = ("labels", "annotations", "finalizers", "ownerReferences")
_MISSING = object()


class Conflicts(Exception):
    def __init__(self, conflicts: list[tuple[str, Path]]):
        self.conflicts = conflicts
        super().__init__(f"{len(conflicts)} conflicts")


def leaves(obj: dict, prefix: Path = ()) -> dict[Path, object]:
    """Leaf paths of an object (scalars, lists, empty maps); metadata only where apply tracks it."""
    out: dict[Path, object] = {}
    for key, value in obj.items():
        path = (*prefix, key)
        if not prefix and key in ("apiVersion", "kind"):
            continue
        if prefix == ("metadata",) and key not in _TRACKED_META:
            continue
        if isinstance(value, dict) and value:
            out.update(leaves(value, path))
        else:
            out[path] = value
    return out


def get(obj: dict, path: Path) -> object:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def put(obj: dict, path: Path, value: object) -> None:
    for key in path[:-1]:
        if not isinstance(obj.get(key), dict):
            obj[key] = {}
        obj = obj[key]
    obj[path[-1]] = copy.deepcopy(value)


def remove(obj: dict, path: Path) -> None:
    parent = get(obj, path[:-1]) if len(path) > 1 else obj
    if isinstance(parent, dict):
        parent.pop(path[-1], None)


def apply(current: dict, applied: dict, owners: dict[Owner, set[Path]], me: Owner, force: bool) -> dict:
    """Server-side apply of `applied` by `me` onto `current`; updates `owners` in place."""
    mine = leaves(applied)
    conflicts = [(other[0], p) for other, paths in owners.items() if other != me
                 for p in sorted(paths & mine.keys()) if get(current, p) != mine[p]]
    if conflicts and not force:
        raise Conflicts(conflicts)
    result = copy.deepcopy(current)
    for other, paths in owners.items():
        if other != me and force:
            paths -= {p for _, p in conflicts}
    for p in owners.get(me, set()) - mine.keys():  # dropped from my config: remove unless shared
        if not any(p in paths for o, paths in owners.items() if o != me):
            remove(result, p)
    for p, value in mine.items():
        put(result, p, value)
    for key in ("apiVersion", "kind"):
        result[key] = applied.get(key, result.get(key))
    owners[me] = set(mine)
    return result


def record_update(before: dict | None, after: dict, owners: dict[Owner, set[Path]], me: Owner) -> None:
    """A non-apply write: the writer owns what it changed; others lose it; gone fields are unowned."""
    old, new = leaves(before or {}), leaves(after)
    changed = {p for p, v in new.items() if old.get(p, _MISSING) != v}
    for paths in owners.values():
        paths -= changed
        paths &= new.keys()
    if changed:
        owners.setdefault(me, set()).update(changed)
    for owner in [o for o, paths in owners.items() if not paths]:
        del owners[owner]


def managed_fields(owners: dict[Owner, set[Path]], api_version: str, when: str) -> list[dict]:
    """metadata.managedFields in the API's FieldsV1 form (`f:` prefixed keys)."""
    out = []
    for (manager, operation, sub), paths in sorted(owners.items()):
        tree: dict = {}
        for path in paths:
            node = tree
            for key in path:
                node = node.setdefault(f"f:{key}", {})
        entry = {"manager": manager, "operation": operation, "apiVersion": api_version, "time": when,
                 "fieldsType": "FieldsV1", "fieldsV1": tree}
        out.append({**entry, "subresource": sub} if sub else entry)
    return out


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386 JSON merge patch (also used for strategic merge patches: the suite needs no more)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def path_text(path: Path) -> str:
    return "".join(f".{k}" if k.replace("-", "").replace("_", "").isalnum() else f"[{json.dumps(k)}]"
                   for k in path)
