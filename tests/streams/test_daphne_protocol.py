"""daphne's WebSocket connections come from the hub's protocol class: daphne's options held once
on the class, the hub's frame limit over daphne's, and nothing of the HTTP upgrade kept."""

import sys

import pytest
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet.testing import StringTransport
from twisted.web.http import HTTPChannel

from streams.delivery import daphne_protocol
from streams.delivery.daphne_protocol import MAX_CLIENT_FRAME_BYTES


class FakeServer:
    def protocol_connected(self, protocol) -> None:
        pass


@pytest.fixture
def factory(monkeypatch):
    """daphne's WebSocket factory as its server configures it, with the hub's class installed."""
    monkeypatch.setattr(WebSocketFactory, "protocol", WebSocketFactory.protocol)
    monkeypatch.setattr(WebSocketFactory, "setProtocolOptions", WebSocketFactory.setProtocolOptions)
    monkeypatch.setitem(sys.modules, "twisted.internet.reactor", object())  # as under daphne
    monkeypatch.setattr(daphne_protocol, "_installed", False)
    daphne_protocol.install()
    factory = WebSocketFactory(FakeServer(), server="Daphne")
    factory.setProtocolOptions(  # as daphne.server.Server.run does, with non-default values
        autoPingTimeout=7, allowNullOrigin=True, openHandshakeTimeout=3, maxFramePayloadSize=2**20
    )
    return factory


def connected(factory, producer=None) -> WebSocketProtocol:
    """A protocol as daphne makes it when it hands over an upgraded HTTP connection."""
    transport = StringTransport()
    if producer is not None:
        transport.registerProducer(producer, True)
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(transport)
    return protocol


def test_each_connection_reads_daphnes_options_from_its_class_not_a_copy_of_its_own(factory):
    protocol = connected(factory)

    assert isinstance(protocol, WebSocketProtocol)
    assert (protocol.autoPingTimeout, protocol.openHandshakeTimeout) == (7, 3)
    assert not set(WebSocketProtocol.CONFIG_ATTRS) & set(vars(protocol))
    # A function option is called as one, not as a method of the protocol.
    assert protocol.perMessageCompressionAccept([]) == factory.perMessageCompressionAccept([])


def test_the_hubs_frame_limit_and_close_frames_win_over_daphnes_options(factory):
    protocol = connected(factory)

    assert protocol.maxFramePayloadSize == MAX_CLIENT_FRAME_BYTES
    assert protocol.failByDrop is False


def test_the_http_channel_that_read_the_upgrade_is_no_longer_the_transports_producer(factory):
    protocol = connected(factory, producer=HTTPChannel())

    assert protocol.transport.producer is None


def test_another_producer_of_the_transport_is_left_alone(factory):
    other = object()
    protocol = connected(factory, producer=other)

    assert protocol.transport.producer is other
