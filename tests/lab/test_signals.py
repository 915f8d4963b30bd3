"""SIGTERM at three points of a lab run (VM provisioning, the Istio install, the exercises): the
run tears down, exits non-zero, writes its reports, and leaves nothing. A second Ctrl-C during
teardown stops it and says what remains and how to remove it; after SIGKILL the janitor removes
everything (lab, and the gcp path against the local cloud)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from meshvm import retry
from meshvm.deadlines import Deadline
from meshvm.secretdir import base_dir
from tests.conftest import KEPT
from tests.lab.test_e2e_infra import ROOT, no_lab_leftovers
from tests.lab.test_keep import janitor, local_cloud, run_objects

pytestmark = pytest.mark.lab


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL: no teardown, no reports; what the run made is left for the janitor."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


def phases(out: Path) -> dict[str, str]:
    try:
        return {p["name"]: p["outcome"] for p in json.loads((out / "phases.json").read_text())["phases"]}
    except (OSError, ValueError):
        return {}


def running(p: dict[str, str]) -> list[str]:
    return [name for name, outcome in p.items() if outcome == "running"]


SIGTERM_AT = [
    ("VM provisioning", lambda p: p.get("vm") == "running"),
    ("the Istio install", lambda p: p.get("istio") == "running"),
    ("two stages at once", lambda p: len(running(p)) >= 2),  # e.g. the cluster and the VM
    ("the exercises", lambda p: p.get("bookinfo_gateway") == "passed"),
]


# Classes, so that pytest-xdist (a module or class per worker) runs these lab runs at the same time.
class TestSigtermDuringProvisioning:
    @pytest.mark.parametrize(("when", "reached"), SIGTERM_AT[:2], ids=[when for when, _ in SIGTERM_AT[:2]])
    def test_sigterm_tears_down_and_leaves_nothing(self, tmp_path, when, reached):
        sigterm_tears_down(tmp_path, when, reached)


class TestSigtermLater:
    @pytest.mark.parametrize(("when", "reached"), SIGTERM_AT[2:], ids=[when for when, _ in SIGTERM_AT[2:]])
    def test_sigterm_tears_down_and_leaves_nothing(self, tmp_path, when, reached):
        sigterm_tears_down(tmp_path, when, reached)


def sigterm_tears_down(tmp_path, when, reached):
    out = tmp_path / "out"
    proc = start(out, "--platform", "lab")
    try:
        wait_for(proc, when, lambda: reached(phases(out)))
        at_signal = running(phases(out))
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert rc == 2, f"exit {rc} after SIGTERM during {when}"  # pytest: interrupted
    after = phases(out)
    assert running(after) == [], f"stages still running at teardown: {running(after)}"
    assert all(after[name] in ("interrupted", "passed") for name in at_signal), (at_signal, after)
    cleanup = json.loads((out / "cleanup.json").read_text())
    assert cleanup["remaining"] == [] and cleanup["leftovers"] == [] and cleanup["created"] > 0
    assert (out / "junit.xml").is_file()
    no_lab_leftovers(out)


def start(out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("E2E_") or k in KEPT}
    out.mkdir(parents=True, exist_ok=True)
    with open(out.parent / "stderr.txt", "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "pytest", "tests/e2e", "-p", "no:cacheprovider", *args,
                                 "--artifacts-dir", str(out)], cwd=ROOT, env={**base, **(env or {})},
                                stdout=subprocess.DEVNULL, stderr=err)


def wait_for(proc: subprocess.Popen[bytes], what: str, check, seconds: float = 240) -> None:
    def reached() -> bool:
        assert proc.poll() is None, f"the run ended before {what}"
        return bool(check())

    retry.until(what, reached, Deadline.after(seconds, what), initial=0.05, ceiling=0.25,
                max_attempts=int(seconds / 0.05))  # the deadline decides, not the attempts


def run_log(out: Path) -> str:
    try:
        return (out / "run.log").read_text(errors="replace")
    except OSError:
        return ""


def lab_janitor(run_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshvm.janitor", "--run-id", run_id, "--yes"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


class TestSecondInterrupt:
    def test_second_ctrl_c_stops_teardown_and_says_what_remains(self, tmp_path):
        second_ctrl_c(tmp_path)


def second_ctrl_c(tmp_path):
    run_id, out = f"twoint-{secrets.token_hex(2)}", tmp_path / "out"
    proc = start(out, "--platform", "lab", "--until", "bookinfo_gateway", "--run-id", run_id)
    try:
        wait_for(proc, "stage istio running", lambda: phases(out).get("istio") == "running")
        proc.send_signal(signal.SIGINT)  # the first: teardown starts
        wait_for(proc, "teardown started", lambda: "teardown: started" in run_log(out), 120)
        proc.send_signal(signal.SIGINT)  # the second, during teardown: stop it
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    stderr = (tmp_path / "stderr.txt").read_text(errors="replace")
    command = f"nox -s cleanup -- --run-id {run_id} --yes"
    try:
        assert rc == 2, f"exit {rc}: {stderr[-2000:]}"
        assert "stopped by a second interrupt" in stderr and f"remove them with: {command}" in stderr
        listed = [ln for ln in stderr.splitlines() if ln.startswith("meshvm:   ")]
        assert listed and any("instance/" in ln or "network/" in ln for ln in listed), stderr[-2000:]
        assert f"remove them with: {command}" in run_log(out)
        cleanup = json.loads((out / "cleanup.json").read_text())
        assert cleanup["remaining"] and cleanup["cleanup_command"] == command
        assert (out / "junit.xml").is_file()
    finally:
        j = lab_janitor(run_id)
    assert j.returncode == 0, j.stdout[-2000:] + j.stderr[-2000:]
    no_lab_leftovers(out)


class TestSigkill:
    @pytest.mark.parametrize(("stage", "outcome", "until"), [
        ("vm", "running", ["--until", "bookinfo_gateway"]),
        ("bookinfo_gateway", "passed", []),  # the exercises: BookInfo's pods and their apps are running
    ])
    def test_sigkill_then_the_janitor_leaves_nothing(self, tmp_path, stage, outcome, until):
        sigkill_then_janitor(tmp_path, stage, outcome, until)


def sigkill_then_janitor(tmp_path, stage, outcome, until):
    run_id, out = f"killed-{secrets.token_hex(2)}", tmp_path / "out"
    proc = start(out, "--platform", "lab", *until, "--run-id", run_id)
    try:
        wait_for(proc, f"stage {stage} {outcome}", lambda: phases(out).get(stage) == outcome)
    finally:
        kill(proc)
    j = lab_janitor(run_id)
    assert j.returncode == 0, j.stdout[-2000:] + j.stderr[-2000:]
    assert f"run {run_id}" in j.stdout
    no_lab_leftovers(out)
    assert not list(base_dir().glob(f"meshvm-{run_id}-*")), "the killed run's secret dir (SSH key) is left"


def test_sigkill_on_the_gcp_path_then_the_janitor_leaves_nothing(tmp_path):
    """The gcp code path against the local cloud, killed while its VM is being created: the printed
    `nox -s cleanup -- --platform gcp ... --run-id ID --yes` finds the run by its labels and prefix."""
    run_id, out = f"gkill-{secrets.token_hex(2)}", tmp_path / "out"
    with local_cloud(tmp_path, run_id) as (lab, args, env):
        proc = start(out, *args, "--until", "infra", env=env)
        try:
            wait_for(proc, "stage vm running", lambda: phases(out).get("vm") == "running")
        finally:
            kill(proc)
        assert run_objects(lab, run_id), "the killed run left nothing to clean: kill it earlier"
        cfg_args = dict(zip(args[::2], args[1::2], strict=False))
        command = (f"nox -s cleanup -- --platform gcp --gcp-project {cfg_args['--gcp-project']} --compute-endpoint "
                   f"{cfg_args['--compute-endpoint']} --container-endpoint {cfg_args['--container-endpoint']} "
                   f"--run-id {run_id} --yes")
        j = janitor(command, env)
        assert j.returncode == 0, j.stdout[-2000:] + j.stderr[-2000:]
        assert run_objects(lab, run_id) == []
