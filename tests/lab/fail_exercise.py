"""A pytest plugin for self-tests (`-p tests.lab.fail_exercise`): the exercises whose module names are
in MESHVM_SELFTEST_FAIL (comma-separated, e.g. test_vm_to_mesh) fail at once, so a self-test gets a
failed exercise quickly and at a chosen point."""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    doomed = {m.strip() for m in os.environ.get("MESHVM_SELFTEST_FAIL", "").split(",") if m.strip()}
    if item.path.stem in doomed:
        pytest.fail(f"self-test: exercise {item.path.stem} failed on purpose (MESHVM_SELFTEST_FAIL)", pytrace=False)
