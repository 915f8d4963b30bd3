"""Monotonic deadlines, in seconds. Nested: per call < per wait < per stage < session < CI step."""

from __future__ import annotations

import time
from dataclasses import dataclass


class DeadlineExceeded(TimeoutError):
    pass


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() value
    what: str

    @classmethod
    def after(cls, seconds: float, what: str) -> Deadline:
        return cls(time.monotonic() + seconds, what)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def cap(self, seconds: float) -> float:
        """A call timeout that never outlives this deadline (at least a sliver, so calls fail fast)."""
        return max(0.05, min(seconds, self.remaining()))

    def check(self) -> None:
        if self.expired():
            raise DeadlineExceeded(f"deadline passed: {self.what}")
