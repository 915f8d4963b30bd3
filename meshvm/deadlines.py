"""Monotonic deadlines, in seconds. Nested: per call < per wait < per stage < session < CI step."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class DeadlineExceeded(TimeoutError):
    pass


class Stopped(BaseException):  # noqa: N818  # like KeyboardInterrupt: not an error of the work it stops
    """The run stops this thread's stage (another stage failed, or an interrupt): raised at its next
    deadline check or retry attempt (meshvm.stagegraph)."""


_local = threading.local()


@contextmanager
def stopping_on(event: threading.Event, why: Callable[[], str]) -> Iterator[None]:
    """In this thread, every deadline check raises Stopped once `event` is set."""
    _local.stop = (event, why)
    try:
        yield
    finally:
        _local.stop = None


def check_stop() -> None:
    stop = getattr(_local, "stop", None)
    if stop is not None and stop[0].is_set():
        raise Stopped(stop[1]())


def pause(seconds: float) -> None:
    """A retry's pause between attempts: cut short (raising Stopped) when this thread's stage is stopped."""
    stop = getattr(_local, "stop", None)
    if stop is None:
        time.sleep(seconds)
        return
    stop[0].wait(seconds)
    check_stop()


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() value
    what: str

    @classmethod
    def after(cls, seconds: float, what: str) -> Deadline:
        return cls(time.monotonic() + seconds, what)

    def remaining(self) -> float:
        check_stop()
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        check_stop()
        return time.monotonic() >= self.at

    def cap(self, seconds: float) -> float:
        """A call timeout that never outlives this deadline (at least a sliver, so calls fail fast)."""
        return max(0.05, min(seconds, self.remaining()))

    def check(self) -> None:
        if self.expired():
            raise DeadlineExceeded(f"deadline passed: {self.what}")
