"""cleanup.json, the run's teardown report, with one writer: this class. Everything teardown learns
goes through it (each ledger entry's outcome as it is deleted, a before-teardown step that failed,
the final listing's leftovers, the command that removes what is left) and it rewrites the file
after every change, so a killed teardown still leaves an up-to-date report. Secrets are scrubbed."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshvm import redact


@dataclass(frozen=True)
class Item:
    kind: str
    name: str
    where: str
    outcome: str  # deleted | remains | error | interrupted
    error: str | None = None

    @property
    def left(self) -> bool:
        return self.outcome != "deleted"


@dataclass
class CleanupReport:
    path: Path
    items: list[Item] = field(default_factory=list)
    failures: list[Item] = field(default_factory=list)  # before-teardown steps that failed: counted as left
    leftovers: list[str] | None = None  # the final listing by the run's labels (None: not listed yet)
    command: str = ""  # the janitor command that removes what is left
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def read(cls, path: Path) -> CleanupReport:
        """The report as a run left it (an empty one when there is none or it is unreadable)."""
        try:
            data = json.loads(path.read_text())
            items = [Item(**{k: i.get(k) for k in ("kind", "name", "where", "outcome", "error")})
                     for i in data.get("items", []) if i.get("kind") != "before-teardown"]
            failures = [Item(**{k: i.get(k) for k in ("kind", "name", "where", "outcome", "error")})
                        for i in data.get("items", []) if i.get("kind") == "before-teardown"]
            return cls(path, items, failures, data.get("leftovers"), data.get("cleanup_command", ""))
        except (OSError, ValueError, TypeError, AttributeError):
            return cls(path)

    def add(self, kind: str, name: str, where: str, outcome: str, error: str | None = None) -> None:
        with self._lock:
            self.items.append(Item(kind, name, where, outcome, error))
        self.write()

    def failed_step(self, name: str, error: str) -> None:
        with self._lock:
            self.failures.append(Item("before-teardown", name, "", "error", error))
        self.write()

    def listed(self, leftovers: list[str]) -> None:
        with self._lock:
            self.leftovers = list(leftovers)
        self.write()

    def remove_with(self, command: str) -> None:
        with self._lock:
            self.command = command
        self.write()

    def summary(self) -> dict[str, Any]:
        with self._lock:
            every = self.failures + self.items
            out: dict[str, Any] = {"created": len(self.items),
                                   "remaining": [_json(i) for i in every if i.left],
                                   "items": [_json(i) for i in every]}
            if self.leftovers is not None:
                out["leftovers"] = list(self.leftovers)
            if self.command and (out["remaining"] or self.leftovers):
                out["cleanup_command"] = self.command
            return out

    def write(self) -> dict[str, Any]:
        summary = self.summary()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(redact.scrub(json.dumps(summary, indent=2)) + "\n")
        tmp.replace(self.path)
        return summary


def _json(i: Item) -> dict[str, Any]:
    return {"kind": i.kind, "name": i.name, "where": i.where, "outcome": i.outcome, "error": i.error}
