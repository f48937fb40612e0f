"""Keeping credentials out of logs: subscription tokens and bearer keys.

A subscription token travels in the URL (``?token=...``: an ``EventSource``
or a browser WebSocket cannot send headers), and Tornado logs URLs: in the
access log, and with every uncaught exception. :func:`redact` rewrites such
text; :class:`RedactingFilter` applies it to every log record passing a
handler, message, arguments and traceback alike.

>>> redact("GET /channels?channel=a&%74oken=eyJh.eyJi.c2ln&a=1 (127.0.0.1)")
'GET /channels?channel=a&%74oken=REDACTED&a=1 (127.0.0.1)'
>>> redact("Authorization: Bearer s3cret")
'Authorization: Bearer REDACTED'
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

REDACTED = "REDACTED"

#: Query parameter names whose values are credentials, compared after URL
#: decoding (Tornado reads ``?%74oken=`` as ``token``) and case-folded.
SECRET_PARAMS = frozenset({"token", "access_token", "api_key", "apikey", "key"})

# A query parameter: after ? or &, up to the next &, #, space or quote.
_PARAM = re.compile(r"(?<=[?&])([^=&#\s'\"]*)=([^&#\s'\"]*)")
# A JWT wherever it appears: base64url of '{"' begins every header.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)(\bbearer\s+)[^\s'\",]+")


def _param(match: re.Match[str]) -> str:
    name = match.group(1)
    for _ in range(3):  # %2574oken decodes to %74oken, then to token
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    if name.strip().lower() in SECRET_PARAMS:
        return f"{match.group(1)}={REDACTED}"
    return match.group(0)


def redact(text: str) -> str:
    """``text`` with token and key query values, JWTs and bearer credentials
    replaced by ``REDACTED``.

    >>> redact("uri='/channels/ws?token=abc'")
    "uri='/channels/ws?token=REDACTED'"
    """
    if "=" in text:
        text = _PARAM.sub(_param, text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    return _BEARER.sub(rf"\g<1>{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Rewrite each record with :func:`redact`: the formatted message (the
    arguments merged in), the traceback and the stack. Installed on a
    handler, it sees every record the handler writes, whichever logger
    made it (a filter on a logger sees only that logger's own records)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler's error path
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Add one :class:`RedactingFilter` to every handler of ``logger`` (the
    root logger by default); safe to call again."""
    logger = logger or logging.getLogger()
    found = next(
        (f for h in logger.handlers for f in h.filters if isinstance(f, RedactingFilter)), None
    )
    flt = found or RedactingFilter()
    for handler in logger.handlers:
        if flt not in handler.filters:
            handler.addFilter(flt)
    return flt
