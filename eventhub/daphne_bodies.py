"""Provides the body cap at daphne's HTTP layer: a request body larger than its limit by its
declared length is read from the socket but kept nowhere, so that daphne neither stores nor
queues it; the application then refuses it (413) by that same length. And no body is parsed
as a form by Twisted: only the application reads it.

daphne reads a whole body before the application runs (Twisted writes it to a temporary file,
daphne reads it back into the application's queue) and has no size limit of its own. Before
this, a tenant posting 4 MiB bodies as fast as it could cost the event loop all of that copying
for bodies that were refused anyway (bench/noisy.py). A proxy's `client_max_body_size` refuses
them before daphne does (docs/deployment.md); this holds without one.
"""

import io
import sys

from django.conf import settings

from streams.event_input import body_limit

EVENTS_PATH = b"/api/v1/events"
BATCH_PATH = b"/api/v1/events/batch"


def path_body_limit(path: bytes) -> int | None:
    """The most bytes a request body for `path` (without its query) may have; None: any."""
    if path == EVENTS_PATH:
        return body_limit(batch=False)
    if path == BATCH_PATH:
        return body_limit(batch=True)
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


class DiscardedBody(io.BytesIO):
    """The content file of a request whose body is over its limit: what is written to it is
    dropped, and it reads as empty."""

    def write(self, data) -> int:
        return len(data)


_installed = False


def install() -> None:
    """Called when the ASGI application is imported; under daphne (Twisted), makes each request
    whose declared body is over its path's limit keep none of it."""
    global _installed
    if _installed or "twisted.internet.reactor" not in sys.modules:
        return
    from daphne.http_protocol import WebRequest

    keep_content = WebRequest.gotLength

    def gotLength(self, length):
        # Called by Twisted's HTTPChannel once the headers are in, before any of the body; the
        # request line is still only on the channel then.
        if length is not None:
            path = getattr(self.channel, "_path", b"").split(b"?", 1)[0]
            limit = path_body_limit(path)
            if limit is not None and length > limit:
                self.content = DiscardedBody()
                return
        keep_content(self, length)

    WebRequest.gotLength = gotLength

    make_request = WebRequest.__init__

    def __init__(self, *args, **kwargs):
        # Called by Twisted's HTTPChannel for each request. Twisted parses a POST body sent as
        # a form (multipart or URL-encoded) into `request.args`, on the event loop, before the
        # application runs; daphne never reads `args`, it hands the body itself over. That
        # was a parse of every publish's Content-Type through the email package (5 % of the
        # server's CPU in bench/publish.py) and, for a form body of up to Django's 2.5 MB
        # limit, a stall every tenant felt. `parsePOSTFormSubmission` is Twisted's own switch
        # for it (twisted.web.http.Request).
        kwargs["parsePOSTFormSubmission"] = False
        make_request(self, *args, **kwargs)

    WebRequest.__init__ = __init__
    _installed = True
