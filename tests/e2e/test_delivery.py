"""Published events reach subscribers on both transports, in the same shape, filtered by topic
and never across tenants."""

import asyncio
from datetime import datetime

import pytest

from tests.e2e.conftest import HEARTBEAT, eventually, history, publish, publish_batch, stats

pytestmark = pytest.mark.e2e

EVENT_KEYS = {"type", "id", "seq", "topic", "event", "data", "ts"}


async def test_an_event_reaches_websocket_and_sse_subscribers_as_the_same_json(
    hub, tenant, api, subscribers
):
    ws = await subscribers.ws(hub, tenant.key)
    sse = await subscribers.sse(hub, tenant.key)
    await ws.welcome()
    await sse.welcome()
    data = {"order": 17, "items": [{"sku": "a-1", "qty": 2}], "note": "café ☕", "paid": None}

    accepted = await publish(api, hub, tenant.key, "orders.created", data, event_type="created")

    (over_ws,) = await ws.events(1)
    (over_sse,) = await sse.event_messages(1)
    assert over_sse["data"] == over_ws
    assert set(over_ws) == EVENT_KEYS
    assert over_ws["type"] == "event"
    assert over_ws["id"] == accepted["id"]
    assert over_ws["seq"] == accepted["seq"]
    assert over_ws["topic"] == "orders.created"
    assert over_ws["event"] == "created"
    assert over_ws["data"] == data
    assert datetime.fromisoformat(over_ws["ts"]) == datetime.fromisoformat(accepted["received_at"])
    assert over_sse["id"] == accepted["id"]
    assert over_sse["event"] == "created"


async def test_the_publish_answer_describes_the_accepted_event(hub, tenant, api):
    accepted = await publish(api, hub, tenant.key, "orders.created", {"n": 1})

    assert set(accepted) == {"id", "seq", "topic", "type", "received_at"}
    assert accepted["topic"] == "orders.created"
    assert accepted["type"] == "message"
    assert isinstance(accepted["id"], str)
    assert accepted["id"]
    assert datetime.fromisoformat(accepted["received_at"]).tzinfo is not None


async def test_an_event_without_a_type_is_delivered_as_a_message(hub, tenant, api, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    sse = await subscribers.sse(hub, tenant.key)
    await ws.welcome()
    await sse.welcome()

    await publish(api, hub, tenant.key, "chat", "hello")

    (over_ws,) = await ws.events(1)
    (over_sse,) = await sse.event_messages(1)
    assert over_ws["event"] == "message"
    assert over_sse["event"] == "message"
    assert over_ws["data"] == "hello"


async def test_the_websocket_welcome_comes_first_and_says_what_the_connection_is(
    hub, tenant, subscribers
):
    ws = await subscribers.ws(hub, tenant.key)

    welcome = await ws.welcome()

    assert set(welcome) == {"type", "connection_id", "heartbeat", "recovered"}
    assert welcome["heartbeat"] == HEARTBEAT
    assert welcome["recovered"] is False
    assert welcome["connection_id"]


async def test_the_sse_stream_opens_with_retry_and_the_same_welcome(hub, tenant, subscribers):
    sse = await subscribers.sse(hub, tenant.key)

    welcome = await sse.welcome()

    assert sse.response.headers["content-type"].startswith("text/event-stream")
    assert sse.response.headers["cache-control"] == "no-cache, no-transform"
    assert sse.response.headers["x-accel-buffering"] == "no"
    assert sse.lines[0] == "retry: 3000"
    assert set(welcome) == {"type", "connection_id", "heartbeat", "recovered"}
    assert welcome["type"] == "welcome"
    assert welcome["heartbeat"] == HEARTBEAT
    assert welcome["recovered"] is False


async def test_an_http_1_0_sse_client_gets_its_events_without_chunked_framing(hub, tenant, api):
    # The hub writes an HTTP/1.1 stream's events as prebuilt chunks; an HTTP/1.0 client (old
    # proxies) gets no chunked encoding, so its events must go out plain.
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        writer.write(
            b"GET /sse/v1/events?topics=chat HTTP/1.0\r\n"
            + f"Authorization: Bearer {tenant.key}\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
        assert b"chunked" not in head.lower()
        stream = await asyncio.wait_for(reader.readuntil(b"event: welcome\n"), 10)
        assert stream.startswith(b"retry: 3000")

        accepted = [await publish(api, hub, tenant.key, "chat", {"n": n}) for n in range(3)]

        received = b""
        while received.count(b"\n\n") < 4:  # the welcome's end, then three events
            received += await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
    blocks = [b for b in received.split(b"\n\n") if b.startswith(b"id: ")]
    assert [b.split(b"\n")[0] for b in blocks] == [f"id: {a['id']}".encode() for a in accepted]


async def test_a_head_request_answers_as_the_stream_would_without_opening_one(hub, tenant, api):
    url = f"{hub.url}/sse/v1/events?topics=chat"

    allowed = await api.head(url, headers=tenant.auth)
    refused = await api.head(url)

    assert allowed.status_code == 200
    assert allowed.headers["content-type"].startswith("text/event-stream")
    assert allowed.content == b""
    assert refused.status_code == 401
    assert (await stats(api, hub, tenant.key))["connections"]["sse"] == 0


async def test_each_connection_gets_its_own_connection_id(hub, tenant, subscribers):
    first = await subscribers.ws(hub, tenant.key)
    second = await subscribers.ws(hub, tenant.key)
    stream = await subscribers.sse(hub, tenant.key)

    ids = {(await first.welcome())["connection_id"], (await second.welcome())["connection_id"]}
    ids.add((await stream.welcome())["connection_id"])

    assert len(ids) == 3


async def test_a_batch_arrives_in_order_with_strictly_increasing_seq(hub, tenant, api, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    sse = await subscribers.sse(hub, tenant.key)
    await ws.welcome()
    await sse.welcome()

    accepted = await publish_batch(
        api, hub, tenant.key, [{"topic": f"t.{i}", "type": "tick", "data": i} for i in range(20)]
    )

    over_ws = await ws.events(20)
    over_sse = await sse.events(20)
    assert [e["id"] for e in over_ws] == [a["id"] for a in accepted]
    assert [e["data"] for e in over_ws] == list(range(20))
    seqs = [e["seq"] for e in over_ws]
    assert seqs == sorted(set(seqs))
    assert over_sse == over_ws


async def test_every_subscriber_of_a_topic_gets_the_event(hub, tenant, api, subscribers):
    clients = [await subscribers.ws(hub, tenant.key) for _ in range(3)]
    clients += [await subscribers.sse(hub, tenant.key) for _ in range(3)]
    for client in clients:
        await client.welcome()

    accepted = await publish(api, hub, tenant.key, "news", {"headline": "all of you"})

    for client in clients:
        (event,) = await client.events(1)
        assert event["id"] == accepted["id"]


# Topic filtering ---------------------------------------------------------------------------

TOPICS = ["orders.created", "orders.shipped", "ordersx", "billing.paid", "Orders.created"]


async def publish_topics_then_fence(api, hub, key):
    for topic in TOPICS:
        await publish(api, hub, key, topic, topic)
    # Every subscription below matches this one; it marks the end of what each should get.
    await publish(api, hub, key, "orders.created", "fence")


@pytest.mark.parametrize(
    ("topics", "expected"),
    [
        ("orders.created", ["orders.created"]),
        ("orders.*", ["orders.created", "orders.shipped"]),
        ("*", TOPICS),
        ("orders.created,billing.*", ["orders.created", "billing.paid"]),
        ("ord*", ["orders.created", "orders.shipped", "ordersx"]),
        ("orders.*,orders.created,ord*", ["orders.created", "orders.shipped", "ordersx"]),
    ],
    ids=["exact", "prefix", "everything", "list", "bare-prefix", "overlapping-once"],
)
async def test_a_subscriber_gets_only_the_topics_it_asked_for(
    hub, tenant, api, subscribers, topics, expected
):
    ws = await subscribers.ws(hub, tenant.key, topics=topics)
    sse = await subscribers.sse(hub, tenant.key, topics=topics)
    await ws.welcome()
    await sse.welcome()

    await publish_topics_then_fence(api, hub, tenant.key)

    assert [e["data"] for e in await ws.until("fence")] == [*expected, "fence"]
    assert [e["data"] for e in await sse.until("fence")] == [*expected, "fence"]


async def test_topics_default_to_everything(hub, tenant, api, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()

    await publish_topics_then_fence(api, hub, tenant.key)

    assert [e["data"] for e in await ws.until("fence")] == [*TOPICS, "fence"]


# Tenant isolation --------------------------------------------------------------------------


async def test_tenants_see_only_their_own_events(hub, api, subscribers):
    acme, globex = hub.tenant("acme"), hub.tenant("globex")
    acme_ws = await subscribers.ws(hub, acme.key)
    acme_sse = await subscribers.sse(hub, acme.key)
    globex_ws = await subscribers.ws(hub, globex.key)
    globex_sse = await subscribers.sse(hub, globex.key)
    for client in (acme_ws, acme_sse, globex_ws, globex_sse):
        await client.welcome()

    from_globex = [await publish(api, hub, globex.key, "shared", f"globex {i}") for i in range(3)]
    from_acme = [await publish(api, hub, acme.key, "shared", f"acme {i}") for i in range(3)]
    await publish(api, hub, globex.key, "shared", "fence")
    await publish(api, hub, acme.key, "shared", "fence")

    acme_ids = [a["id"] for a in from_acme]
    globex_ids = [a["id"] for a in from_globex]
    for client in (acme_ws, acme_sse):
        assert [e["id"] for e in await client.until("fence")][:-1] == acme_ids
    for client in (globex_ws, globex_sse):
        assert [e["id"] for e in await client.until("fence")][:-1] == globex_ids


async def test_each_tenant_has_its_own_sequence(hub, api):
    acme, globex = hub.tenant("acme"), hub.tenant("globex")

    await publish(api, hub, acme.key, "a", 1)
    await publish(api, hub, acme.key, "a", 2)
    first_of_globex = await publish(api, hub, globex.key, "a", 1)

    assert first_of_globex["seq"] == 1


async def test_stats_count_only_the_tenants_own_connections_and_events(hub, api, subscribers):
    acme, globex = hub.tenant("acme"), hub.tenant("globex")
    for client in (
        await subscribers.ws(hub, globex.key),
        await subscribers.ws(hub, globex.key),
        await subscribers.sse(hub, globex.key),
        await subscribers.ws(hub, acme.key),
    ):
        await client.welcome()
    for i in range(4):
        await publish(api, hub, globex.key, "busy", i)
    await publish(api, hub, acme.key, "quiet", 0)

    acme_stats = await stats(api, hub, acme.key)
    globex_stats = await stats(api, hub, globex.key)

    assert acme_stats["connections"] == {"websocket": 1, "sse": 0}
    assert acme_stats["events"]["accepted"] == 1
    assert globex_stats["connections"] == {"websocket": 2, "sse": 1}
    assert globex_stats["events"]["accepted"] == 4


async def test_history_holds_only_the_tenants_own_events(hub, api):
    acme, globex = hub.tenant("acme"), hub.tenant("globex")
    await publish(api, hub, globex.key, "shared", "globex")
    acme_id = (await publish(api, hub, acme.key, "shared", "acme"))["id"]

    async def acme_logged():
        return await history(api, hub, acme.key)

    events = await eventually(acme_logged, 5, "acme's event in its history")
    assert [e["id"] for e in events] == [acme_id]
    assert [e["data"] for e in events] == ["acme"]


async def test_concurrent_publishes_arrive_in_seq_order_without_gaps(hub, tenant, api, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    sse = await subscribers.sse(hub, tenant.key)
    await ws.welcome()
    await sse.welcome()

    accepted = await asyncio.gather(
        *(publish(api, hub, tenant.key, f"t.{i % 3}", i) for i in range(60))
    )

    seqs = sorted(a["seq"] for a in accepted)
    assert seqs == list(range(seqs[0], seqs[0] + 60)), "one seq per event, none skipped"
    by_seq = [a["id"] for a in sorted(accepted, key=lambda a: a["seq"])]
    assert [e["id"] for e in await ws.events(60)] == by_seq
    assert [e["id"] for e in await sse.events(60)] == by_seq
