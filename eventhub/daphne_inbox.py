"""Provides the queue daphne gives each connection's application as its `receive`: the same
first-in first-out hand-over from the protocol to the application, at a tenth of the memory.

daphne makes one `asyncio.Queue` per connection (`Server.create_application`,
https://github.com/django/daphne/blob/main/daphne/server.py) and holds it for the connection's
life. An asyncio.Queue is an instance dict, three deques and an `asyncio.Event` with a deque of
its own: 3.3 KB (tracemalloc over 1000 queues), a sixth of what an idle WebSocket connection
cost the hub. daphne's protocols only call `put_nowait`, the application only awaits `get`;
an `Inbox` does those two in slots, and holds a deque only while messages wait and a list only
while a reader does.
"""

import asyncio
import sys
from collections import deque
from functools import partial
from typing import Any


class Inbox:
    """A connection's messages from daphne to its application, in the order daphne put them."""

    __slots__ = ("_messages", "_readers")

    def __init__(self) -> None:
        self._messages: deque | None = None  # only while messages wait
        self._readers: list[asyncio.Future] | None = None  # only while a reader waits

    def put_nowait(self, message: dict) -> None:
        """Called by daphne's protocols, on the event loop, for each message of the connection."""
        if self._messages is None:
            self._messages = deque()
        self._messages.append(message)
        self._wake_reader()

    async def get(self) -> dict:
        """The application's `receive`: the oldest waiting message, once there is one."""
        while self._messages is None:
            reader = asyncio.get_running_loop().create_future()
            if self._readers is None:
                self._readers = [reader]
            else:
                self._readers.append(reader)
            try:
                await reader
            except BaseException:
                reader.cancel()
                if self._readers is not None and reader in self._readers:
                    self._readers.remove(reader)
                    if not self._readers:
                        self._readers = None
                elif self._messages is not None:
                    # Woken for a message, then cancelled before it ran: the message is still
                    # here, so the wake-up goes to the next reader, as asyncio.Queue does.
                    self._wake_reader()
                raise
        message = self._messages.popleft()
        if not self._messages:
            self._messages = None
        return message

    def _wake_reader(self) -> None:
        readers = self._readers
        while readers:
            reader = readers.pop(0)
            if not reader.done():
                reader.set_result(None)
                break
        if not readers:
            self._readers = None


_installed = False


def install() -> None:
    """Called once when the ASGI application is imported; under daphne (Twisted), makes its
    server give each new connection's application an `Inbox`. Does nothing under another
    server."""
    global _installed
    if _installed or "twisted.internet.reactor" not in sys.modules:
        return
    # Imported only now: under another server there is no Twisted reactor to import it with.
    from daphne.server import Server

    def create_application(self: Any, protocol: Any, scope: dict) -> Inbox | None:
        # daphne 4.2's Server.create_application, with an Inbox for its asyncio.Queue.
        assert "application_instance" not in self.connections[protocol]
        inbox = Inbox()
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope, receive=inbox.get, send=partial(self.handle_reply, protocol)
        )
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            application_instance, loop=asyncio.get_event_loop()
        )
        return inbox

    Server.create_application = create_application
    _installed = True
