"""A stage past its deadline fails that stage only (the run goes on to teardown), and teardown
still removes everything, including what the late stage had asked the cloud for."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.lab.test_e2e_infra import no_lab_leftovers, suite

pytestmark = pytest.mark.lab


def test_a_stage_past_its_deadline_fails_alone_and_teardown_removes_everything(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # The VM's host keys appear only after a minute (a slow guest agent): stage vm's 10 s run out.
    r = suite("--platform", "lab", "--until", "vm", "--deadline", "vm=10", "--artifacts-dir", str(out),
              "-p", "tests.lab.slow_guest_agent")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    outcome = {}
    for case in ET.parse(out / "junit.xml").iter("testcase"):
        bad = case.find("failure")
        outcome[case.get("name")] = "passed" if bad is None else bad.get("message", "")
    assert [outcome[f"test_stage[{s}]"] for s in ("network", "firewall", "cluster")] == ["passed"] * 3
    vm = outcome["test_stage[vm]"]
    assert vm.startswith("Failed: stage vm failed: WaitFailed: SSH host keys") and "not reached in" in vm, vm
    cleanup = json.loads((out / "cleanup.json").read_text())
    assert "instance" in {i["kind"] for i in cleanup["items"]}, "the VM asked for was not in the ledger"
    assert cleanup["remaining"] == [] and cleanup["leftovers"] == []
    no_lab_leftovers(out)
