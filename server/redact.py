"""Keep bearer tokens out of the log, whichever logger writes the line.

Our own lines never hold a token, but libraries' lines can: Tornado logs a malformed header
with its value (``Invalid header value 'Bearer eyJ...\\x0b'``), an exception text may quote a
request. ``install`` puts a filter on the root handlers, so every record that reaches the log,
from any logger, is redacted first: anything after ``Bearer`` and anything shaped like a JWT.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"
# "Bearer" then its value up to a quote or whitespace (a repr'd \x0b stays inside the match).
_BEARER = re.compile(r"(?i)(bearer)((?:\s|\\x[0-9a-f]{2}|%20)*)[^\s'\"]+")
# Three base64url segments (header.claims.signature), padded or not.
_JWT = re.compile(r"[A-Za-z0-9_-]{8,}={0,2}\.[A-Za-z0-9_-]{8,}={0,2}\.[A-Za-z0-9_-]{8,}={0,2}")


def redact(text: str) -> str:
    """``text`` with every token-looking part replaced by ``[redacted]``."""
    if not text:
        return text
    text = _BEARER.sub(lambda m: m.group(1) + (m.group(2) or " ") + REDACTED, text)
    return _JWT.sub(REDACTED, text)


class RedactFilter(logging.Filter):
    """Rewrites a record's message (and its traceback text) before any handler formats it."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: log what there is, redacted
            message = "%s %r" % (record.msg, record.args)
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install(logger: logging.Logger) -> None:
    """Add the filter to every handler of ``logger`` (the root logger: all records reach it)."""
    for handler in logger.handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())
