"""Collects setting problems as one line each: `--x / E2E_X: 'value' <what is allowed>`."""

from __future__ import annotations

import re

from meshvm import validate as v
from meshvm.settings import BY_FIELD


class Problems:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, field: str, value: object, reason: str) -> None:
        self.problems.append(f"{BY_FIELD[field].label}: {value!r} {reason}")

    def check(self, field: str, value: object, reason: str | None) -> bool:
        """Records reason if there is one; True when the value is fine."""
        if reason:
            self.add(field, value, reason)
        return reason is None

    def choice(self, field: str, value: str, choices: tuple[str, ...] = ()) -> str:
        allowed = choices or BY_FIELD[field].choices
        self.check(field, value, None if value in allowed else f"is not one of: {', '.join(allowed)}")
        return value

    def name(self, field: str, value: str | None) -> str | None:
        if value:
            self.check(field, value, v.rfc1035(value))
        return value

    def url(self, field: str, value: str | None) -> str | None:
        if value and self.check(field, value, v.url(value)):
            return value.rstrip("/")
        return value

    def pattern(self, field: str, value: str | None, pattern: re.Pattern[str], what: str) -> str:
        if value:
            self.check(field, value, v.matches(pattern, value, what))
        return value or ""

    def integer(self, field: str, value: object, low: int, high: int, shown: str | None = None) -> int:
        n, reason = v.integer(str(value), low, high)
        self.check(field, shown or value, reason)
        return n if n is not None else low
