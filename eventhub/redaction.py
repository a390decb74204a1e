"""Provides redaction of credentials in daphne's access log: an SSE or WebSocket URL may carry
`token=` (browsers cannot send headers), and that must never reach a log file.

daphne logs the whole path with its query string and offers no hook to filter it, so its
AccessLogGenerator is subclassed (https://github.com/django/daphne/blob/main/daphne/access.py)."""

import re

from daphne.access import AccessLogGenerator

_SECRET_PARAMS = re.compile(r"(?i)([?&](?:token|api_key|key)=)[^&\s]*")


def redact(text: str) -> str:
    return _SECRET_PARAMS.sub(r"\1[redacted]", text)


def install() -> None:
    """Wraps daphne's access logger, which writes the full request URI. daphne offers no hook
    for this (its CLI builds the logger itself), so the class is wrapped once, at import of the
    ASGI application, before the server logs anything."""
    if getattr(AccessLogGenerator, "_eventhub_redacting", False):
        return
    original = AccessLogGenerator.__call__

    def __call__(self, protocol, action, details):
        if isinstance(details.get("path"), str):
            details = dict(details, path=redact(details["path"]))
        return original(self, protocol, action, details)

    AccessLogGenerator.__call__ = __call__
    AccessLogGenerator._eventhub_redacting = True
