"""Client frames are bounded (contract v2): one over 4096 bytes closes the WebSocket with 1009,
through daphne, before the server reads it whole; frames up to the limit are read as before."""

import json
import struct

import pytest

from tests.e2e.conftest import publish

pytestmark = pytest.mark.e2e

LIMIT = 4096
MESSAGE_TOO_BIG = 1009


def ping_of(size: int) -> str:
    """A client ping frame padded to exactly `size` bytes of JSON."""
    empty = json.dumps({"type": "ping", "pad": ""})
    frame = json.dumps({"type": "ping", "pad": "x" * (size - len(empty))})
    assert len(frame.encode()) == size
    return frame


async def test_a_text_frame_over_4096_bytes_closes_the_websocket_with_1009(
    hub, tenant, subscribers
):
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()
    await ws.connection.send("x" * 5000)
    assert await ws.closed() == MESSAGE_TOO_BIG


async def test_a_json_frame_of_exactly_4096_bytes_is_read(hub, tenant, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()
    await ws.connection.send(ping_of(LIMIT))
    assert await ws.next_frame() == {"type": "pong"}
    assert ws.open


async def test_a_frame_one_byte_over_the_limit_closes_with_1009(hub, tenant, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()
    await ws.connection.send(ping_of(LIMIT + 1))
    assert await ws.closed() == MESSAGE_TOO_BIG


async def test_an_oversized_frame_is_refused_before_its_payload_arrives(hub, tenant, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()
    # A masked text frame header announcing 5000 bytes (a zero mask leaves the payload as is),
    # then only 100 of them: the server answers from the header alone.
    header = struct.pack("!BBH", 0x81, 0x80 | 126, 5000) + bytes(4)
    ws.connection.transport.write(header + b"x" * 100)
    assert await ws.closed() == MESSAGE_TOO_BIG


async def test_a_message_sent_in_small_fragments_counts_whole(hub, tenant, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()
    # Three frames of 2000 bytes: each under the limit, the message over it.
    await ws.connection.send(iter(["x" * 2000] * 3))
    assert await ws.closed() == MESSAGE_TOO_BIG


async def test_a_binary_frame_over_4096_bytes_closes_with_1009(hub, tenant, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()
    await ws.connection.send(b"\0" * 5000)
    assert await ws.closed() == MESSAGE_TOO_BIG


async def test_a_closed_oversized_sender_does_not_disturb_the_others(hub, tenant, api, subscribers):
    quiet = await subscribers.ws(hub, tenant.key)
    await quiet.welcome()
    loud = await subscribers.ws(hub, tenant.key)
    await loud.welcome()
    await loud.connection.send("x" * 100_000)
    assert await loud.closed() == MESSAGE_TOO_BIG
    accepted = await publish(api, hub, tenant.key, "after", "still here")
    (event,) = await quiet.events(1)
    assert event["id"] == accepted["id"]
