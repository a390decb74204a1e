"""daphne hands each connection's messages to its application through an Inbox: in order, a
reader waits until one comes, and a cancelled reader loses nothing."""

import asyncio
import sys
import tracemalloc

import pytest
from daphne.server import Server

from eventhub import daphne_inbox
from eventhub.daphne_inbox import Inbox

WAIT = 2.0  # seconds any step may take before the test fails


async def test_messages_reach_the_application_in_the_order_daphne_put_them():
    inbox = Inbox()
    for n in range(5):
        inbox.put_nowait({"type": "websocket.receive", "text": str(n)})

    received = [await asyncio.wait_for(inbox.get(), WAIT) for _ in range(5)]

    assert [m["text"] for m in received] == ["0", "1", "2", "3", "4"]


async def test_a_reader_waits_until_a_message_comes():
    inbox = Inbox()
    reading = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)  # let the reader start waiting
    assert not reading.done()

    inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})

    assert await asyncio.wait_for(reading, WAIT) == {"type": "websocket.disconnect", "code": 1000}


async def test_two_readers_each_get_one_message():
    inbox = Inbox()
    first, second = asyncio.ensure_future(inbox.get()), asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)

    inbox.put_nowait({"n": 1})
    inbox.put_nowait({"n": 2})

    got = await asyncio.wait_for(asyncio.gather(first, second), WAIT)
    assert sorted(m["n"] for m in got) == [1, 2]


async def test_a_reader_cancelled_while_waiting_takes_no_message_with_it():
    inbox = Inbox()
    cancelled = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled

    inbox.put_nowait({"type": "http.disconnect"})

    assert await asyncio.wait_for(inbox.get(), WAIT) == {"type": "http.disconnect"}


async def test_a_reader_cancelled_after_its_wake_up_passes_the_message_on():
    inbox = Inbox()
    woken, next_reader = asyncio.ensure_future(inbox.get()), asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)

    inbox.put_nowait({"type": "http.request"})  # wakes the first reader …
    woken.cancel()  # … which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await woken

    assert await asyncio.wait_for(next_reader, WAIT) == {"type": "http.request"}


async def test_an_idle_inbox_holds_a_tenth_of_what_an_asyncio_queue_does():
    async def bytes_each(make) -> float:
        """Memory held by 200 queues that each passed one message on, per queue."""
        connect = {"type": "websocket.connect"}
        already = tracemalloc.is_tracing()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            held = [make() for _ in range(200)]
            for queue in held:
                queue.put_nowait(connect)
                assert await asyncio.wait_for(queue.get(), WAIT) is connect
            return (tracemalloc.get_traced_memory()[0] - before) / len(held)
        finally:
            if not already:
                tracemalloc.stop()

    assert await bytes_each(Inbox) * 10 <= await bytes_each(asyncio.Queue)


async def test_daphnes_server_gives_each_application_an_inbox_as_its_receive(monkeypatch):
    monkeypatch.setattr(Server, "create_application", Server.create_application)
    monkeypatch.setitem(sys.modules, "twisted.internet.reactor", object())  # as under daphne
    monkeypatch.setattr(daphne_inbox, "_installed", False)
    daphne_inbox.install()
    received = []

    async def application(scope, receive, send):
        received.append((scope["asgi"], await receive()))

    server = Server.__new__(Server)  # only what create_application reads
    server.application = application
    protocol = object()
    server.connections = {protocol: {}}

    inbox = server.create_application(protocol, {"type": "websocket"})
    assert isinstance(inbox, Inbox)
    inbox.put_nowait({"type": "websocket.connect"})
    await asyncio.wait_for(server.connections[protocol]["application_instance"], WAIT)

    assert received == [({"version": "3.0"}, {"type": "websocket.connect"})]


def test_an_empty_inbox_counts_as_there_for_daphne():
    # daphne's HTTP protocol sends `http.disconnect` only `if self.application_queue:`.
    assert Inbox()
