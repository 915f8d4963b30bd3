"""The run ledger: every created thing is recorded the moment its create request is accepted,
before anything waits for it, and persisted under the artifacts dir (ledger.json).

Teardown walks it in reverse, treats "not found" as done, continues past failures, reports every
error, and writes cleanup.json after each entry. After a killed run the janitor finds the same
resources by their labels and name prefix (meshvm/gcp/sweep.py).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from meshvm import redact
from meshvm.cleanup import CleanupReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    kind: str  # e.g. "network", "cluster", "instance", "firewall", "forwarding-rule", "lab-vm"
    name: str
    where: str  # project/zone/region/namespace: whatever the deleter needs
    created: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.where}/{self.name}"


class Ledger:
    def __init__(self, path: Path, *, existing: bool = False):
        """A new run's ledger; `existing=True` reads an earlier run's (for its cleanup only)."""
        self.path = path
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        if existing:
            self._entries = [Entry(**e) for e in json.loads(path.read_text())["entries"]]
        elif path.exists():
            raise FileExistsError(f"{path} already holds a run's ledger: use a new --run-id or --artifacts-dir")

    def record(self, kind: str, name: str, where: str, **extra: str) -> Entry:
        entry = Entry(kind, name, where, datetime.now(UTC).isoformat(timespec="seconds"), dict(extra))
        with self._lock:
            if all(e.key != entry.key for e in self._entries):
                self._entries.append(entry)
            self._write()
        log.info("ledger: recorded %s", entry.key)
        return entry

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries)

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"entries": [asdict(e) for e in self._entries]}, indent=2) + "\n")
        with open(tmp) as f:
            os.fsync(f.fileno())
        tmp.replace(self.path)


Deleter = Callable[[Entry], None]  # deletes and waits until gone; NotFound is success
Checker = Callable[[Entry], bool]  # True while the thing still exists


class Entries(Protocol):
    """What teardown walks: a ledger, or a view of one in another order."""

    def entries(self) -> list[Entry]: ...


def teardown(ledger: Entries, delete: Mapping[str, Deleter], exists: Mapping[str, Checker],
             report: CleanupReport) -> dict[str, Any]:
    """Delete everything in reverse order of creation and verify; each outcome goes to the report
    (cleanup.json, rewritten after each entry: a killed teardown still leaves an up-to-date one)."""
    todo = list(reversed(ledger.entries()))
    for i, entry in enumerate(todo):
        outcome, error = "deleted", None
        try:
            delete[entry.kind](entry)
            if exists[entry.kind](entry):
                outcome, error = "remains", "still present after delete"
        except Exception as e:  # keep going: one failure must not strand the rest
            outcome, error = "error", f"{type(e).__name__}: {e}"
            log.error("teardown: %s: %s", entry.key, error)
        except BaseException:  # a second Ctrl-C or SIGTERM: say exactly what is left, then stop
            interrupted(report, todo[i:])
            raise
        report.add(entry.kind, entry.name, entry.where, outcome, error)
    return report.summary()


def interrupted(report: CleanupReport, entries: list[Entry]) -> None:
    for e in entries:
        report.add(e.kind, e.name, e.where, "interrupted", "teardown interrupted")


def remaining(ledger: Ledger, report: Path) -> list[Entry]:
    """What the ledger holds that the teardown report does not say was deleted (all of it, without one)."""
    try:
        items = json.loads(report.read_text())["items"]
    except (OSError, ValueError, KeyError, TypeError):
        items = []
    gone = {(i["kind"], i["where"], i["name"]) for i in items if i.get("outcome") == "deleted"}
    return [e for e in ledger.entries() if (e.kind, e.where, e.name) not in gone]


def write_kept(ledger: Ledger, path: Path, run_id: str, keep: str, expires: str, command: str) -> dict[str, object]:
    """kept.json: what a kept run left on purpose, its expiry label and the command that deletes it.
    Kind, name, place, creation time and expiry label only: never another of a ledger entry's extras,
    never key material. A resource adopted from a kept run (`--reuse`) keeps the expiry label it carries;
    `expires` is the earliest."""
    resources = [{"kind": e.kind, "name": e.name, "where": e.where, "created": e.created,
                  "e2e-expires": e.extra.get("e2e-expires") or expires} for e in ledger.entries()]
    kept: dict[str, object] = {
        "run_id": run_id,
        "keep": keep,
        "expires": min([expires, *(str(r["e2e-expires"]) for r in resources)]),
        "delete_command": command,
        "resources": resources,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(redact.scrub(json.dumps(kept, indent=2)) + "\n")
    return kept
