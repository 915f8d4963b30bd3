"""The suite's retry policies. Only transient conditions are retried; each adapter says which.

Every policy has a deadline AND an attempt cap, capped exponential jitter whose pauses never cross
the deadline (the last one ends there, then one last check: a wait never gives up early because its
next pause would cross it), logs each retry, and ends with an error saying what was awaited, for how long,
and what was last seen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

from meshvm import deadlines
from meshvm.deadlines import Deadline
from meshvm.seams import TransientError

log = logging.getLogger(__name__)
T = TypeVar("T")
_listeners: list[Callable[[str], None]] = []


class WaitFailed(TimeoutError):
    """A wait ran out: names what was expected, how long it waited, what was last seen."""


def on_retry(listener: Callable[[str], None]) -> None:
    """Register a listener told about every retry (the stage book counts them for phases.json)."""
    _listeners.append(listener)


def _notify(what: str, state: tenacity.RetryCallState) -> None:
    outcome = state.outcome
    seen = outcome.exception() if outcome and outcome.failed else (outcome.result() if outcome else None)
    log.debug("waiting for %s: attempt %d, %.1fs so far, last seen: %s",
             what, state.attempt_number, state.seconds_since_start or 0.0, _short(seen))
    for listener in _listeners:
        listener(what)


def _short(value: object, limit: int = 300) -> str:
    text = repr(value) if not isinstance(value, BaseException) else f"{type(value).__name__}: {value}"
    return text if len(text) <= limit else text[:limit] + "..."


def until(what: str, check: Callable[[], T], deadline: Deadline, *,
          transient: tuple[type[BaseException], ...] = (), accept: Callable[[T], bool] = bool,
          max_attempts: int = 1000, initial: float = 0.5, ceiling: float = 10.0) -> T:
    """Call `check` until `accept` likes what it returns, retrying the `transient` errors it raises and
    always a seam's TransientError (an answer that says try again: 429, 5xx, a dropped connection).

    Anything else it raises is final at once. Returns the accepted value; on timeout the error
    shows the last value (or error) seen.
    """
    backoff = tenacity.wait_random_exponential(multiplier=initial, max=ceiling)
    retrying = tenacity.Retrying(
        stop=lambda state: deadline.expired() or state.attempt_number >= max_attempts,
        wait=lambda state: min(backoff(state), deadline.remaining()),
        retry=tenacity.retry_if_exception_type((TransientError, *transient)) | tenacity.retry_if_result(
            lambda r: not accept(r)),
        before_sleep=lambda state: _notify(what, state),
        sleep=deadlines.pause,
        reraise=False,
    )
    start = time.monotonic()

    def attempt() -> T:
        deadlines.check_stop()  # a stopped stage ends at its next attempt (meshvm.stagegraph)
        return check()
    try:
        return retrying(attempt)
    except tenacity.RetryError as e:
        last = e.last_attempt
        seen = last.exception() if last.failed else last.result()
        raise WaitFailed(f"{what}: not reached in {time.monotonic() - start:.1f}s "
                         f"({last.attempt_number} attempts); last seen: {_short(seen)}") from None
