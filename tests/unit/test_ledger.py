"""The run ledger: record before waiting, persist, tear down in reverse, report what remains."""

import json

import pytest

from meshvm.ledger import Entry, Ledger, teardown


def test_recorded_entries_persist_and_teardown_runs_in_reverse(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json")
    ledger.record("network", "net", "p/global")
    ledger.record("instance", "vm", "p/us-central1-a", tag="t")
    ledger.record("instance", "vm", "p/us-central1-a")  # recorded once
    assert [e.name for e in Ledger(tmp_path / "ledger.json", existing=True).entries()] == ["net", "vm"]
    with pytest.raises(FileExistsError, match="already holds a run.s ledger"):
        Ledger(tmp_path / "ledger.json")

    alive = {"net", "vm"}
    order: list[str] = []

    def delete(e: Entry) -> None:
        order.append(e.name)
        alive.discard(e.name)

    summary = teardown(ledger, {"network": delete, "instance": delete},
                       {"network": lambda e: e.name in alive, "instance": lambda e: e.name in alive},
                       tmp_path / "cleanup.json")
    assert order == ["vm", "net"] and summary["remaining"] == []
    assert json.loads((tmp_path / "cleanup.json").read_text())["created"] == 2


def test_teardown_continues_past_failures_and_reports_them(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json")
    ledger.record("network", "net", "g")
    ledger.record("cluster", "c", "z")
    ledger.record("instance", "vm", "z")
    deleted = []

    def boom(e: Entry) -> None:
        raise RuntimeError("400 operation in progress")

    summary = teardown(ledger, {"cluster": boom, "network": deleted.append, "instance": lambda e: None},
                       {"cluster": lambda e: True, "network": lambda e: False, "instance": lambda e: True},
                       tmp_path / "cleanup.json")
    assert [e.name for e in deleted] == ["net"]  # the cluster's failure did not stop the network
    remaining = {r["name"]: (r["outcome"], r["error"]) for r in summary["remaining"]}
    assert remaining == {"c": ("error", "RuntimeError: 400 operation in progress"),
                         "vm": ("remains", "still present after delete")}


def test_an_interrupted_teardown_still_reports_what_is_left(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json")
    for name in ("net", "c", "vm"):
        ledger.record("thing", name, "z")

    def delete(e: Entry) -> None:
        if e.name == "c":
            raise KeyboardInterrupt("second Ctrl-C")

    with pytest.raises(KeyboardInterrupt):
        teardown(ledger, {"thing": delete}, {"thing": lambda e: False}, tmp_path / "cleanup.json")
    report = json.loads((tmp_path / "cleanup.json").read_text())
    assert [(r["name"], r["outcome"]) for r in report["items"]] == [
        ("vm", "deleted"), ("c", "interrupted"), ("net", "interrupted")]
    assert [r["name"] for r in report["remaining"]] == ["c", "net"]
