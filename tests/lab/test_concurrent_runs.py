"""Two lab runs at once on one machine (issue: a run can delete another run's load balancer): one on a
GKE version before 1.36 (internal load balancers on instance groups), one from 1.36 (on GCE_VM_IP NEGs,
which GKE deletes later, on its own period). Each reaches exercise 4, tears down only its own, and
leaves nothing: 0 remaining, 0 leftovers, its network deleted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from xml.etree import ElementTree

import pytest

from tests.conftest import KEPT
from tests.lab.test_e2e_infra import RECIPE_ONLY, ROOT, no_lab_leftovers

pytestmark = pytest.mark.lab
VERSIONS = {"before-1.36": ("--cluster-version", "1.35", "--release-channel", "regular"),
            "from-1.36": ("--cluster-version", "1.36", "--release-channel", "rapid")}
GROUP = {"before-1.36": "instance-group", "from-1.36": "network-endpoint-group"}


def test_two_runs_at_once_each_leave_nothing_and_touch_only_their_own(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2E_") or k in KEPT}
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "pytest", "tests/e2e", "-p", "no:cacheprovider", "--platform", "lab", *args, *RECIPE_ONLY,
         "--artifacts-dir", str(tmp_path / name)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for name, args in VERSIONS.items()}
    outs = {name: p.communicate(timeout=600)[0] for name, p in procs.items()}
    reports = {}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name}:\n" + outs[name][-3000:]
        out = tmp_path / name
        cases = ElementTree.parse(out / "junit.xml").getroot().iter("testcase")
        exercise4 = [c for c in cases if "test_productpage_ratings" in c.get("classname", "")]
        assert exercise4 and not [c for c in exercise4 if len(c)], outs[name][-2000:]  # reached and passed
        cleanup = json.loads((out / "cleanup.json").read_text())
        assert cleanup["remaining"] == [] and cleanup["leftovers"] == []
        kinds = {(i["kind"], i["outcome"]) for i in cleanup["items"]}
        assert {("network", "deleted"), ("subnetwork", "deleted"), (GROUP[name], "deleted")} <= kinds, kinds
        reports[name] = {(i["kind"], i["where"], i["name"]) for i in cleanup["items"]}
        no_lab_leftovers(out)
    mine, theirs = reports.values()
    assert mine and theirs and not mine & theirs  # nothing recorded or deleted by both
