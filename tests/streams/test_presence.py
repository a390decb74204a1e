"""Presence through the consumers and the API, in-process: the welcome's snapshot, join and
leave frames on both transports, `GET /api/v1/presence`, and tenant isolation."""

import asyncio
import json
from urllib.parse import urlencode

import pytest
from channels.testing import WebsocketCommunicator

from eventhub.asgi import application
from tests.conftest import asgi_client
from tests.streams import test_sse_consumer as sse
from tests.streams.test_token_lifetime import issue

pytestmark = pytest.mark.django_db(transaction=True)

GRACE = 0.3


@pytest.fixture(autouse=True)
def _short_grace(settings):
    settings.EVENTHUB_PRESENCE_GRACE = GRACE


async def token_of(key: str, user: str | None, topics=("room",)) -> str:
    claims = {"user": user, "info": {"name": user.title()}} if user else {}
    return (await issue(key, topics=topics, **claims))["token"]


async def ws_open(token: str, topics: str = "room", presence: bool = True):
    params = {"token": token, "topics": topics}
    if presence:
        params["presence"] = "1"
    ws = WebsocketCommunicator(application, f"/ws/v1/events?{urlencode(params)}")
    connected, _ = await ws.connect()
    assert connected
    welcome = await ws.receive_json_from(timeout=2)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def presence_of(key: str, topic: str = "room") -> dict:
    async with asgi_client(key) as client:
        response = await client.get("/api/v1/presence", params={"topic": topic})
    assert response.status_code == 200, response.content
    return response.json()


# The welcome --------------------------------------------------------------------------------


async def test_the_welcome_lists_who_is_present_on_each_exact_topic(api_key):
    first, _ = await ws_open(await token_of(api_key, "ada"))
    anonymous, _ = await ws_open(await token_of(api_key, None))
    ws, welcome = await ws_open(await token_of(api_key, "bob", ("room", "news.*")), "room,news.*")

    assert set(welcome["presence"]) == {"room"}
    assert sorted(welcome["presence"]["room"], key=lambda u: u["user"]) == [
        {"user": "ada", "info": {"name": "Ada"}},
        {"user": "bob", "info": {"name": "Bob"}},
    ]
    for socket in (first, anonymous, ws):
        await socket.disconnect()


async def test_a_welcome_without_presence_1_has_no_presence(api_key):
    ws, welcome = await ws_open(await token_of(api_key, "ada"), presence=False)

    assert "presence" not in welcome
    await ws.disconnect()


# Frames -------------------------------------------------------------------------------------


async def test_websocket_subscribers_get_join_then_leave_after_the_grace(api_key):
    watcher, _ = await ws_open(await token_of(api_key, "ada"))
    quiet, _ = await ws_open(await token_of(api_key, "cy"), presence=False)
    assert (await watcher.receive_json_from(timeout=2))["user"] == "cy"

    other, _ = await ws_open(await token_of(api_key, "bob"))
    assert await watcher.receive_json_from(timeout=2) == {
        "type": "join",
        "topic": "room",
        "user": "bob",
        "info": {"name": "Bob"},
    }
    await other.disconnect()
    assert await watcher.receive_nothing(GRACE / 2)
    assert await watcher.receive_json_from(timeout=2) == {
        "type": "leave",
        "topic": "room",
        "user": "bob",
    }
    assert await quiet.receive_nothing(0.1), "it did not ask for presence"
    await watcher.disconnect()
    await quiet.disconnect()


async def test_a_reconnect_within_the_grace_sends_neither_leave_nor_join(api_key):
    watcher, _ = await ws_open(await token_of(api_key, "ada"))
    token = await token_of(api_key, "bob")
    other, _ = await ws_open(token)
    assert (await watcher.receive_json_from(timeout=2))["type"] == "join"

    await other.disconnect()
    await asyncio.sleep(GRACE / 3)
    again, _ = await ws_open(token)
    assert await watcher.receive_nothing(GRACE * 2)

    await again.disconnect()
    await watcher.disconnect()


async def test_sse_subscribers_get_join_and_leave_events_without_ids(api_key):
    stream, welcome = await sse.connect(token=await token_of(api_key, "ada"), topics="room",
                                        presence="1")  # fmt: skip
    assert welcome["presence"] == {"room": [{"user": "ada", "info": {"name": "Ada"}}]}

    other, _ = await ws_open(await token_of(api_key, "bob"))
    joined = await stream.next_message()
    assert joined == {
        "event": "join",
        "data": json.dumps(
            {"type": "join", "topic": "room", "user": "bob", "info": {"name": "Bob"}},
            separators=(",", ":"),
        ),
    }
    await other.disconnect()
    left = await stream.next_message()
    assert left["event"] == "leave"
    assert "id" not in left
    assert json.loads(left["data"]) == {"type": "leave", "topic": "room", "user": "bob"}
    await stream.close()


# The API ------------------------------------------------------------------------------------


async def test_the_api_counts_connections_and_lists_each_user_once(api_key):
    token = await token_of(api_key, "ada")
    tabs = [(await ws_open(token))[0] for _ in range(2)]
    stream, _ = await sse.connect(token=token, topics="room")
    anonymous, _ = await ws_open(await token_of(api_key, None), presence=False)

    assert await presence_of(api_key) == {
        "topic": "room",
        "connections": 4,
        "users": [{"user": "ada", "info": {"name": "Ada"}, "connections": 3}],
    }
    assert await presence_of(api_key, "elsewhere") == {
        "topic": "elsewhere",
        "connections": 0,
        "users": [],
    }
    for ws in (*tabs, anonymous):
        await ws.disconnect()
    await stream.close()
    await asyncio.sleep(GRACE * 2)
    assert (await presence_of(api_key))["users"] == []


async def test_the_api_needs_the_history_scope_and_an_exact_topic(api_key, subscribe_only_key):
    async with asgi_client(subscribe_only_key) as client:
        assert (await client.get("/api/v1/presence", params={"topic": "room"})).status_code == 403
    async with asgi_client(api_key) as client:
        assert (await client.get("/api/v1/presence")).status_code == 400
        assert (await client.get("/api/v1/presence", params={"topic": "ro*"})).status_code == 400


# Tenant isolation ---------------------------------------------------------------------------


async def test_another_tenants_presence_never_appears(api_key, other_key):
    mine, _ = await ws_open(await token_of(api_key, "ada"))
    theirs, _ = await ws_open(await token_of(other_key, "mallory"))
    late, welcome = await ws_open(await token_of(api_key, "bob"))

    assert [u["user"] for u in welcome["presence"]["room"]] == ["ada", "bob"]
    assert [u["user"] for u in (await presence_of(api_key))["users"]] == ["ada", "bob"]
    assert [u["user"] for u in (await presence_of(other_key))["users"]] == ["mallory"]
    assert (await mine.receive_json_from(timeout=2))["user"] == "bob"
    assert await theirs.receive_nothing(0.2), "another tenant's join reached it"
    await late.disconnect()
    assert (await mine.receive_json_from(timeout=2))["type"] == "leave"
    assert await theirs.receive_nothing(GRACE * 2)
    await mine.disconnect()
    await theirs.disconnect()
