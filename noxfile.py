"""Sessions: tests (self-tests), lint and typecheck by default; e2e (the suite), upgrade (an Istio upgrade
with the VM in the mesh), benchmarks (the figures), mutations (the exercises' own self-test) and cleanup
(the janitor) on demand."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "uv|virtualenv"  # uv when installed (`pip install nox uv`): installs in seconds
PYTHON = "3.11"
# After Ctrl-C or SIGTERM the run tears down what it created: give it that time before nox escalates.
TEARDOWN_GRACE_S = 1800
BENCHMARKS = "artifacts/self-tests/benchmarks.json"
BENCHMARK_TESTS = ("tests/lab/test_bench_boot.py", "tests/lab/test_bench_lab_run.py")
# Every lab run is a new Python process that imports google-cloud-compute and kubernetes; where
# PYTHONDONTWRITEBYTECODE is set (as on this machine) nothing would write their bytecode and each run
# would compile them again (about 4 s of CPU per run, measured with py-spy). So the installs write it.
BYTECODE = {"UV_COMPILE_BYTECODE": "1"}  # uv; pip compiles by default
OURS = ("meshvm", "fixtures", "tests", "conftest.py")
TEST_JOBS = "6"  # pytest-xdist workers: 429 s with six against 465 s with five (CI of 65f6b2f) and 449 s with four;
# the lab runs mostly wait on their pods (when they were purely CPU-bound, six were no faster than four)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Self-tests: unit, contract and lab (the lab ones need root). By default TEST_JOBS at a time, a
    module (or test class) per worker, its tests in order (each lab test builds a lab of its own, and
    every janitor call in them names its run), the longest modules first (tests/conftest.py).
    Arguments replace all that: one pytest run."""
    install(session, ".[test]")
    lab_host_tools(session)
    if session.posargs:
        session.run("pytest", *session.posargs)
        return
    session.run("pytest", "tests", "--ignore=tests/e2e", "--ignore=tests/upgrade", *(f"--ignore={b}" for b in BENCHMARK_TESTS),
                "-n", os.environ.get("MESHVM_TEST_JOBS", TEST_JOBS), "--dist", "loadscope", "--no-loadscope-reorder",
                "--durations=25")


@nox.session(python=PYTHON, default=False)
def benchmarks(session: nox.Session) -> None:
    """The figures (root): lab boot, and whole lab runs (GCP-timed overlapped and sequential, fast on
    the older minor), each green and leaving nothing; alone on the machine, so the figures are not
    skewed. They land in BENCHMARKS; `.ci/run` runs this after the self-tests."""
    install(session, ".[test]")
    lab_host_tools(session)
    os.makedirs(os.path.dirname(BENCHMARKS), exist_ok=True)
    session.run("pytest", *BENCHMARK_TESTS, f"--benchmark-json={BENCHMARKS}", *session.posargs)


def install(session: nox.Session, package: str) -> None:
    """pip and the project (editable, with `package`'s extras), their bytecode written (BYTECODE)."""
    session.install("pip", "-e", package, env=BYTECODE)
    session.run("python", "-m", "compileall", "-q", *OURS, silent=True)


def lab_host_tools(session: nox.Session) -> None:
    """The lab's host programs (meshvm/lab/hosttools.py): installed as root on Debian or Ubuntu; else
    the session stops in one line naming the command (the lab self-tests cannot run without them)."""
    if os.geteuid() == 0:
        session.run("python", "-m", "meshvm.lab.hosttools", "--install")
    else:
        session.log("not root: the lab self-tests need root and will say so (skipped; failed under CI)")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy over the suite's code ([tool.mypy] in pyproject.toml): the seams' Protocols are checked."""
    session.install("-e", ".", "mypy>=1.10", "types-PyYAML", "types-requests", "types-paramiko")
    session.run("mypy")


@nox.session(python=PYTHON, default=False)
def e2e(session: nox.Session) -> None:
    """The conformance suite. Arguments go to pytest, e.g. `nox -s e2e -- --platform lab` (the lab's
    Python packages come with the extra; its host programs and Envoy are installed by the run as root)."""
    install(session, ".[lab]")
    session.run("pytest", "tests/e2e", *session.posargs,
                interrupt_timeout=TEARDOWN_GRACE_S, terminate_timeout=60)


# The recipe and its four exercises at --from, then the upgrade's phases (tests/upgrade).
UPGRADE_TESTS = ("tests/e2e/test_stages.py", "tests/e2e/test_vm_registration.py", "tests/e2e/test_vm_to_mesh.py",
                 "tests/e2e/test_pod_to_vm.py", "tests/e2e/test_productpage_ratings.py", "tests/upgrade")


@nox.session(python=PYTHON, default=False)
def upgrade(session: nox.Session) -> None:
    """An Istio upgrade with the VM in the mesh, e.g. `nox -s upgrade -- --platform lab --from 1.30.3 --to 1.31.1`
    (--from is --istio-version; the settings are e2e's)."""
    install(session, ".[lab]")
    session.run("pytest", *UPGRADE_TESTS, *session.posargs, interrupt_timeout=TEARDOWN_GRACE_S, terminate_timeout=60)


@nox.session(python=PYTHON, default=False)
def mutations(session: nox.Session) -> None:
    """Self-test of the exercises: a clean lab run, then one lab run per broken recipe step (root)."""
    install(session, ".[test]")
    lab_host_tools(session)
    session.run("python", "-m", "tests.mutations.run", *session.posargs,
                interrupt_timeout=TEARDOWN_GRACE_S, terminate_timeout=60)


@nox.session(python=PYTHON, default=False)
def cleanup(session: nox.Session) -> None:
    """The janitor: lists what runs left behind; deletes only with --yes."""
    install(session, ".")
    session.run("python", "-m", "meshvm.janitor", *session.posargs,
                interrupt_timeout=TEARDOWN_GRACE_S, terminate_timeout=60)
