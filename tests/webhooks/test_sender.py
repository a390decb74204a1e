"""Sending webhooks to a real HTTP receiver on loopback: signed, retried by the schedule, dead,
isolated per tenant and per endpoint, and never to an internal address unless allowed."""

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError

from streams import runtime
from streams.envelope import Envelope
from streams.log.writes import event_log_write_batch
from tests.conftest import asgi_client
from tests.factories import ACTOR
from tests.inprocess import publish
from tests.streams import test_presence as presence
from webhooks import sender as sender_module
from webhooks import services
from webhooks.enqueue import deliveries_for_notices
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from webhooks.notices import WebhookNotice
from webhooks.sender import WebhookSender

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch):
    monkeypatch.setattr(sender_module, "POLL_SECONDS", 0.05)


@asynccontextmanager
async def sending():
    sender = WebhookSender()
    task = asyncio.create_task(sender.run())
    try:
        yield sender
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def endpoint(tenant, url: str, topics=("*",), kinds=("event",)):
    return await sync_to_async(services.webhook_endpoint_create)(
        tenant_id=tenant.pk, url=url, topics=list(topics), kinds=list(kinds), actor=ACTOR
    )


_seq = iter(range(1, 1_000_000))


async def log_events(tenant, *topics: str) -> list[Envelope]:
    envelopes = [
        Envelope.build(
            tenant_id=tenant.pk,
            seq=next(_seq),
            epoch="abc123",
            topic=topic,
            type="message",
            data_json=json.dumps({"n": i}),
            received_at=datetime.now(UTC),
        )
        for i, topic in enumerate(topics)
    ]
    await sync_to_async(event_log_write_batch)(envelopes=envelopes)
    return envelopes


def signatures_valid(secret: str, headers: dict[str, str], body: str) -> list[bool]:
    """Verifies as a receiver would, with hmac, hashlib and base64 only."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body}".encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return [
        hmac.compare_digest(sig.partition(",")[2], expected)
        for sig in headers["webhook-signature"].split()
    ]


async def wait_for_status(delivery_filter: dict, status: str, within: float = 10.0):
    deadline = time.monotonic() + within
    while True:
        try:
            delivery = await WebhookDelivery.objects.filter(**delivery_filter).afirst()
        except OperationalError as error:
            # The test database is SQLite's shared cache, which refuses a read while the
            # sender writes the table instead of waiting (file databases wait): read again.
            if "locked" not in str(error):
                raise
            await asyncio.sleep(0.05)
            continue
        if delivery is not None and delivery.status == status:
            return delivery
        assert time.monotonic() < deadline, f"delivery is {delivery and delivery.status}"
        await asyncio.sleep(0.05)


async def test_a_logged_event_is_posted_signed_as_subscribers_get_it(
    tenant, receiver, allow_private, api_key
):
    created = await endpoint(tenant, receiver.url("/a"), topics=["orders.*"])
    [event] = await log_events(tenant, "orders.paid")

    async with sending():
        [got] = await asyncio.to_thread(receiver.wait_for, "/a", 1)
        await wait_for_status({"webhook_id": event.id}, "delivered")

    assert got.body == event.frame
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == event.id
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 10
    assert got.headers["webhook-signature"].startswith("v1,")
    assert signatures_valid(created.secret, got.headers, got.body) == [True]
    async with asgi_client(api_key) as client:
        listed = await client.get(f"/api/v1/webhooks/{created.endpoint.pk}/deliveries")
    [delivery] = listed.json()["results"]
    assert delivery["webhook_id"] == event.id
    assert delivery["type"] == "event"
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 1
    assert delivery["last_status_code"] == 200
    assert delivery["next_attempt_at"] is None


async def test_only_matching_topics_of_the_events_own_tenant_are_delivered(
    tenant, other_tenant, receiver, allow_private
):
    await endpoint(tenant, receiver.url("/mine"), topics=["orders.*"])
    await endpoint(other_tenant, receiver.url("/theirs"))
    await log_events(tenant, "orders.paid", "users.created", "orders.shipped")

    async with sending():
        got = await asyncio.to_thread(receiver.wait_for, "/mine", 2)
        await asyncio.sleep(0.3)

    assert sorted(json.loads(r.body)["topic"] for r in got) == ["orders.paid", "orders.shipped"]
    assert len(receiver.to("/mine")) == 2
    assert receiver.to("/theirs") == []


async def test_a_failing_delivery_is_retried_by_the_schedule_with_one_id_then_dead(
    tenant, receiver, allow_private
):
    receiver.answers["/fail"] = (500, 0.0)
    await endpoint(tenant, receiver.url("/fail"))
    [event] = await log_events(tenant, "t")

    async with sending():
        got = await asyncio.to_thread(receiver.wait_for, "/fail", 4)
        delivery = await wait_for_status({"webhook_id": event.id}, "dead")

    assert {r.headers["webhook-id"] for r in got} == {event.id}
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    # 0.1, 0.2, 0.3 s with at most ±20 % jitter (and a poll of 0.05 s on top).
    for gap, delay in zip(gaps, [0.1, 0.2, 0.3], strict=True):
        assert delay * 0.8 - 0.02 <= gap <= delay * 1.2 + 0.5
    assert delivery.attempts == 4
    assert delivery.last_status_code == 500
    assert delivery.next_attempt_at is None
    attempts = [a async for a in WebhookAttempt.objects.filter(delivery=delivery)]
    assert [a.status_code for a in attempts] == [500, 500, 500, 500]
    await asyncio.sleep(0.5)
    assert len(receiver.to("/fail")) == 4  # dead means no more attempts


async def test_a_redirect_is_not_followed_and_counts_as_a_failure(tenant, receiver, allow_private):
    receiver.answers["/moved"] = (302, 0.0)
    await endpoint(tenant, receiver.url("/moved"))
    [event] = await log_events(tenant, "t")

    async with sending():
        delivery = await wait_for_status({"webhook_id": event.id}, "dead")

    assert delivery.last_status_code == 302


async def test_an_endpoint_failing_for_long_enough_is_disabled_with_a_reason(
    tenant, receiver, allow_private
):
    allow_private.EVENTHUB_WEBHOOK_DISABLE_AFTER = 0
    allow_private.EVENTHUB_WEBHOOK_RETRY_SCHEDULE = [0.05]
    receiver.answers["/down"] = (503, 0.0)
    created = await endpoint(tenant, receiver.url("/down"))
    [event] = await log_events(tenant, "t")

    async with sending():
        await wait_for_status({"webhook_id": event.id}, "dead")

    stored = await WebhookEndpoint.objects.aget(pk=created.endpoint.pk)
    assert stored.active is False
    assert "failed" in stored.disabled_reason


async def test_a_slow_endpoint_of_one_tenant_does_not_delay_another_tenants_deliveries(
    tenant, other_tenant, receiver, allow_private
):
    receiver.answers["/slow"] = (200, 0.8)
    await endpoint(tenant, receiver.url("/slow"))
    await endpoint(other_tenant, receiver.url("/fast"))
    await log_events(tenant, *["t"] * 30)

    async with sending():
        await asyncio.sleep(0.2)  # the slow endpoint's deliveries are under way
        started = time.time()
        await log_events(other_tenant, "t")
        [got] = await asyncio.to_thread(receiver.wait_for, "/fast", 1, 5.0)

    assert got.at - started < 0.5


async def test_a_host_that_resolves_to_loopback_is_not_sent_to_at_delivery(
    tenant, receiver, allow_private
):
    # Registered while private addresses were allowed, sent after they no longer are: the
    # check runs again on every attempt, after resolving the name.
    await endpoint(tenant, f"http://localhost:{receiver.port}/local")
    allow_private.EVENTHUB_WEBHOOK_ALLOW_PRIVATE = False
    allow_private.EVENTHUB_WEBHOOK_RETRY_SCHEDULE = []
    [event] = await log_events(tenant, "t")

    async with sending():
        delivery = await wait_for_status({"webhook_id": event.id}, "dead")

    assert receiver.to("/local") == []
    assert delivery.last_status_code is None
    assert "not sent" in delivery.last_error
    assert "127.0.0.1" in delivery.last_error or "::1" in delivery.last_error


async def test_presence_and_occupancy_notices_go_to_endpoints_of_their_kinds(
    tenant, receiver, allow_private
):
    await endpoint(tenant, receiver.url("/presence"), topics=["room.*"], kinds=["presence"])
    await endpoint(tenant, receiver.url("/occupancy"), kinds=["occupancy"])
    notices = [
        WebhookNotice.build(tenant_id=tenant.pk, type="occupied", topic="room.1"),
        WebhookNotice.build(
            tenant_id=tenant.pk, type="join", topic="room.1", user="ann", info={"n": 1}
        ),
        WebhookNotice.build(tenant_id=tenant.pk, type="leave", topic="room.1", user="ann"),
        WebhookNotice.build(tenant_id=tenant.pk, type="vacated", topic="room.1"),
    ]
    await sync_to_async(deliveries_for_notices)(notices=notices)
    await sync_to_async(deliveries_for_notices)(notices=notices)  # written twice: sent once

    async with sending():
        presence = await asyncio.to_thread(receiver.wait_for, "/presence", 2)
        occupancy = await asyncio.to_thread(receiver.wait_for, "/occupancy", 2)
        await asyncio.sleep(0.3)

    bodies = sorted((json.loads(r.body) for r in presence), key=lambda b: b["type"])
    assert bodies == [
        {"type": "join", "topic": "room.1", "user": "ann", "info": {"n": 1}, "ts": bodies[0]["ts"]},
        {"type": "leave", "topic": "room.1", "user": "ann", "ts": bodies[1]["ts"]},
    ]
    assert sorted(json.loads(r.body)["type"] for r in occupancy) == ["occupied", "vacated"]
    assert {r.headers["webhook-id"] for r in presence + occupancy} == {n.msg_id for n in notices}
    assert len(receiver.to("/presence")) == 2


async def test_after_a_rotation_both_secrets_sign_for_the_grace(tenant, receiver, allow_private):
    created = await endpoint(tenant, receiver.url("/rotated"))
    new_secret = await sync_to_async(services.webhook_secret_rotate)(
        endpoint=created.endpoint, actor=ACTOR
    )
    await log_events(tenant, "t")

    async with sending():
        [got] = await asyncio.to_thread(receiver.wait_for, "/rotated", 1)

    assert signatures_valid(new_secret, got.headers, got.body) == [True, False]
    assert signatures_valid(created.secret, got.headers, got.body) == [False, True]


async def test_an_event_published_on_the_embedded_engine_is_posted_by_its_own_sender(
    tenant, api_key, receiver, allow_private
):
    allow_private.EVENTHUB_WEBHOOK_SENDER = True
    await endpoint(tenant, receiver.url("/embedded"))

    accepted = await publish(api_key, topic="orders", data={"n": 1})

    [got] = await asyncio.to_thread(receiver.wait_for, "/embedded", 1)
    assert got.headers["webhook-id"] == accepted["id"]
    assert json.loads(got.body)["data"] == {"n": 1}
    await runtime.shutdown()


async def test_a_user_joining_and_leaving_on_the_embedded_engine_is_posted(
    tenant, api_key, receiver, allow_private
):
    allow_private.EVENTHUB_WEBHOOK_SENDER = True
    allow_private.EVENTHUB_PRESENCE_GRACE = 0.2
    await endpoint(tenant, receiver.url("/room"), topics=["room"], kinds=["presence", "occupancy"])
    ws, _ = await presence.ws_open(await presence.token_of(api_key, "ada"), presence=False)

    await ws.disconnect()

    got = await asyncio.to_thread(receiver.wait_for, "/room", 4)
    assert sorted(json.loads(r.body)["type"] for r in got) == [
        "join",
        "leave",
        "occupied",
        "vacated",
    ]
    await runtime.shutdown()
