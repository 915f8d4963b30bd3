"""The redaction registry: secrets the run holds never reach a log line or a report.

A secret is registered the moment it exists (a token read, a key generated). Every log record is
scrubbed when it is created (so every handler, pytest's included, sees the clean text), and every
report writer passes its text through `scrub`.
"""

from __future__ import annotations

import logging
import threading

MASK = "[REDACTED]"
_MIN_LEN = 8  # shorter strings would mask ordinary words
_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def register(secret: str | bytes | None) -> None:
    if not secret:
        return
    text = secret.decode(errors="replace") if isinstance(secret, bytes) else secret
    with _lock:
        for part in (text, text.strip(), *text.strip().splitlines()):
            if len(part.strip()) >= _MIN_LEN:
                _secrets.add(part.strip())


def scrub(text: str) -> str:
    with _lock:
        ordered = sorted(_secrets, key=len, reverse=True)  # whole secret before its lines
    for s in ordered:
        if s in text:
            text = text.replace(s, MASK)
    return text


def clear() -> None:
    with _lock:
        _secrets.clear()


def install_log_scrubbing() -> None:
    """Wrap the record factory once: message and arguments are rendered and scrubbed at creation."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _secrets:
            record.msg, record.args = scrub(record.getMessage()), None
            if record.exc_info:  # formatters reuse exc_text: render the traceback once, scrubbed
                record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
