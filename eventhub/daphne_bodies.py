"""Provides the body cap at daphne's HTTP layer: a request body larger than its limit by its
declared length is read from the socket but kept nowhere, so that daphne neither stores nor
queues it, and at a bounded pace for the whole process; the application then refuses it (413)
by that same length. A body within its limit is handed over as one message. And no
body is parsed as a form by Twisted: only the application reads it.

daphne reads a whole body before the application runs (Twisted writes it to a temporary file,
daphne reads it back into the application's queue) and has no size limit of its own. Before
this, a tenant posting 4 MiB bodies as fast as it could cost the event loop all of that copying
for bodies that were refused anyway (bench/noisy.py). A proxy's `client_max_body_size` refuses
them before daphne does (docs/deployment.md); this holds without one.
"""

import io
import sys
import time
from collections.abc import Callable
from typing import Any

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


MAX_REQUEST_BUFFER_BYTES = 8 * 2**20


def request_buffer_bytes() -> int:
    """The pieces daphne hands a request body over in (`http.request` messages): any body within
    its limit as one.

    daphne's default, 8 KiB, made a 4 MiB batch 512 file reads and messages in one loop turn
    before the application ran, and 512 pieces for the application to join into a fresh copy (a
    third of the server's CPU for such requests, py-spy); daphne queues the whole body at once
    either way, so one piece costs no more memory.
    """
    cap = settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # every path's limit is at most this
    # daphne sends a piece as long as its buffer with more_body, then an empty last one; and
    # a read of a body in Twisted's temporary file allocates the whole buffer first.
    return min(cap if cap is not None else MAX_REQUEST_BUFFER_BYTES, MAX_REQUEST_BUFFER_BYTES) + 1


# What the process reads per second of bodies it refuses, all connections together, and how
# much of it at once: a client that sent one body over its limit by mistake gets its 413 as soon
# as its body is in; clients that keep sending them are read at this pace, not as fast as
# loopback or the network can deliver (bench/noisy.py's three clients sent 1.2 GB/s).
DISCARD_BYTES_PER_SECOND = 32 * 2**20
DISCARD_BURST_BYTES = 8 * 2**20
MAX_DISCARD_WAIT = 1.0  # seconds: the longest a connection is held back for one read


class DiscardBudget:
    """A token bucket of bytes of refused bodies: `charge` says how long a reader should wait."""

    def __init__(self, rate: float, burst: float, now: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.now = rate, burst, now
        self.tokens, self.at = burst, now()

    def charge(self, size: int) -> float:
        """Called for each chunk read of a refused body: the seconds until the budget has paid
        for it (0: at once)."""
        now = self.now()
        # The debt is at most a second's worth: each wait then ends within a second (far inside
        # Twisted's 60 s request timeout), and an attack's debt does not outlast it.
        tokens = min(self.burst, self.tokens + (now - self.at) * self.rate) - size
        self.tokens = max(tokens, -self.rate * MAX_DISCARD_WAIT)
        self.at = now
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


DISCARDS = DiscardBudget(DISCARD_BYTES_PER_SECOND, DISCARD_BURST_BYTES)


class DiscardedBody(io.BytesIO):
    """The content file of a request whose body is over its limit: what is written to it is
    dropped, and it reads as empty. While the process's DISCARDS budget is spent, the
    connection is not read (TCP holds the client back) until the budget has paid for what it
    sent."""

    def __init__(self, length: int = 0, transport: Any = None, budget: DiscardBudget = DISCARDS):
        super().__init__()
        self.remaining, self.transport, self.budget = length, transport, budget
        self.paused = False

    def write(self, data) -> int:
        self.remaining -= len(data)
        wait = self.budget.charge(len(data))
        if wait and self.remaining > 0 and not self.paused and self.transport is not None:
            # Never after the body's last byte: the request then runs, and Twisted pauses and
            # resumes the connection itself while it does.
            self.paused = True
            self.transport.pauseProducing()
            _call_later(wait, self._resume)
        return len(data)

    def _resume(self) -> None:
        self.paused = False
        # Once the body is in (a TLS connection hands over what it decrypted even while
        # paused), the connection is Twisted's to pause and resume; a lost one ignores this.
        if self.remaining > 0:
            self.transport.resumeProducing()


def _call_later(delay: float, call: Callable[[], None]) -> Any:
    from twisted.internet import reactor as installed  # daphne's, installed before it serves

    reactor: Any = installed
    return reactor.callLater(delay, call)


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
                transport = getattr(self.channel, "transport", None)
                if not hasattr(transport, "pauseProducing"):
                    transport = None  # not a TCP connection's: read at the pace it comes
                self.content = DiscardedBody(length, transport)
                return
        keep_content(self, length)

    WebRequest.gotLength = gotLength

    make_request = WebRequest.__init__

    def __init__(self, *args, **kwargs):
        # Called by Twisted's HTTPChannel for each request. Twisted parses a POST body sent as
        # a form (multipart or URL-encoded) into `request.args`, on the event loop, before the
        # application runs; daphne never reads `args`, it hands the body itself over. That
        # was a parse of every publish's Content-Type through the email package (5 % of the
        # server's CPU in bench/publish.py) and, for a form body of up to the 4 MiB other
        # paths take (DATA_UPLOAD_MAX_MEMORY_SIZE), a stall every tenant felt.
        # `parsePOSTFormSubmission` is Twisted's own switch for it (twisted.web.http.Request).
        kwargs["parsePOSTFormSubmission"] = False
        make_request(self, *args, **kwargs)

    WebRequest.__init__ = __init__

    from daphne.server import Server

    make_server = Server.__init__

    def server_init(self, *args, **kwargs):
        # daphne's command line makes its Server after importing the application, and has no
        # option for this.
        kwargs.setdefault("request_buffer_size", request_buffer_bytes())
        make_server(self, *args, **kwargs)

    Server.__init__ = server_init
    _installed = True
