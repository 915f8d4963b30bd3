"""What the API stand-in's requests share with its store: the v1 Status of an error, and label and field
selectors as the API server reads them."""

from __future__ import annotations

import re

_SELECTOR = re.compile(r"\s*(!?)\s*([\w./-]+)\s*(?:(==|=|!=)\s*([\w./-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*(,|$)")


class ApiError(Exception):
    """An API error, rendered as a v1 Status."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        return {**out, "details": self.details} if self.details else out


def matches(selector: str | None, labels: dict) -> bool:
    """Label (or field) selector: k=v, k==v, k!=v, k in (a,b), k notin (a), k, !k."""
    pos, text = 0, (selector or "").strip()
    while pos < len(text):
        m = _SELECTOR.match(text, pos)
        if not m or m.end() == pos:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {text[pos:]!r}")
        neg, key, op, value, setop, values = m.group(1, 2, 3, 4, 5, 6)
        have = labels.get(key)
        if setop:
            wanted = {v.strip() for v in values.split(",")}
            ok = (have in wanted) if setop == "in" else (have not in wanted)
        elif op:
            ok = (have == value) if op in ("=", "==") else (have != value)
        else:
            ok = (key in labels) != bool(neg)
        if not ok:
            return False
        pos = m.end()
    return True
