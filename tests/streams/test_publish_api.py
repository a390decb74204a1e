"""Publishing through the REST API: POST /api/v1/events and /api/v1/events/batch."""

import json
from datetime import datetime
from unittest.mock import ANY

import httpx
import pytest
from channels.testing import WebsocketCommunicator

from eventhub.asgi import application
from tenants.services import api_key_issue
from tests.conftest import asgi_client
from tests.factories import ACTOR, TenantFactory

pytestmark = pytest.mark.django_db(transaction=True)


async def subscribe(key: str) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(
        application, "/ws/v1/events", headers=[(b"authorization", f"Bearer {key}".encode())]
    )
    connected, _ = await ws.connect()
    assert connected
    assert (await ws.receive_json_from(timeout=2))["type"] == "welcome"
    return ws


async def post(key: str, path: str, body) -> httpx.Response:
    async with asgi_client(key) as client:
        return await client.post(path, json=body)


async def publish(key: str, topic: str = "t", data=None, type_: str | None = None) -> dict:
    body = {"topic": topic, "data": data} | ({"type": type_} if type_ else {})
    response = await post(key, "/api/v1/events", body)
    assert response.status_code == 202, response.content
    return response.json()


# Accepted events ----------------------------------------------------------------------------


async def test_it_answers_202_with_the_accepted_event(api_key):
    response = await post(
        api_key, "/api/v1/events", {"topic": "orders.created", "type": "created", "data": [1]}
    )
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"id", "seq", "topic", "type", "received_at"}
    assert body["seq"] == 1
    assert (body["topic"], body["type"]) == ("orders.created", "created")
    assert isinstance(body["id"], str)
    assert body["id"]
    received_at = datetime.fromisoformat(body["received_at"])
    assert received_at.utcoffset().total_seconds() == 0


async def test_the_type_defaults_to_message(api_key):
    ws = await subscribe(api_key)
    accepted = await publish(api_key, "orders.created", {"id": 1})
    frame = await ws.receive_json_from(timeout=2)
    await ws.disconnect()
    assert accepted["type"] == "message"
    assert frame["event"] == "message"


@pytest.mark.parametrize("data", [None, 0, "text", [1, "two"], {"nested": {"a": [True]}}, "é✓"])
async def test_it_delivers_any_json_data_unchanged(api_key, data):
    ws = await subscribe(api_key)
    await publish(api_key, "t", data)
    frame = await ws.receive_json_from(timeout=2)
    await ws.disconnect()
    assert frame["data"] == data


async def test_seq_increases_by_one_per_event_and_per_tenant(api_key, other_key):
    mine = [(await publish(api_key))["seq"] for _ in range(3)]
    theirs = [(await publish(other_key))["seq"] for _ in range(2)]
    mine.append((await publish(api_key))["seq"])
    assert mine == [1, 2, 3, 4]
    assert theirs == [1, 2]


async def test_every_event_gets_its_own_id(api_key, other_key):
    ids = {(await publish(key))["id"] for key in (api_key, api_key, other_key)}
    assert len(ids) == 3


async def test_a_batch_is_accepted_in_order_with_consecutive_seqs(api_key):
    await publish(api_key)
    events = [{"topic": f"t.{i}", "data": i} for i in range(3)]
    response = await post(api_key, "/api/v1/events/batch", {"events": events})
    assert response.status_code == 202, response.content
    accepted = response.json()["events"]
    assert [e["seq"] for e in accepted] == [2, 3, 4]
    assert [e["topic"] for e in accepted] == ["t.0", "t.1", "t.2"]
    assert all(e["type"] == "message" for e in accepted)


async def test_a_batch_reaches_subscribers_in_order(api_key):
    ws = await subscribe(api_key)
    events = [{"topic": "t", "data": i} for i in range(5)]
    assert (await post(api_key, "/api/v1/events/batch", {"events": events})).status_code == 202
    got = [(await ws.receive_json_from(timeout=2))["data"] for _ in range(5)]
    await ws.disconnect()
    assert got == [0, 1, 2, 3, 4]


# Refused events -----------------------------------------------------------------------------


async def assert_nothing_was_published(key: str, ws: WebsocketCommunicator) -> None:
    """No subscriber saw an event and the tenant's seq did not advance."""
    assert await ws.receive_nothing(timeout=0.1)
    accepted = await publish(key, "probe")
    assert accepted["seq"] == 1
    assert (await ws.receive_json_from(timeout=2))["topic"] == "probe"
    await ws.disconnect()


async def test_a_batch_with_one_invalid_event_publishes_nothing(api_key):
    ws = await subscribe(api_key)
    events = [{"topic": "ok", "data": 1}, {"topic": "", "data": 2}, {"topic": "ok", "data": 3}]
    response = await post(api_key, "/api/v1/events/batch", {"events": events})
    assert response.status_code == 400
    assert response.json()["events"] == {"1": {"topic": [ANY]}}
    await assert_nothing_was_published(api_key, ws)


async def test_a_batch_with_one_event_too_large_publishes_nothing(api_key, settings):
    settings.EVENTHUB_MAX_EVENT_BYTES = 100
    ws = await subscribe(api_key)
    events = [{"topic": "ok", "data": 1}, {"topic": "ok", "data": "x" * 200}]
    response = await post(api_key, "/api/v1/events/batch", {"events": events})
    assert response.status_code == 413
    await assert_nothing_was_published(api_key, ws)


async def test_a_batch_over_the_limit_is_refused(api_key, settings):
    settings.EVENTHUB_MAX_BATCH = 3
    ws = await subscribe(api_key)
    events = [{"topic": "t", "data": i} for i in range(4)]
    response = await post(api_key, "/api/v1/events/batch", {"events": events})
    assert response.status_code == 400
    assert "3" in json.dumps(response.json()["events"])
    await assert_nothing_was_published(api_key, ws)


async def test_a_batch_at_the_limit_is_accepted(api_key, settings):
    settings.EVENTHUB_MAX_BATCH = 3
    events = [{"topic": "t", "data": i} for i in range(3)]
    response = await post(api_key, "/api/v1/events/batch", {"events": events})
    assert response.status_code == 202


@pytest.mark.parametrize("body", [{"events": []}, {"events": "t"}, {}, [], {"events": [1]}])
async def test_a_malformed_batch_is_refused(api_key, body):
    response = await post(api_key, "/api/v1/events/batch", body)
    assert response.status_code == 400
    assert response.json()


async def test_data_over_the_event_limit_is_refused_with_413(api_key, settings):
    settings.EVENTHUB_MAX_EVENT_BYTES = 100
    ws = await subscribe(api_key)
    at_limit = await post(api_key, "/api/v1/events", {"topic": "t", "data": "x" * 98})
    over = await post(api_key, "/api/v1/events", {"topic": "t", "data": "x" * 99})
    assert at_limit.status_code == 202
    assert over.status_code == 413
    assert "100" in over.json()["detail"]
    assert (await ws.receive_json_from(timeout=2))["seq"] == 1
    assert await ws.receive_nothing(timeout=0.1)
    await ws.disconnect()


async def test_a_body_over_the_body_limit_is_refused_with_413(api_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = await post(api_key, "/api/v1/events", {"topic": "t", "data": "x" * 2000})
    assert response.status_code == 413
    assert response.json()["detail"]


async def test_a_body_that_is_not_json_is_refused_with_415(api_key):
    async with asgi_client(api_key) as client:
        response = await client.post(
            "/api/v1/events",
            content=b'{"topic": "t", "data": 1}',
            headers={"Content-Type": "text/plain"},
        )
    assert response.status_code == 415
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"topic": "t", "data": ', id="truncated"),
        pytest.param(b'{"topic": "t", "data": NaN}', id="nan"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"[" * 100_000, id="deep-unclosed"),
        pytest.param(b"[" * 50_000 + b"]" * 50_000, id="deep-closed"),
        pytest.param(
            b'{"topic": "t", "data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", id="deep-data"
        ),
    ],
)
async def test_malformed_json_is_refused_with_400(api_key, content):
    async with asgi_client(api_key) as client:
        response = await client.post(
            "/api/v1/events", content=content, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["detail"]


async def test_data_nested_deeper_than_allowed_is_refused_with_400(api_key, settings):
    data = []
    for _ in range(settings.EVENTHUB_MAX_DATA_DEPTH + 1):
        data = [data]
    response = await post(api_key, "/api/v1/events", {"topic": "t", "data": data})
    assert response.status_code == 400
    assert "data" in response.json()


@pytest.mark.parametrize(
    "topic",
    [
        pytest.param("", id="empty"),
        pytest.param("t" * 201, id="too-long"),
        pytest.param(["t"], id="list"),
        pytest.param(None, id="null"),
        pytest.param("has space", id="space"),
        pytest.param("orders.*", id="pattern"),
        pytest.param("a?b=c", id="punctuation"),
        pytest.param("café", id="non-ascii"),
        pytest.param(42, id="number"),
        pytest.param(" orders", id="leading-space"),
        pytest.param("orders\n", id="trailing-newline"),
    ],
)
async def test_a_bad_topic_is_refused_with_a_field_error(api_key, topic):
    ws = await subscribe(api_key)
    response = await post(api_key, "/api/v1/events", {"topic": topic, "data": 1})
    assert response.status_code == 400
    assert response.json()["topic"]
    await assert_nothing_was_published(api_key, ws)


async def test_a_missing_topic_is_refused_with_a_field_error(api_key):
    response = await post(api_key, "/api/v1/events", {"data": 1})
    assert response.status_code == 400
    assert response.json()["topic"]


async def test_the_longest_topic_is_accepted(api_key):
    assert (await publish(api_key, "t" * 200))["topic"] == "t" * 200


@pytest.mark.parametrize(
    "type_",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 101, id="too-long"),
        pytest.param("has space", id="space"),
        pytest.param("created\ndata: injected", id="newline"),
    ],
)
async def test_a_bad_type_is_refused_with_a_field_error(api_key, type_):
    response = await post(api_key, "/api/v1/events", {"topic": "t", "type": type_, "data": 1})
    assert response.status_code == 400
    assert response.json()["type"]


@pytest.mark.parametrize(
    "raw_data",
    [
        pytest.param(b'"\\ud800 half a character"', id="lone-high-surrogate"),
        pytest.param(b'{"\\udc00": 1}', id="lone-low-surrogate-in-a-key"),
        pytest.param(b'["nul \\u0000 inside"]', id="nul"),
    ],
)
async def test_data_that_cannot_be_logged_as_sent_is_refused_with_400(api_key, raw_data):
    ws = await subscribe(api_key)
    async with asgi_client(api_key) as client:
        response = await client.post(
            "/api/v1/events",
            content=b'{"topic": "t", "data": ' + raw_data + b"}",
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400
    assert response.json()["data"]
    await assert_nothing_was_published(api_key, ws)


async def test_data_with_characters_beyond_the_basic_plane_is_accepted(api_key):
    ws = await subscribe(api_key)
    await publish(api_key, data={"emoji": "\U0001f600", "escaped": "\\ud800 as text"})
    frame = await ws.receive_json_from(timeout=2)
    assert frame["data"] == {"emoji": "\U0001f600", "escaped": "\\ud800 as text"}
    await ws.disconnect()


async def test_missing_data_is_refused_with_a_field_error(api_key):
    response = await post(api_key, "/api/v1/events", {"topic": "t"})
    assert response.status_code == 400
    assert response.json()["data"]


# Rate limit ---------------------------------------------------------------------------------


class FrozenClock:
    """The rate limiter's clock, moved only by the test: no refill happens behind its back."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    frozen = FrozenClock()
    monkeypatch.setattr("streams.ratelimit.time", frozen)
    return frozen


@pytest.fixture
def rate_limited_key(db, clock):
    return api_key_issue(actor=ACTOR, tenant=TenantFactory(publish_rate=2)).secret


async def test_publishing_faster_than_the_rate_is_refused_with_429(rate_limited_key):
    async with asgi_client(rate_limited_key) as client:
        responses = [
            await client.post("/api/v1/events", json={"topic": "t", "data": i}) for i in range(3)
        ]
    assert [r.status_code for r in responses] == [202, 202, 429]
    refused = responses[-1]
    assert int(refused.headers["retry-after"]) >= 1
    assert "rate" in refused.json()["detail"].lower()


async def test_publishing_works_again_after_the_wait(rate_limited_key, clock):
    async with asgi_client(rate_limited_key) as client:
        for i in range(2):
            await client.post("/api/v1/events", json={"topic": "t", "data": i})
        refused = await client.post("/api/v1/events", json={"topic": "t", "data": 2})
        clock.now += int(refused.headers["retry-after"])
        retried = await client.post("/api/v1/events", json={"topic": "t", "data": 2})
    assert refused.status_code == 429
    assert retried.status_code == 202
    assert retried.json()["seq"] == 3


async def test_a_batch_larger_than_the_rate_is_refused_with_429(rate_limited_key):
    ws = await subscribe(rate_limited_key)
    events = [{"topic": "t", "data": i} for i in range(3)]
    response = await post(rate_limited_key, "/api/v1/events/batch", {"events": events})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    await assert_nothing_was_published(rate_limited_key, ws)


async def test_the_rate_limit_of_one_tenant_does_not_slow_another(rate_limited_key, api_key):
    for i in range(2):
        await publish(rate_limited_key, data=i)
    refused = await post(rate_limited_key, "/api/v1/events", {"topic": "t", "data": 2})
    assert refused.status_code == 429
    assert [(await publish(api_key, data=i))["seq"] for i in range(5)] == [1, 2, 3, 4, 5]
