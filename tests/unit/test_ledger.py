"""The run ledger: record before waiting, persist, tear down in reverse, report what remains."""

import json

import pytest

from meshvm.cleanup import CleanupReport
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
                       CleanupReport(tmp_path / "cleanup.json"))
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
                       CleanupReport(tmp_path / "cleanup.json"))
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
        teardown(ledger, {"thing": delete}, {"thing": lambda e: False}, CleanupReport(tmp_path / "cleanup.json"))
    report = json.loads((tmp_path / "cleanup.json").read_text())
    assert [(r["name"], r["outcome"]) for r in report["items"]] == [
        ("vm", "deleted"), ("c", "interrupted"), ("net", "interrupted")]
    assert [r["name"] for r in report["remaining"]] == ["c", "net"]


def test_remaining_is_what_the_report_does_not_say_was_deleted(tmp_path):
    from meshvm.ledger import remaining

    ledger = Ledger(tmp_path / "ledger.json")
    net, vm = ledger.record("network", "net", "g"), ledger.record("instance", "vm", "z")
    report = tmp_path / "cleanup.json"
    assert remaining(ledger, report) == [net, vm]  # no report yet: all of it
    cleanup = CleanupReport(report)
    cleanup.add(vm.kind, vm.name, vm.where, "deleted")
    cleanup.add(net.kind, net.name, net.where, "interrupted", "teardown interrupted")
    assert remaining(ledger, report) == [net]


def test_kept_json_lists_resources_expiry_and_command_never_extras(tmp_path):
    from meshvm import redact
    from meshvm.ledger import write_kept

    redact.register("super-secret-token-value")
    try:
        ledger = Ledger(tmp_path / "ledger.json")
        ledger.record("instance", "vm", "p/z", key="super-secret-token-value")
        kept = write_kept(ledger, tmp_path / "kept.json", "r1", "always", "2026-01-01t00-00z",
                          "nox -s cleanup -- --run-id r1 --yes")
    finally:
        redact.clear()
    on_disk = json.loads((tmp_path / "kept.json").read_text())
    assert on_disk == kept and on_disk["delete_command"] == "nox -s cleanup -- --run-id r1 --yes"
    assert on_disk["resources"] == [{"kind": "instance", "name": "vm", "where": "p/z", "created": ledger.entries()[0].created,
                                     "e2e-expires": "2026-01-01t00-00z"}]
    assert "super-secret" not in (tmp_path / "kept.json").read_text()


def test_the_cleanup_command_is_exact_per_platform():
    from meshvm.janitor import command

    assert command("lab", "r1") == "nox -s cleanup -- --run-id r1 --yes"
    assert command("gcp", "r1", "p", "http://127.0.0.1:1", None) == (
        "nox -s cleanup -- --platform gcp --gcp-project p --compute-endpoint http://127.0.0.1:1 --run-id r1 --yes")


def test_kept_json_shows_an_adopted_resources_own_expiry(tmp_path):
    from meshvm.ledger import write_kept

    ledger = Ledger(tmp_path / "ledger.json")
    ledger.record("network", "net", "p", adopted="true", **{"e2e-expires": "20261126t1300z"})
    ledger.record("instance", "vm", "p/z")
    kept = write_kept(ledger, tmp_path / "kept.json", "r1", "always", "20261126t1800z", "nox -s cleanup -- ...")
    assert [r["e2e-expires"] for r in kept["resources"]] == ["20261126t1300z", "20261126t1800z"]
    assert kept["expires"] == "20261126t1300z"  # the earliest: when the janitor may start deleting
    assert "adopted" not in (tmp_path / "kept.json").read_text()


def test_cleanup_json_has_one_writer_and_says_everything(tmp_path):
    """A failed before-teardown step counts as remaining, the final listing's leftovers are kept, the
    command appears only while something is left, and a report read back says the same."""
    report = CleanupReport(tmp_path / "cleanup.json", command="nox -s cleanup -- --run-id r --yes")
    report.failed_step("release_load_balancers", "KubeError: 503")
    report.add("network", "net", "p", "deleted")
    report.listed([])
    summary = json.loads((tmp_path / "cleanup.json").read_text())
    assert summary["created"] == 1 and [r["name"] for r in summary["remaining"]] == ["release_load_balancers"]
    assert summary["leftovers"] == [] and summary["cleanup_command"].endswith("--yes")
    again = CleanupReport.read(tmp_path / "cleanup.json")
    assert again.summary() == summary
    clean = CleanupReport(tmp_path / "clean.json", command="c")
    clean.add("network", "net", "p", "deleted")
    clean.listed([])
    assert "cleanup_command" not in json.loads((tmp_path / "clean.json").read_text())
