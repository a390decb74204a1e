"""Resuming a subscription with last_event_id: from the replay buffer or the persisted log."""

import asyncio
import json
import threading
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection

from eventhub.asgi import application
from streams.backends.local import LocalBackend
from streams.delivery import replay
from streams.models import Event
from tests.conftest import asgi_client
from tests.inprocess import publish_batch, wait_until_logged
from tests.streams.test_sse_consumer import connect as sse_connect

pytestmark = pytest.mark.django_db(transaction=True)


async def publish_many(key: str, count: int, topic=lambda i: "t") -> list[dict]:
    events = [{"topic": topic(i), "data": {"n": i}} for i in range(count)]
    async with asgi_client(key) as client:
        response = await client.post("/api/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.content
    return response.json()["events"]


async def resume(key: str, **params: str) -> tuple[WebsocketCommunicator, dict]:
    ws = WebsocketCommunicator(
        application,
        f"/ws/v1/events?{urlencode(params)}",
        headers=[(b"authorization", f"Bearer {key}".encode())],
    )
    connected, _ = await ws.connect()
    assert connected
    welcome = await ws.receive_json_from(timeout=2)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def frames(ws: WebsocketCommunicator, count: int) -> list[dict]:
    return [await ws.receive_json_from(timeout=2) for _ in range(count)]


async def assert_live(key: str, ws: WebsocketCommunicator) -> None:
    """Nothing more was replayed, and a new event arrives live."""
    assert await ws.receive_nothing(timeout=0.1)
    async with asgi_client(key) as client:
        response = await client.post("/api/v1/events", json={"topic": "t", "data": "live"})
    assert (await ws.receive_json_from(timeout=2))["id"] == response.json()["id"]
    assert await ws.receive_nothing(timeout=0.05)


async def test_it_replays_exactly_the_missed_events_then_goes_live(api_key):
    accepted = await publish_many(api_key, 50)
    ws, welcome = await resume(api_key, last_event_id=accepted[19]["id"])
    assert welcome["recovered"] is True
    replayed = await frames(ws, 30)
    assert [f["id"] for f in replayed] == [a["id"] for a in accepted[20:]]
    assert [f["seq"] for f in replayed] == list(range(21, 51))
    assert [f["data"] for f in replayed] == [{"n": i} for i in range(20, 50)]
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_a_subscriber_that_missed_nothing_is_recovered_with_nothing_to_replay(api_key):
    accepted = await publish_many(api_key, 3)
    ws, welcome = await resume(api_key, last_event_id=accepted[-1]["id"])
    assert welcome["recovered"] is True
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_the_replay_keeps_only_the_topics_subscribed_to(api_key):
    accepted = await publish_many(api_key, 10, topic=lambda i: "orders.x" if i % 2 else "users.x")
    ws, welcome = await resume(api_key, last_event_id=accepted[0]["id"], topics="orders.*")
    assert welcome["recovered"] is True
    replayed = await frames(ws, 5)
    assert [f["seq"] for f in replayed] == [2, 4, 6, 8, 10]
    assert await ws.receive_nothing(timeout=0.1)
    await ws.disconnect()


async def test_events_older_than_the_replay_buffer_come_from_the_log(api_key, settings):
    settings.EVENTHUB_REPLAY_WINDOW = 10
    accepted = await publish_many(api_key, 30)
    await wait_until_logged(api_key, 30)
    ws, welcome = await resume(api_key, last_event_id=accepted[4]["id"])
    assert welcome["recovered"] is True
    replayed = await frames(ws, 25)
    assert [f["id"] for f in replayed] == [a["id"] for a in accepted[5:]]
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_events_from_the_log_are_the_same_frames_as_live_ones(api_key, settings):
    settings.EVENTHUB_REPLAY_WINDOW = 2
    watcher, _ = await resume(api_key)
    async with asgi_client(api_key) as client:
        for data in ("anchor", {"b": 1, "a": [1.5, None]}, "é ✓ \u2028", 10**15, None, [], True):
            response = await client.post("/api/v1/events", json={"topic": "t", "data": data})
            assert response.status_code == 202
    live = [await watcher.receive_from(timeout=2) for _ in range(7)]
    await watcher.disconnect()
    await wait_until_logged(api_key, 7)
    first = json.loads(live[0])
    ws, welcome = await resume(api_key, last_event_id=first["id"])
    assert welcome["recovered"] is True
    replayed = [await ws.receive_from(timeout=2) for _ in range(6)]
    # The log's data goes out as the database returns its text, never parsed: on SQLite the
    # text as published; PostgreSQL's jsonb writes it with spaces and its own key order.
    assert [json.loads(f) for f in replayed] == [json.loads(f) for f in live[1:]]
    if connection.vendor == "sqlite":
        assert replayed == live[1:]
    await ws.disconnect()


async def test_too_many_missed_events_are_not_replayed(api_key, settings):
    settings.EVENTHUB_REPLAY_MAX = 5
    accepted = await publish_many(api_key, 20)
    ws, welcome = await resume(api_key, last_event_id=accepted[9]["id"])
    assert welcome["recovered"] is False
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_exactly_the_most_missed_events_allowed_are_replayed(api_key, settings):
    settings.EVENTHUB_REPLAY_MAX = 5
    accepted = await publish_many(api_key, 20)
    ws, welcome = await resume(api_key, last_event_id=accepted[14]["id"])
    assert welcome["recovered"] is True
    assert [f["seq"] for f in await frames(ws, 5)] == [16, 17, 18, 19, 20]
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_too_many_missed_events_are_not_replayed_from_the_log_either(api_key, settings):
    settings.EVENTHUB_REPLAY_WINDOW = 5
    settings.EVENTHUB_REPLAY_MAX = 8
    accepted = await publish_many(api_key, 20)
    await wait_until_logged(api_key, 20)
    ws, welcome = await resume(api_key, last_event_id=accepted[4]["id"])
    assert welcome["recovered"] is False
    await assert_live(api_key, ws)
    await ws.disconnect()


@pytest.mark.parametrize(
    "last_event_id",
    [
        pytest.param(lambda accepted: "999-" + accepted[0]["id"].split("-")[1], id="future-seq"),
        pytest.param(lambda accepted: "5-zzzzzz", id="other-epoch"),
        pytest.param(lambda accepted: "0-" + accepted[0]["id"].split("-")[1], id="seq-zero"),
    ],
)
async def test_an_unknown_event_id_is_not_recovered(api_key, last_event_id):
    accepted = await publish_many(api_key, 10)
    ws, welcome = await resume(api_key, last_event_id=last_event_id(accepted))
    assert welcome["recovered"] is False
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_an_event_id_of_a_tenant_without_events_is_not_recovered(api_key):
    ws, welcome = await resume(api_key, last_event_id="1-abcdef")
    assert welcome["recovered"] is False
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_another_tenants_event_id_recovers_nothing_of_theirs(api_key, other_key):
    theirs = await publish_many(other_key, 5)
    await publish_many(api_key, 5)
    ws, welcome = await resume(api_key, last_event_id=theirs[1]["id"])
    assert welcome["recovered"] is False
    await assert_live(api_key, ws)
    await ws.disconnect()


# Bounded replay: decided before it is sent, streamed in pages -------------------------------


async def live_frames(key: str, events: list[dict]) -> tuple[list[dict], list[str]]:
    """Publishes `events` while a subscriber watches; returns the 202 bodies and the frames
    (text) the subscriber got."""
    watcher, _ = await resume(key)
    async with asgi_client(key) as client:
        response = await client.post("/api/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.content
    accepted = response.json()["events"]
    texts = [await watcher.receive_from(timeout=2) for _ in accepted]
    await watcher.disconnect()
    return accepted, texts


async def test_a_gap_one_byte_over_the_replay_byte_budget_is_not_replayed(api_key, settings):
    accepted, texts = await live_frames(
        api_key, [{"topic": "t", "data": "x" * i} for i in range(10)]
    )
    settings.EVENTHUB_REPLAY_MAX_BYTES = sum(len(t) for t in texts[4:]) - 1
    ws, welcome = await resume(api_key, last_event_id=accepted[3]["id"])
    assert welcome["recovered"] is False
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_a_gap_of_exactly_the_replay_byte_budget_is_replayed(api_key, settings):
    accepted, texts = await live_frames(
        api_key, [{"topic": "t", "data": "x" * i} for i in range(10)]
    )
    settings.EVENTHUB_REPLAY_MAX_BYTES = sum(len(t) for t in texts[4:])
    ws, welcome = await resume(api_key, last_event_id=accepted[3]["id"])
    assert welcome["recovered"] is True
    assert [await ws.receive_from(timeout=2) for _ in range(6)] == texts[4:]
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_the_byte_budget_counts_only_the_topics_subscribed_to(api_key, settings):
    events = [{"topic": "big" if i % 2 else "small", "data": "x" * 500} for i in range(20)]
    accepted, texts = await live_frames(api_key, events)
    settings.EVENTHUB_REPLAY_MAX_BYTES = sum(len(t) for t in texts[1::2])  # the "big" ones
    ws, welcome = await resume(api_key, last_event_id=accepted[0]["id"], topics="small")
    assert welcome["recovered"] is True
    assert [await ws.receive_from(timeout=2) for _ in range(9)] == texts[2::2]
    assert await ws.receive_nothing(timeout=0.1)
    await ws.disconnect()


@pytest.mark.parametrize(("budget", "recovered"), [(20_000, False), (80_000, True)])
async def test_the_byte_budget_holds_for_a_gap_from_the_log(api_key, settings, budget, recovered):
    settings.EVENTHUB_REPLAY_WINDOW = 5
    accepted = await publish_many(api_key, 1)
    accepted += await publish_batch(api_key, [{"topic": "t", "data": "y" * 1000}] * 40)
    await wait_until_logged(api_key, 41)
    settings.EVENTHUB_REPLAY_MAX_BYTES = budget  # the gap is about 40 * 1100 bytes
    ws, welcome = await resume(api_key, last_event_id=accepted[0]["id"])
    assert welcome["recovered"] is recovered
    if recovered:
        assert [f["id"] for f in await frames(ws, 40)] == [a["id"] for a in accepted[1:]]
    await assert_live(api_key, ws)
    await ws.disconnect()


async def test_an_sse_stream_over_the_byte_budget_is_welcomed_unrecovered_then_live(
    api_key, settings
):
    accepted = await publish_batch(api_key, [{"topic": "t", "data": "z" * 500}] * 10)
    settings.EVENTHUB_REPLAY_MAX_BYTES = 2000
    stream, welcome = await sse_connect(api_key, headers=[("Last-Event-ID", accepted[0]["id"])])
    assert welcome["recovered"] is False
    assert await stream.nothing_more()
    async with asgi_client(api_key) as client:
        live = (await client.post("/api/v1/events", json={"topic": "t", "data": "live"})).json()
    assert [m["id"] for m in await stream.events(1)] == [live["id"]]
    await stream.close()


class Reads:
    """Counts what a replay reads: events from the log or from the replay buffer."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[str] = []
        for name in ("event_log_has", "event_log_span", "event_log_page"):
            monkeypatch.setattr(replay, name, self._counted(name, getattr(replay, name)))
        for name in ("buffered", "buffered_size", "buffered_page"):
            monkeypatch.setattr(
                LocalBackend, name, self._counted_async(name, getattr(LocalBackend, name))
            )

    def _counted(self, name, real):
        def counted(*args, **kwargs):
            self.calls.append(name)
            return real(*args, **kwargs)

        return counted

    def _counted_async(self, name, real):
        async def counted(*args, **kwargs):
            self.calls.append(name)
            return await real(*args, **kwargs)

        return counted


async def test_more_than_the_replay_max_missed_is_refused_before_reading_an_event(
    api_key, settings, monkeypatch
):
    settings.EVENTHUB_REPLAY_WINDOW = 5
    settings.EVENTHUB_REPLAY_MAX = 8
    accepted = await publish_many(api_key, 20)
    await wait_until_logged(api_key, 20)
    reads = Reads(monkeypatch)
    ws, welcome = await resume(api_key, last_event_id=accepted[4]["id"])
    assert welcome["recovered"] is False
    assert reads.calls == []
    await ws.disconnect()
    # Within the limit the same replay reads the log, as the counting above would have seen.
    ws, welcome = await resume(api_key, last_event_id=accepted[12]["id"])
    assert welcome["recovered"] is True
    assert [f["seq"] for f in await frames(ws, 7)] == list(range(14, 21))
    assert "event_log_page" in reads.calls
    await ws.disconnect()


@pytest.mark.parametrize("topics", ["*", "a"])
async def test_a_replay_over_many_pages_from_log_and_buffer_is_exact_and_in_order(
    api_key, settings, monkeypatch, topics
):
    settings.EVENTHUB_REPLAY_WINDOW = 30
    monkeypatch.setattr(replay, "PAGE_EVENTS", 7)
    monkeypatch.setattr(replay, "PAGE_BYTES", 1500)
    events = [
        {"topic": "a" if i % 3 else "b", "data": {"i": i, "pad": "p" * i}} for i in range(120)
    ]
    accepted = await publish_batch(api_key, events)
    await wait_until_logged(api_key, 120)
    reads = Reads(monkeypatch)
    ws, welcome = await resume(api_key, last_event_id=accepted[9]["id"], topics=topics)
    assert welcome["recovered"] is True
    expected = [a for a in accepted[10:] if topics == "*" or a["topic"] == topics]
    replayed = await frames(ws, len(expected))
    assert [f["id"] for f in replayed] == [a["id"] for a in expected]
    assert [f["data"]["i"] for f in replayed] == [int(a["seq"]) - 1 for a in expected]
    assert reads.calls.count("event_log_page") >= 8  # 80 events from the log, pages of <= 7
    assert reads.calls.count("buffered_page") >= 5  # 30 from the buffer
    assert await ws.receive_nothing(timeout=0.1)
    await ws.disconnect()


async def test_events_published_during_a_paged_replay_follow_it_once_each(
    api_key, settings, monkeypatch
):
    settings.EVENTHUB_REPLAY_WINDOW = 20
    monkeypatch.setattr(replay, "PAGE_EVENTS", 3)
    accepted = await publish_many(api_key, 60)
    await wait_until_logged(api_key, 60)
    ws, welcome = await resume(api_key, last_event_id=accepted[0]["id"])
    during = await publish_many(api_key, 10)
    assert welcome["recovered"] is True
    got = await frames(ws, 69)
    assert [f["id"] for f in got] == [a["id"] for a in accepted[1:] + during]
    assert await ws.receive_nothing(timeout=0.1)
    await ws.disconnect()


async def test_events_the_buffer_drops_while_a_replay_is_sent_are_read_from_the_log(
    api_key, tenant, settings
):
    settings.EVENTHUB_REPLAY_WINDOW = 10
    accepted = await publish_many(api_key, 20)
    plan = await replay.replay_plan(
        tenant_id=tenant.pk, last_event_id=accepted[14]["id"], patterns=("*",)
    )
    assert (plan.recovered, plan.log_until, plan.until) == (True, 15, 20)  # all in the buffer
    await publish_many(api_key, 10)  # the buffer now holds 21..30
    await wait_until_logged(api_key, 30)
    pages = [page async for page in replay.replay_pages(plan)]
    assert [e.id for page in pages for e in page] == [a["id"] for a in accepted[15:]]


async def test_a_replay_whose_events_are_neither_buffered_nor_logged_is_interrupted(
    api_key, tenant, settings
):
    settings.EVENTHUB_REPLAY_WINDOW = 10
    accepted = await publish_many(api_key, 20)
    plan = await replay.replay_plan(
        tenant_id=tenant.pk, last_event_id=accepted[14]["id"], patterns=("*",)
    )
    await publish_many(api_key, 10)
    await wait_until_logged(api_key, 30)
    await Event.objects.filter(tenant=tenant, seq=18).adelete()  # as if not written yet
    with pytest.raises(replay.ReplayInterrupted):
        async for _ in replay.replay_pages(plan):
            pass


# Replay reads of the log: off the shared sync thread, one tenant's at a time -----------------


async def _started(event, within: float = 5.0) -> None:
    """Waits (bounded) for a threading.Event set by a read running on another thread."""
    assert await asyncio.to_thread(event.wait, within), f"the read did not start in {within}s"


async def test_a_tenants_replay_reads_take_turns_while_another_tenants_read_goes_on():
    reads = replay.TenantReads(threads=2)
    first_started, release, order = threading.Event(), threading.Event(), []

    def blocking_read(name: str) -> str:
        order.append(f"{name} started")
        first_started.set()
        assert release.wait(5), "never released"
        return name

    def read(name: str) -> str:
        order.append(f"{name} started")
        return name

    first = asyncio.ensure_future(reads(1, blocking_read, "tenant 1, first"))
    await _started(first_started)
    second = asyncio.ensure_future(reads(1, read, "tenant 1, second"))
    other = await asyncio.wait_for(reads(2, read, "tenant 2"), 5)

    assert other == "tenant 2"
    assert order == ["tenant 1, first started", "tenant 2 started"]
    assert not second.done()
    release.set()
    assert await asyncio.wait_for(asyncio.gather(first, second), 5) == [
        "tenant 1, first",
        "tenant 1, second",
    ]
    assert order[-1] == "tenant 1, second started"
    assert reads.tenants_reading() == 0


async def test_a_replay_from_the_log_is_read_while_the_shared_sync_thread_is_busy(
    tenant, api_key, settings
):
    # The thread where every tenant's API key look-ups (and channels' session look-ups) run: a
    # replay storm must not queue in front of them, nor they in front of it.
    settings.EVENTHUB_REPLAY_WINDOW = 5
    accepted = await publish_many(api_key, 30)
    await wait_until_logged(api_key, 30)
    busy, release = threading.Event(), threading.Event()

    def hold_the_shared_thread() -> None:
        busy.set()
        assert release.wait(10), "never released"

    held = asyncio.ensure_future(sync_to_async(hold_the_shared_thread)())
    try:
        await _started(busy)
        plan = await asyncio.wait_for(
            replay.replay_plan(
                tenant_id=tenant.pk, last_event_id=accepted[4]["id"], patterns=("*",)
            ),
            5,
        )
        assert plan.recovered
        assert plan.log_until > plan.after  # some of it from the log

        async def every_page() -> list:
            return [page async for page in replay.replay_pages(plan)]

        pages = await asyncio.wait_for(every_page(), 5)
        assert [e.seq for page in pages for e in page] == list(range(6, 31))
        assert not held.done()
    finally:
        release.set()
        await asyncio.wait_for(held, 5)
