"""The retry policy, the redaction registry and the names derived from a run id."""

from __future__ import annotations

import itertools
import logging
import time

import pytest
import tenacity

from meshvm import redact
from meshvm.deadlines import Deadline
from meshvm.naming import RUN_ID_RE, Names, new_run_id
from meshvm.retry import WaitFailed, until
from meshvm.validate import label_value, rfc1035


def test_until_returns_the_first_truthy_value():
    calls = itertools.count(1)
    assert until("third call", lambda: next(calls) >= 3 and "ok", Deadline.after(5, "t"), initial=0.01) == "ok"


def test_until_retries_transient_errors_only():
    def refused() -> None:
        raise ConnectionRefusedError("refused")

    with pytest.raises(WaitFailed, match=r"sshd: not reached in .*last seen: ConnectionRefusedError: refused"):
        until("sshd", refused, Deadline.after(0.3, "t"), transient=(OSError,), initial=0.01)
    attempts = itertools.count(1)

    def broken() -> None:
        next(attempts)
        raise ValueError("bad manifest")

    with pytest.raises(ValueError, match="bad manifest"):
        until("apply", broken, Deadline.after(5, "t"), transient=(OSError,), initial=0.01)
    assert next(attempts) == 2  # one call: a non-transient error is final at once


def test_until_never_overshoots_its_deadline():
    started = time.monotonic()
    with pytest.raises(WaitFailed, match="last seen: None"):
        until("never", lambda: None, Deadline.after(1.0, "t"), initial=0.2, ceiling=0.5)
    assert time.monotonic() - started < 1.0 + 0.5


def test_until_checks_once_more_at_its_deadline_rather_than_giving_up_early(monkeypatch):
    """A long pause (here: initial 50 s, the jitter at its top) would cross the deadline: the wait
    pauses until the deadline and checks there, instead of giving up at once (seen as a false 'not
    reached in 2.0s' of a 10 s wait)."""
    monkeypatch.setattr(tenacity.wait.random, "uniform", lambda low, high: high)
    ready_at = time.monotonic() + 0.3
    started = time.monotonic()
    assert until("late", lambda: time.monotonic() >= ready_at, Deadline.after(1.5, "t"), initial=50, ceiling=60)
    assert 1.5 <= time.monotonic() - started < 1.5 + 3  # the second check: at the deadline, not after 50 s
    with pytest.raises(WaitFailed, match=r"never: not reached in (1\.[5-9]|[2-4]\.\d)s \(2 attempts\)"):
        until("never", lambda: None, Deadline.after(1.5, "t"), initial=50, ceiling=60)


def test_until_caps_attempts():
    with pytest.raises(WaitFailed, match=r"\(3 attempts\)"):
        until("capped", lambda: 0, Deadline.after(30, "t"), max_attempts=3, initial=0.01)


def test_scrub_masks_whole_secrets_and_each_line_of_a_key(caplog):
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n-----END OPENSSH PRIVATE KEY-----"
    redact.register(key)
    redact.register("eyJhbGciOiJSUzI1NiJ9.payload.sig")
    redact.register("short")  # too short to mask safely: ignored
    try:
        assert redact.scrub(f"key:\n{key}\n") == "key:\n[REDACTED]\n"
        assert "b3BlbnNz" not in redact.scrub("line b3BlbnNzaC1rZXktdjEAAAAABG5vbmU leaked")
        redact.install_log_scrubbing()
        with caplog.at_level(logging.INFO):
            logging.getLogger("t").info("token %s", "eyJhbGciOiJSUzI1NiJ9.payload.sig")
        assert caplog.messages == ["token [REDACTED]"] and "short" in redact.scrub("short")
    finally:
        redact.clear()


def test_run_id_and_every_derived_name_fit_gcp_rules():
    run_id = new_run_id()
    assert RUN_ID_RE.match(run_id) and label_value(run_id) is None
    longest = "a" * 32
    names = Names.derive(longest)
    assert rfc1035(names.cluster, 40) is None
    for name in (names.vm, names.network, names.subnetwork, names.vm_tag, names.firewall("pods-to-vm")):
        assert rfc1035(name) is None, name
    assert all(label_value(v) is None for v in names.labels("20261126t1800z").values())
    assert new_run_id() != new_run_id()
