"""A thread midway through reading os.environ when pytest deletes PYTEST_CURRENT_TEST (fixtures/environ.py)."""

import os

import pytest

from fixtures import environ


def reader_midway(monkeypatch: pytest.MonkeyPatch):
    """A reader of os.environ.items() (requests' proxy lookup) that has listed the keys and read one;
    pytest's variable is listed last, so it is still to be read."""
    monkeypatch.delenv(environ.PYTEST_VAR, raising=False)
    monkeypatch.setenv(environ.PYTEST_VAR, "tests/e2e/test_stages.py::test_stage[vm] (call)")
    items = iter(os.environ.items())
    next(items)
    return items


def test_without_the_guard_the_reader_fails(monkeypatch):
    """The hazard is real: this is how the firewall stage failed."""
    items = reader_midway(monkeypatch)
    os.environ.pop(environ.PYTEST_VAR)
    with pytest.raises(KeyError, match=environ.PYTEST_VAR):
        list(items)


def test_with_the_guard_the_reader_finishes_and_sees_it_empty(monkeypatch):
    items = reader_midway(monkeypatch)
    environ.install()
    try:
        os.environ.pop(environ.PYTEST_VAR)
        assert dict(items)[environ.PYTEST_VAR] == ""
    finally:
        environ.uninstall()
    assert environ.PYTEST_VAR not in os.environ, "uninstall ends the run's empty value"


def test_the_guard_deletes_every_other_variable(monkeypatch):
    monkeypatch.setenv("MESHVM_SOME_VAR", "1")
    environ.install()
    try:
        del os.environ["MESHVM_SOME_VAR"]
        assert "MESHVM_SOME_VAR" not in os.environ and os.getenv("MESHVM_SOME_VAR") is None
    finally:
        environ.uninstall()
    assert type(os.environ) is os._Environ
