"""The WebSocket consumer, driven in-process with channels.testing."""

import json
import logging

import pytest
from channels.testing import WebsocketCommunicator

from eventhub.asgi import application
from streams.topics import MAX_PATTERNS
from tests.inprocess import publish

pytestmark = pytest.mark.django_db(transaction=True)


def connect(key: str | None, query: str = "", headers=()):
    hdrs = [(b"authorization", f"Bearer {key}".encode())] if key else []
    return WebsocketCommunicator(
        application, f"/ws/v1/events?{query}", headers=hdrs + list(headers)
    )


async def test_it_welcomes_then_delivers_a_published_event(api_key):
    ws = connect(api_key)
    connected, _ = await ws.connect()
    assert connected
    welcome = await ws.receive_json_from(timeout=2)
    assert welcome["type"] == "welcome"
    assert welcome["recovered"] is False
    accepted = await publish(api_key, "orders.created", {"id": 7}, "created")
    event = await ws.receive_json_from(timeout=2)
    assert event == {
        "type": "event",
        "id": accepted["id"],
        "seq": accepted["seq"],
        "topic": "orders.created",
        "event": "created",
        "data": {"id": 7},
        "ts": accepted["received_at"],
    }
    await ws.disconnect()


async def test_it_delivers_only_topics_that_match(api_key):
    ws = connect(api_key, "topics=orders.*,billing")
    await ws.connect()
    await ws.receive_json_from(timeout=2)
    for topic in ("users.x", "orders.a", "billing.x", "billing"):
        await publish(api_key, topic, topic)
    got = [(await ws.receive_json_from(timeout=2))["topic"] for _ in range(2)]
    assert got == ["orders.a", "billing"]
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()


async def test_it_answers_a_client_ping_with_pong(api_key):
    ws = connect(api_key)
    await ws.connect()
    await ws.receive_json_from(timeout=2)
    await ws.send_to(text_data='{"type": "ping"}')
    assert await ws.receive_json_from(timeout=2) == {"type": "pong"}
    await ws.disconnect()


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("topics=bad%20topic", 4400),
        ("last_event_id=nope", 4400),
        ("topics=a,,b", 4400),
        ("topics=" + ",".join(f"t{i}" for i in range(MAX_PATTERNS + 1)), 4400),
    ],
)
async def test_it_closes_bad_requests_with_4400(api_key, query, code):
    ws = connect(api_key, query)
    connected, _ = await ws.connect()
    assert connected
    error = await ws.receive_json_from(timeout=2)
    assert error["type"] == "error"
    assert error["code"] == code
    closed = await ws.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": code, "reason": error["detail"]}


async def test_a_subscription_of_100_patterns_is_welcomed_and_matches_each(api_key):
    assert MAX_PATTERNS == 100
    ws = connect(api_key, "topics=" + ",".join(f"t{i}.*" for i in range(MAX_PATTERNS)))
    await ws.connect()
    assert (await ws.receive_json_from(timeout=2))["type"] == "welcome"
    await publish(api_key, "t99.x", "last")
    await publish(api_key, "t100.x", "not subscribed")
    await publish(api_key, "t0.x", "first")
    got = [(await ws.receive_json_from(timeout=2))["data"] for _ in range(2)]
    assert got == ["last", "first"]
    await ws.disconnect()


async def test_it_closes_unauthenticated_clients_with_4401():
    ws = connect(None)
    await ws.connect()
    assert (await ws.receive_json_from(timeout=2))["code"] == 4401
    assert (await ws.receive_output(timeout=2))["code"] == 4401


async def test_it_closes_a_key_without_subscribe_scope_with_4403(publish_only_key):
    ws = connect(publish_only_key)
    await ws.connect()
    assert (await ws.receive_json_from(timeout=2))["code"] == 4403


async def test_it_closes_a_client_that_sends_garbage_with_4400(api_key):
    ws = connect(api_key)
    await ws.connect()
    await ws.receive_json_from(timeout=2)
    await ws.send_to(text_data="not json")
    assert (await ws.receive_json_from(timeout=2))["code"] == 4400
    assert (await ws.receive_output(timeout=2))["code"] == 4400


@pytest.mark.parametrize(
    "frame",
    ["x" * 4097, "\u20ac" * 1366, '{"type": "ping", "pad": "' + "x" * 5000 + '"}'],
    ids=["ascii", "multibyte", "json"],
)
async def test_a_frame_over_4096_bytes_closes_with_1009_under_any_server(api_key, frame):
    assert len(frame.encode()) > 4096
    ws = connect(api_key)
    await ws.connect()
    await ws.receive_json_from(timeout=2)
    await ws.send_to(text_data=frame)
    closed = await ws.receive_output(timeout=2)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1009)


async def test_a_frame_of_4096_bytes_is_read(api_key):
    ws = connect(api_key)
    await ws.connect()
    await ws.receive_json_from(timeout=2)
    frame = '{"type": "ping", "pad": "' + "\u20ac" * 1356 + 'x"}'
    assert len(frame.encode()) == 4096
    await ws.send_to(text_data=frame)
    assert await ws.receive_json_from(timeout=2) == {"type": "pong"}
    await ws.disconnect()


async def test_a_tenant_never_sees_another_tenants_events(api_key, other_key):
    mine, theirs = connect(api_key), connect(other_key)
    for ws in (mine, theirs):
        await ws.connect()
        await ws.receive_json_from(timeout=2)
    await publish(other_key, "secret", "theirs")
    await publish(api_key, "secret", "mine")
    assert json.loads(await mine.receive_from(timeout=2))["data"] == "mine"
    assert json.loads(await theirs.receive_from(timeout=2))["data"] == "theirs"
    assert await mine.receive_nothing(timeout=0.2)
    await mine.disconnect()
    await theirs.disconnect()


async def test_a_path_with_a_line_break_is_logged_on_one_line(caplog):
    # A client-controlled string must not forge log lines (issue 11). daphne percent-decodes
    # `/ws/nope%0AFORGED` into the scope's path; the test client's URL parsing would drop the
    # line break, so the path is set in the scope itself.
    ws = WebsocketCommunicator(application, "/ws/nope")
    ws.scope["path"] = "/ws/nope\nFORGED entry"
    with caplog.at_level(logging.INFO, logger="streams.delivery.consumers.not_found"):
        connected, _ = await ws.connect()

    assert not connected
    (record,) = [r for r in caplog.records if "no route" in r.getMessage()]
    assert "\n" not in record.getMessage()
    assert "FORGED entry" in record.getMessage()
