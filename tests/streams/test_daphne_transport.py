"""Beneath daphne: a slow SSE consumer's connection, once its stream has ended, is dropped
with what it left unread unless its client takes all of it within the grace; a client seen to
have taken it all is not dropped later, also while a next request on the connection is being
answered."""

import asyncio
import functools

from streams.delivery import daphne_transport
from streams.delivery.daphne_transport import drop_unread_later

GRACE = 0.3  # seconds; the checks come every DRAIN_CHECK_SECONDS within it
WAIT = 2.0  # the most any step may take before the test fails


class FakeTransport:
    """The parts of Twisted's tcp.Server that the hub reads and calls."""

    def __init__(self, unread: int) -> None:
        self.connected, self.disconnected = True, False
        self.forgotten = asyncio.Event()  # what it buffered was dropped
        self.dataBuffer, self.offset = b"x" * unread, 0
        self._tempDataBuffer: list[bytes] = []
        self._temp_len = 0
        self.aborted = asyncio.Event()
        self.checked = asyncio.Event()  # the hub read how much is unread

    @property
    def _tempDataLen(self) -> int:  # read last of the three when the hub checks
        self.checked.set()
        return self._temp_len

    @_tempDataLen.setter
    def _tempDataLen(self, length: int) -> None:
        self._temp_len = length

    @property
    def dataBuffer(self) -> bytes:
        return self._data

    @dataBuffer.setter
    def dataBuffer(self, data: bytes) -> None:
        self._data = data
        if not data:
            self.forgotten.set()

    def read_by_client(self) -> None:
        self.offset = len(self.dataBuffer)

    def abortConnection(self) -> None:
        self.connected = False
        self.aborted.set()


def daphne_send(transport: FakeTransport):
    class Protocol:
        pass

    protocol = Protocol()
    protocol.transport = transport  # type: ignore[attr-defined]

    async def handle_reply(protocol, message) -> None:
        pass

    return functools.partial(handle_reply, protocol)


def fast_checks(monkeypatch) -> None:
    monkeypatch.setattr(daphne_transport, "DRAIN_CHECK_SECONDS", 0.02)


async def test_a_connection_whose_client_never_reads_is_dropped_with_its_unread_bytes(
    monkeypatch,
):
    fast_checks(monkeypatch)
    transport = FakeTransport(unread=1 << 20)

    drop_unread_later(daphne_send(transport), GRACE)

    await asyncio.wait_for(transport.aborted.wait(), WAIT)
    assert transport.dataBuffer == b""


async def test_a_client_that_read_everything_keeps_its_connection_for_a_next_request(
    monkeypatch,
):
    fast_checks(monkeypatch)
    transport = FakeTransport(unread=1 << 20)
    loop = asyncio.get_running_loop()
    started = loop.time()
    drop_unread_later(daphne_send(transport), GRACE)

    transport.read_by_client()
    transport.checked.clear()
    await asyncio.wait_for(transport.checked.wait(), WAIT)  # a check sees it all taken
    assert loop.time() - started < GRACE, "checked only at the end of the grace"
    transport.dataBuffer, transport.offset = b"the next response", 0  # not read yet
    await asyncio.sleep(GRACE * 2)  # past the grace: time passing, nothing waited for

    assert not transport.aborted.is_set()
    assert transport.dataBuffer == b"the next response"


async def test_a_client_gone_before_the_grace_ends_leaves_nothing_buffered(monkeypatch):
    fast_checks(monkeypatch)
    transport = FakeTransport(unread=1 << 20)
    drop_unread_later(daphne_send(transport), 60.0)

    transport.connected, transport.disconnected = False, True
    await asyncio.wait_for(transport.forgotten.wait(), WAIT)  # long before the grace ends

    assert not transport.aborted.is_set()
