"""The Server-Sent Events consumer, driven in-process with an ApplicationCommunicator."""

import json
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator, WebsocketCommunicator

from eventhub.asgi import application
from streams.topics import MAX_PATTERNS
from tenants.services import api_key_issue, api_key_revoke, tenant_set_active
from tests.conftest import asgi_client
from tests.factories import ACTOR, TenantFactory
from tests.inprocess import publish, publish_batch

pytestmark = pytest.mark.django_db(transaction=True)


class SseStream:
    """One EventSource-like request: the response start, then the body as parsed messages."""

    def __init__(self, key: str | None = None, headers=(), **params: str) -> None:
        hdrs = [(b"authorization", f"Bearer {key}".encode())] if key else []
        hdrs += [(name.lower().encode(), value.encode()) for name, value in headers]
        query = urlencode(params).encode()
        self.communicator = ApplicationCommunicator(
            application,
            {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": "/sse/v1/events",
                "raw_path": b"/sse/v1/events",
                "query_string": query,
                "root_path": "",
                "headers": [(b"host", b"testserver"), (b"accept", b"text/event-stream"), *hdrs],
                "client": ("127.0.0.1", 50000),
                "server": ("testserver", 80),
            },
        )
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.raw = b""
        self._pending = ""
        self.ended = False

    async def open(self) -> int:
        """Sends the request and reads the response start; returns the status."""
        await self.communicator.send_input({"type": "http.request", "body": b""})
        start = await self.communicator.receive_output(timeout=2)
        assert start["type"] == "http.response.start"
        self.status = start["status"]
        self.headers = dict(start["headers"])
        return self.status

    async def read_body(self) -> bytes:
        """The next body chunk (a refusal comes as one chunk that ends the response)."""
        message = await self.communicator.receive_output(timeout=2)
        assert message["type"] == "http.response.body"
        self.ended = not message.get("more_body", False)
        self.raw += message["body"]
        self._pending += message["body"].decode()
        return message["body"]

    async def next_message(self) -> dict[str, str]:
        """The next SSE message (fields of one block), comments skipped."""
        while True:
            if "\n\n" in self._pending:
                block, self._pending = self._pending.split("\n\n", 1)
                fields = {}
                for line in block.split("\n"):
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    # As EventSource does: several data lines make one value.
                    fields[name] = f"{fields[name]}\n{value}" if name in fields else value
                if fields:
                    return fields
                continue
            await self.read_body()

    async def events(self, count: int) -> list[dict]:
        got = []
        while len(got) < count:
            message = await self.next_message()
            if message.get("event") != "welcome":
                got.append(message)
        return got

    async def nothing_more(self, within: float = 0.2) -> bool:
        return "\n\n" not in self._pending and await self.communicator.receive_nothing(within)

    async def close(self) -> None:
        """The client goes away; waits (bounded) for the consumer to finish."""
        if not self.communicator.future.done():
            await self.communicator.send_input({"type": "http.disconnect"})
        await self.communicator.wait(timeout=2)


async def connect(key: str | None = None, headers=(), **params: str) -> tuple[SseStream, dict]:
    """An open stream and its welcome."""
    stream = SseStream(key, headers, **params)
    assert await stream.open() == 200
    assert await stream.next_message() == {"retry": "3000"}
    welcome = await stream.next_message()
    assert welcome["event"] == "welcome"
    return stream, json.loads(welcome["data"])


async def refusal(key: str | None = None, headers=(), **params: str) -> SseStream:
    """A request the consumer refuses: its status, headers and JSON body are read."""
    stream = SseStream(key, headers, **params)
    await stream.open()
    await stream.read_body()
    assert stream.ended
    await stream.close()
    return stream


async def sse_connections(key: str) -> int:
    async with asgi_client(key) as client:
        return (await client.get("/api/v1/stats")).json()["connections"]["sse"]


# The stream ---------------------------------------------------------------------------------


async def test_it_opens_an_event_stream_with_headers_that_stop_buffering(api_key):
    stream = SseStream(api_key)
    assert await stream.open() == 200
    assert stream.headers[b"content-type"].startswith(b"text/event-stream")
    assert stream.headers[b"cache-control"] == b"no-cache, no-transform"
    assert stream.headers[b"x-accel-buffering"] == b"no"
    await stream.close()


async def test_it_starts_with_a_retry_then_the_welcome(api_key):
    stream = SseStream(api_key)
    await stream.open()
    await stream.read_body()
    assert stream.raw.startswith(b"retry: 3000\n")
    assert await stream.next_message() == {"retry": "3000"}
    welcome = await stream.next_message()
    assert welcome["event"] == "welcome"
    payload = json.loads(welcome["data"])
    assert payload["type"] == "welcome"
    assert payload["recovered"] is False
    assert payload["connection_id"]
    assert payload["heartbeat"] > 0
    await stream.close()


async def test_it_delivers_a_published_event_as_id_event_and_data_lines(api_key):
    stream, _ = await connect(api_key)
    accepted = await publish(api_key, "orders.created", {"id": 7}, "created")
    (message,) = await stream.events(1)
    assert message["id"] == accepted["id"]
    assert message["event"] == "created"
    assert json.loads(message["data"]) == {
        "type": "event",
        "id": accepted["id"],
        "seq": accepted["seq"],
        "topic": "orders.created",
        "event": "created",
        "data": {"id": 7},
        "ts": accepted["received_at"],
    }
    assert await stream.nothing_more()
    await stream.close()


async def test_an_event_carries_the_same_json_as_on_the_websocket(api_key):
    stream, _ = await connect(api_key)
    ws = WebsocketCommunicator(
        application, "/ws/v1/events", headers=[(b"authorization", f"Bearer {api_key}".encode())]
    )
    await ws.connect()
    await ws.receive_json_from(timeout=2)
    await publish(api_key, "t", {"text": "line one\nline two", "n": [1.5, None, True]})
    frame = await ws.receive_from(timeout=2)
    (message,) = await stream.events(1)
    await ws.disconnect()
    await stream.close()
    assert message["data"] == frame
    assert "\n" not in message["data"]


async def test_it_delivers_only_topics_that_match(api_key):
    stream, _ = await connect(api_key, topics="orders.*,billing")
    await publish_batch(
        api_key, [{"topic": t, "data": t} for t in ("users.x", "orders.a", "billing.x", "billing")]
    )
    got = [json.loads(m["data"])["topic"] for m in await stream.events(2)]
    assert got == ["orders.a", "billing"]
    assert await stream.nothing_more()
    await stream.close()


async def test_a_tenant_never_sees_another_tenants_events(api_key, other_key):
    stream, _ = await connect(api_key)
    await publish(other_key, "secret", "theirs")
    await publish(api_key, "secret", "mine")
    (message,) = await stream.events(1)
    assert json.loads(message["data"])["data"] == "mine"
    assert await stream.nothing_more()
    await stream.close()


async def test_a_subscriber_token_opens_the_stream(api_key):
    async with asgi_client(api_key) as client:
        token = (await client.post("/api/v1/tokens", json={"topics": ["orders.*"]})).json()
    stream, _ = await connect(token=token["token"], topics="orders.*")
    await publish(api_key, "orders.a", 1)
    (message,) = await stream.events(1)
    assert json.loads(message["data"])["topic"] == "orders.a"
    await stream.close()


# Refusals -----------------------------------------------------------------------------------


def assert_refused(stream: SseStream, status: int) -> str:
    assert stream.status == status
    assert stream.headers[b"content-type"] == b"application/json"
    detail = json.loads(stream.raw)["detail"]
    assert detail
    return detail


async def test_it_refuses_a_request_without_credentials_with_401(db):
    stream = await refusal()
    assert_refused(stream, 401)
    assert stream.headers[b"www-authenticate"].startswith(b"Bearer")


@pytest.fixture
def revoked_key(tenant):
    issued = api_key_issue(actor=ACTOR, tenant=tenant)
    api_key_revoke(actor=ACTOR, api_key=issued.api_key)
    return issued.secret


async def test_it_refuses_an_unknown_or_revoked_key_with_401(revoked_key):
    for key in ("ehk_deadbeef_" + "x" * 43, revoked_key):
        stream = await refusal(key)
        assert_refused(stream, 401)
        assert stream.headers[b"www-authenticate"].startswith(b"Bearer")


async def test_it_refuses_a_bad_token_with_401(db):
    assert_refused(await refusal(token="not-a-token"), 401)


async def test_it_refuses_a_key_without_the_subscribe_scope_with_403(publish_only_key):
    assert "subscribe" in assert_refused(await refusal(publish_only_key), 403)


async def test_it_refuses_a_suspended_tenant_with_403(tenant, api_key):
    await sync_to_async(tenant_set_active)(actor=ACTOR, tenant=tenant, active=False)
    assert "suspended" in assert_refused(await refusal(api_key), 403)


async def test_it_refuses_topics_outside_the_token_with_403(api_key):
    async with asgi_client(api_key) as client:
        token = (await client.post("/api/v1/tokens", json={"topics": ["orders.*"]})).json()
    for topics in ("users.x", "*", "orders*"):
        detail = assert_refused(await refusal(token=token["token"], topics=topics), 403)
        assert topics in detail


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"topics": "bad topic"}, ()),
        ({"topics": "a,,b"}, ()),
        ({"topics": "a*b"}, ()),
        ({"last_event_id": "nope"}, ()),
        ({}, [("Last-Event-ID", "nope")]),
        ({"last_event_id": "1-abc"}, [("Last-Event-ID", "12")]),
        ({"topics": ",".join(f"t{i}" for i in range(MAX_PATTERNS + 1))}, ()),
    ],
)
async def test_it_refuses_a_malformed_request_with_400(api_key, params, headers):
    assert_refused(await refusal(api_key, headers, **params), 400)


async def test_a_subscription_of_100_patterns_opens_the_stream(api_key):
    assert MAX_PATTERNS == 100
    stream, _ = await connect(api_key, topics=",".join(f"t{i}" for i in range(MAX_PATTERNS)))
    await publish(api_key, "t99", "last")
    (event,) = await stream.events(1)
    assert json.loads(event["data"])["data"] == "last"
    await stream.close()


@pytest.fixture
def one_connection_key(db):
    return api_key_issue(actor=ACTOR, tenant=TenantFactory(max_connections=1)).secret


async def test_it_refuses_a_connection_over_the_tenant_limit_with_429(one_connection_key):
    stream, _ = await connect(one_connection_key)
    refused = await refusal(one_connection_key)
    assert_refused(refused, 429)
    assert int(refused.headers[b"retry-after"]) >= 1
    await stream.close()
    again, _ = await connect(one_connection_key)
    await again.close()


# Resuming -----------------------------------------------------------------------------------


async def test_the_last_event_id_header_wins_over_the_parameter(api_key):
    accepted = await publish_batch(api_key, [{"topic": "t", "data": i} for i in range(6)])
    stream, welcome = await connect(
        api_key,
        headers=[("Last-Event-ID", accepted[3]["id"])],
        last_event_id=accepted[0]["id"],
    )
    assert welcome["recovered"] is True
    replayed = await stream.events(2)
    assert [m["id"] for m in replayed] == [accepted[4]["id"], accepted[5]["id"]]
    assert await stream.nothing_more()
    live = await publish(api_key, "t", "live")
    assert [m["id"] for m in await stream.events(1)] == [live["id"]]
    await stream.close()


async def test_the_last_event_id_parameter_resumes_without_the_header(api_key):
    accepted = await publish_batch(api_key, [{"topic": "t", "data": i} for i in range(3)])
    stream, welcome = await connect(api_key, last_event_id=accepted[0]["id"])
    assert welcome["recovered"] is True
    assert [m["id"] for m in await stream.events(2)] == [a["id"] for a in accepted[1:]]
    assert await stream.nothing_more()
    await stream.close()


# Disconnecting ------------------------------------------------------------------------------


async def test_a_client_that_goes_away_no_longer_counts_as_connected(api_key):
    first, _ = await connect(api_key)
    second, _ = await connect(api_key)
    assert await sse_connections(api_key) == 2
    await first.communicator.send_input({"type": "http.disconnect"})
    await first.communicator.wait(timeout=2)
    assert await sse_connections(api_key) == 1
    await publish(api_key, "t", "still here")
    assert len(await second.events(1)) == 1
    await second.close()
    assert await sse_connections(api_key) == 0
