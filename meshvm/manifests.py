"""The YAML the recipe applies (manifests/, one file per recipe step), rendered with the run's values.

Placeholders are `${NAME}`; a placeholder left unrendered is an error, never sent to a cluster.
Overlays are merged here (dicts recursively, list items by their `name`), because istioctl
replaces a whole list when given two files.
"""

from __future__ import annotations

import copy
import json
import re
import string
from pathlib import Path
from typing import Any

import yaml

DIR = Path(__file__).resolve().parent.parent / "manifests"
_LEFT = re.compile(r"\$\{[A-Z_]+\}")


def text(name: str, **values: object) -> str:
    """The manifest `name` (without .yaml) with its placeholders filled (lists as JSON flow)."""
    raw = (DIR / f"{name}.yaml").read_text()
    rendered = string.Template(raw).safe_substitute(
        {k: json.dumps(v) if isinstance(v, list | tuple) else str(v) for k, v in values.items()})
    if left := _LEFT.findall(rendered):
        raise ValueError(f"manifest {name}: unrendered {', '.join(sorted(set(left)))}")
    return rendered


def docs(name: str, **values: object) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text(name, **values)) if d]


def merge(base: Any, overlay: Any) -> Any:
    """Overlay onto base: dicts recursively; lists of named items by name; anything else replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for k, v in overlay.items():
            merged[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return merged
    if isinstance(base, list) and isinstance(overlay, list) and _named(base) and _named(overlay):
        out = [copy.deepcopy(b) for b in base]
        index = {b["name"]: i for i, b in enumerate(out)}
        for item in overlay:
            if item["name"] in index:
                out[index[item["name"]]] = merge(out[index[item["name"]]], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(overlay)


def _named(items: list[Any]) -> bool:
    return all(isinstance(i, dict) and "name" in i for i in items)


def dump(*objects: dict[str, Any]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)
