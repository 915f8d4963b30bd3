"""Self-test sessions (never an e2e run, whose tests also live under tests/) reach nothing outside
this machine and leave nothing of theirs behind:
- Istio's release listing is the lab's local stand-in for every run they start (a minor
  --istio-version, the default, is resolved from it), and a gcp-path run they start without naming
  IAM's and Resource Manager's endpoints reads its policies from a closed local port (the preflight
  warns that it could not), never from Google;
- the outermost self-test session fails if it leaves new entries of the suite's own under the
  temporary directory (secret dirs, discovery caches, stub API keys) whose owner is gone."""

from __future__ import annotations

import gc
import os
import tempfile
from pathlib import Path

import pytest

from fixtures.plugin import is_e2e_run
from meshvm import secretdir
from meshvm.config import LAB_RELEASE_LISTING

DEFAULTS = {"E2E_ISTIO_RELEASE_LISTING": LAB_RELEASE_LISTING, "E2E_IAM_ENDPOINT": "http://127.0.0.1:9",
            "E2E_RESOURCEMANAGER_ENDPOINT": "http://127.0.0.1:9"}
KEPT = tuple(DEFAULTS)  # the E2E_* variables the runs that self-tests start keep
OURS = ("meshvm-", "stubapi-")
OUTERMOST = "MESHVM_SELFTEST_TMP_CHECK"
_before: set[str] | None = None
# The longest lab modules first, then the other lab, contract and unit tests (pytest-xdist hands out
# modules in collection order; short ones last fill the workers' ends instead of one long test alone).
LONGEST_FIRST = ("tests/lab/test_reuse.py", "tests/lab/test_concurrent_runs.py", "tests/lab/test_fail_at.py",
                 "tests/lab/test_signals.py", "tests/lab/test_diagnostics.py", "tests/lab/test_e2e_infra.py",
                 "tests/lab/test_registration_standin.py", "tests/contract/test_gcp_loadbalancers.py")
AFTER_THEM = ("tests/lab/", "tests/contract/", "tests/unit/")


def _ours() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(OURS)}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    global _before
    if is_e2e_run(config):
        return  # a conformance run (a user's, or one a self-test started): nothing of this applies
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if OUTERMOST not in os.environ:  # the self-test sessions this one starts inherit the marker
        os.environ[OUTERMOST] = "1"
        _before = _ours()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest first (a stable sort: each module's tests keep their order)."""
    if is_e2e_run(config):
        return

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        if path in LONGEST_FIRST:
            return LONGEST_FIRST.index(path)
        return len(LONGEST_FIRST) + next((i for i, d in enumerate(AFTER_THEM) if path.startswith(d)), len(AFTER_THEM))

    items.sort(key=rank)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _before is None:
        return
    gc.collect()  # clients that were never closed remove their own folders when collected
    base = Path(tempfile.gettempdir())
    left = sorted(n for n in _ours() - _before  # a secret dir whose run still lives is that run's
                  if not ((base / n / secretdir.OWNER_LOCK).exists() and secretdir.owner_alive(base / n)))
    if left:
        print(f"\nself-tests left under {base}: {', '.join(left)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
