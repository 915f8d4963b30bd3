"""SIGTERM at three points of a lab run (VM provisioning, the Istio install, the exercises): the
run tears down, exits non-zero, writes its reports, and leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from meshvm import retry
from meshvm.deadlines import Deadline
from tests.lab.test_e2e_infra import ROOT, no_lab_leftovers

pytestmark = pytest.mark.lab


def phases(out: Path) -> dict[str, str]:
    try:
        return {p["name"]: p["outcome"] for p in json.loads((out / "phases.json").read_text())["phases"]}
    except (OSError, ValueError):
        return {}


@pytest.mark.parametrize(("when", "stage", "outcome"), [
    ("VM provisioning", "vm", "running"),
    ("the Istio install", "istio", "running"),
    ("the exercises", "bookinfo_gateway", "passed"),
])
def test_sigterm_tears_down_and_leaves_nothing(tmp_path, when, stage, outcome):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "tests/e2e", "-p", "no:cacheprovider", "--platform",
                             "lab", "--artifacts-dir", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def reached() -> bool:
            assert proc.poll() is None, f"the run ended before {stage} was {outcome}: {phases(out)}"
            return phases(out).get(stage) == outcome

        retry.until(f"stage {stage} {outcome}", reached, Deadline.after(240, "signal point"), initial=0.05,
                    ceiling=0.2)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert rc == 2, f"exit {rc} after SIGTERM during {when}"  # pytest: interrupted
    cleanup = json.loads((out / "cleanup.json").read_text())
    assert cleanup["remaining"] == [] and cleanup["leftovers"] == [] and cleanup["created"] > 0
    assert (out / "junit.xml").is_file()
    no_lab_leftovers(out)
