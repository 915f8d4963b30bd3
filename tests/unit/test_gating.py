"""Stage gating, reports and signals, through real pytest runs of a small e2e tree (pytester)."""

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

ROOT = Path(__file__).resolve().parents[2]
SECRET = "tok-3f9c1e0b7a6d5c4b"  # a stand-in for an istio-token the run would hold

STAGE_FIXTURES = '''
import logging, pytest
from fixtures.gating import needed, run_stage
from meshvm import redact
from meshvm.stagegraph import StageGraph
from meshvm.stages import Stage

log = logging.getLogger("e2e")
STAGES = (Stage("network", "s", "", 60), Stage("firewall", "s", "", 60, needs=("network",)),
          Stage("cluster", "s", "", 60, needs=("firewall",)))

def network(g):
    redact.register("SECRET")
    log.info("network ready, token SECRET")
    return "net"

def firewall(g):
    raise RuntimeError("download failed: HTTP 503")

@pytest.fixture(scope="session")
def graph(book, cfg):
    g = StageGraph(STAGES, {"network": network, "firewall": firewall, "cluster": lambda g: None}, book,
                   [s.name for s in STAGES if s.name in cfg.stages()], cfg.deadlines, until=cfg.until)
    yield g.start()
    g.stop("the session ended")

@pytest.mark.parametrize("name", ["network", "firewall", "cluster"])
def test_stage(graph, name):
    run_stage(graph, name)

def test_uses_network(graph):
    assert needed(graph, "network") == "net"

def test_uses_cluster(graph):
    needed(graph, "cluster")
'''.replace("SECRET", SECRET)


@pytest.fixture
def suite(pytester: pytest.Pytester, tmp_path: Path) -> pytest.Pytester:
    pytester.makeconftest('pytest_plugins = ("fixtures.plugin",)')
    pytester.makeini("[pytest]\nlog_cli = true\nlog_cli_level = INFO\n")
    e2e = pytester.mkdir("tests").joinpath("e2e")
    e2e.mkdir()
    e2e.joinpath("test_run.py").write_text(STAGE_FIXTURES)
    token = tmp_path / "token"
    token.write_text("ya29.fake")
    pytester.syspathinsert(ROOT)
    os.environ["PYTHONPATH"] = f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"
    return pytester


def args(out: Path, *extra: str) -> tuple[str, ...]:
    token = out.parent / "token"
    token.write_text("ya29.fake")
    return ("tests/e2e", "--gcp-project", "demo-project", "--ssh-source-ranges", "203.0.113.7/32",
            "--gcp-access-token-file", str(token), "--artifacts-dir", str(out), "-rfs",
            *(extra if "--until" in extra else ("--until", "vm", *extra)))


def test_a_failed_stage_fails_once_and_skips_its_dependents(suite, tmp_path):
    out = tmp_path / "out"
    result = suite.runpytest_subprocess(*args(out))
    result.assert_outcomes(passed=2, failed=1, skipped=2)
    result.stdout.fnmatch_lines([
        "stage firewall failed: RuntimeError: download failed: HTTP 503",
        "FAILED*test_stage?firewall?*",
        "SKIPPED*needs stage firewall, which failed: RuntimeError: download failed: HTTP 503",
    ])
    phases = {p["name"]: p for p in json.loads((out / "phases.json").read_text())["phases"]}
    assert phases["network"]["outcome"] == "passed" and phases["firewall"]["outcome"] == "failed"
    assert "cluster" not in phases  # never started: the stage it needs failed
    junit = (out / "junit.xml").read_text()
    assert 'name="test_stage[firewall]"' in junit and 'name="test_stage[cluster]"' in junit


def test_until_skips_later_stages_with_the_reason(suite, tmp_path):
    result = suite.runpytest_subprocess(*args(tmp_path / "out", "--until", "network"))
    result.assert_outcomes(passed=2, skipped=3)
    result.stdout.fnmatch_lines(["SKIPPED*stage firewall not run: the run stops after network (--until)"])


def test_registered_secrets_reach_no_log_or_report(suite, tmp_path):
    out = tmp_path / "out"
    result = suite.runpytest_subprocess(*args(out))
    assert "network ready, token [REDACTED]" in (out / "run.log").read_text()
    texts = [result.stdout.str(), result.stderr.str()] + [
        p.read_text(errors="replace") for p in out.iterdir() if p.is_file()]  # timeline.png too, as bytes
    assert all(SECRET not in t for t in texts)
    assert {"junit.xml", "phases.json", "run.log"} <= {p.name for p in out.iterdir()}


SLOW_RUN = '''
import pathlib, threading, pytest

@pytest.fixture(scope="session")
def vm():
    yield
    pathlib.Path("torn-down").write_text("yes")

def test_long_exercise(vm):
    pathlib.Path("ready").write_text("yes")
    threading.Event().wait(60)
'''


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_sigterm_sighup_and_sigint_run_teardown_and_write_reports(suite, tmp_path, sig):
    """Even when the run starts with SIGINT ignored (a background job of a non-interactive shell)."""
    suite.path.joinpath("tests/e2e/test_run.py").write_text(SLOW_RUN)
    out = tmp_path / "out"
    # SIGINT ignored by the shell that execs the run (an ignored signal stays ignored across exec); not
    # by preexec_fn: that forks this worker, and a worker in which a test served gRPC (the lab's xDS) has
    # gRPC's fork handlers, which aborted the child (CI: "epoll ... EBADF", exit -6).
    ignoring_sigint = ["sh", "-c", 'trap "" INT; exec "$0" "$@"']
    proc = subprocess.Popen([*ignoring_sigint, sys.executable, "-m", "pytest", *args(out)], cwd=suite.path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def ready() -> bool:
            assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]
            return (suite.path / "ready").exists()

        retry.until("the run's test to start", ready, Deadline.after(30, "ready"), initial=0.05, ceiling=0.2)
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 2, output  # pytest: interrupted
    assert (suite.path / "torn-down").read_text() == "yes"
    assert (out / "junit.xml").is_file() and (out / "phases.json").is_file()


def test_until_does_not_run_the_exercises(suite, tmp_path):
    suite.path.joinpath("tests/e2e/test_exercise.py").write_text(
        "import pytest\npytestmark = pytest.mark.exercise\n\ndef test_exercise(network):\n    assert False\n")
    result = suite.runpytest_subprocess(*args(tmp_path / "out", "--until", "network"))
    result.stdout.fnmatch_lines(["SKIPPED*exercise not run: the run stops after stage network (--until)"])
    assert result.ret == 0


def test_a_traceback_that_cannot_be_rendered_does_not_change_how_an_interrupt_ends(suite, tmp_path):
    """As CPython 3.11's "AST constructor recursion depth mismatch" did once while pytest rendered a
    second Ctrl-C's traceback: exit 2 (interrupted), teardown done, reports written."""
    suite.path.joinpath("tests/e2e/test_run.py").write_text(SLOW_RUN + '''

def pytest_keyboard_interrupt(excinfo):
    raise SystemError("AST constructor recursion depth mismatch (before=78, after=35)")
''')
    suite.path.joinpath("tests/e2e/conftest.py").write_text(
        "from test_run import pytest_keyboard_interrupt  # noqa: F401\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *args(out)], cwd=suite.path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        retry.until("the run's test to start", lambda: (suite.path / "ready").exists(), Deadline.after(30, "ready"),
                    initial=0.05, ceiling=0.2)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 2, output
    assert (suite.path / "torn-down").read_text() == "yes" and (out / "junit.xml").is_file()


def test_when_pytest_itself_cannot_render_the_interrupt_it_still_ends_as_interrupted(suite, tmp_path):
    """As in CI: pytest's terminal reporter failed to render a second Ctrl-C's traceback, then asserted it
    had a rendering and the run exited 1; the suite hands it the plain one, so the run exits 2."""
    suite.path.joinpath("tests/e2e/test_run.py").write_text(SLOW_RUN)
    suite.path.joinpath("tests/e2e/conftest.py").write_text('''
import _pytest._code.code as code

_getrepr = code.ExceptionInfo.getrepr


def getrepr(self, *args, **kwargs):
    if kwargs.get("style") != "native":
        raise SystemError("AST constructor recursion depth mismatch (before=78, after=35)")
    return _getrepr(self, *args, **kwargs)


code.ExceptionInfo.getrepr = getrepr
''')
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *args(out)], cwd=suite.path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        retry.until("the run's test to start", lambda: (suite.path / "ready").exists(), Deadline.after(30, "ready"),
                    initial=0.05, ceiling=0.2)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 2, output
    assert (suite.path / "torn-down").read_text() == "yes" and (out / "junit.xml").is_file()
