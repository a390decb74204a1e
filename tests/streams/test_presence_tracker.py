"""The presence model: tabs, the grace, a reconnect within it, anonymous connections, the caps,
and, on Redis, several processes and the lease of one that died. Plain asyncio, no consumers."""

import asyncio
import itertools
import shutil
import socket
import subprocess
import time

import pytest
import redis.asyncio as aioredis

from streams.presence.changes import JOIN, LEAVE, OCCUPIED, VACATED, Change
from streams.presence.redis_store import RedisStore
from streams.presence.store import LocalStore
from streams.presence.tracker import PresenceTracker

GRACE = 0.2
_ids = itertools.count()


@pytest.fixture(autouse=True)
def _short_grace(settings):
    settings.EVENTHUB_PRESENCE_GRACE = GRACE


class Recorder:
    """A tracker's notify: the changes it announced, in order."""

    def __init__(self) -> None:
        self.changes: list[Change] = []

    async def __call__(self, change: Change) -> None:
        self.changes.append(change)

    def kinds(self, topic: str = "room") -> list[tuple[str, str | None]]:
        return [(c.kind, c.user) for c in self.changes if c.topic == topic]


def tracker_on(store, process: str = "p1") -> tuple[PresenceTracker, Recorder]:
    recorder = Recorder()
    return PresenceTracker(store=store, process=process, notify=recorder), recorder


async def connect(tracker, user: str | None, topics=("room",), tenant_id: int = 1, info=None):
    connection_id = f"c{next(_ids)}"
    await tracker.connect(
        connection_id=connection_id,
        tenant_id=tenant_id,
        patterns=topics,
        user=user,
        info={"name": user} if info is None and user else info,
    )
    return connection_id


async def settled(tracker, seconds: float = 0.0) -> None:
    """Lets the tracker's queued writes (and, after `seconds`, its graces) finish."""
    await asyncio.sleep(seconds)
    for _ in range(5):
        await asyncio.sleep(0)
        if tracker._tasks:
            await asyncio.gather(*tracker._tasks)


async def test_a_user_with_two_tabs_joins_once_and_leaves_after_the_last_plus_the_grace():
    tracker, seen = tracker_on(LocalStore())
    first = await connect(tracker, "alice")
    second = await connect(tracker, "alice")
    assert seen.kinds() == [(OCCUPIED, None), (JOIN, "alice")]
    snapshot = await tracker.snapshot(tenant_id=1, topic="room")
    assert snapshot["connections"] == 2
    assert snapshot["users"] == [{"user": "alice", "info": {"name": "alice"}, "connections": 2}]
    tracker.disconnect(first)
    await settled(tracker, GRACE * 2)
    assert seen.kinds() == [(OCCUPIED, None), (JOIN, "alice")]
    tracker.disconnect(second)
    await settled(tracker, GRACE / 4)
    assert (LEAVE, "alice") not in seen.kinds(), "left before the grace"
    await settled(tracker, GRACE * 2)
    assert seen.kinds()[-2:] == [(LEAVE, "alice"), (VACATED, None)]
    assert (await tracker.snapshot(tenant_id=1, topic="room"))["users"] == []


async def test_a_reconnect_within_the_grace_sends_neither_leave_nor_join():
    store = LocalStore()
    tracker, seen = tracker_on(store)
    tracker.disconnect(await connect(tracker, "bob"))
    await settled(tracker, GRACE / 4)
    again = await connect(tracker, "bob")
    await settled(tracker, GRACE * 2)
    assert seen.kinds() == [(OCCUPIED, None), (JOIN, "bob")]
    tracker.disconnect(again)
    await settled(tracker, GRACE * 2)
    assert seen.kinds()[-2:] == [(LEAVE, "bob"), (VACATED, None)]
    assert store.topics == {}
    assert store.tenant_users == {}


async def test_anonymous_connections_are_counted_not_listed_and_only_exact_topics_count():
    tracker, seen = tracker_on(LocalStore())
    await connect(tracker, None, topics=("room", "news.*", "*"))
    await connect(tracker, None)
    await connect(tracker, "carol", topics=("room", "other"))
    snapshot = await tracker.snapshot(tenant_id=1, topic="room")
    assert snapshot["connections"] == 3
    assert [u["user"] for u in snapshot["users"]] == ["carol"]
    assert (await tracker.snapshot(tenant_id=1, topic="news.*"))["connections"] == 0
    assert (await tracker.snapshot(tenant_id=1, topic="other"))["connections"] == 1
    assert [c.kind for c in seen.changes if c.kind == JOIN] == [JOIN, JOIN]  # room, other


async def test_tenants_do_not_share_presence():
    tracker, _ = tracker_on(LocalStore())
    await connect(tracker, "dave", tenant_id=1)
    await connect(tracker, "erin", tenant_id=2)
    one = await tracker.snapshot(tenant_id=1, topic="room")
    two = await tracker.snapshot(tenant_id=2, topic="room")
    assert [u["user"] for u in one["users"]] == ["dave"]
    assert [u["user"] for u in two["users"]] == ["erin"]


async def test_beyond_the_topic_cap_users_are_counted_but_not_listed(settings):
    settings.EVENTHUB_PRESENCE_MAX_PER_TOPIC = 2
    tracker, seen = tracker_on(LocalStore())
    ids = [await connect(tracker, f"u{i}") for i in range(4)]
    snapshot = await tracker.snapshot(tenant_id=1, topic="room")
    assert snapshot["connections"] == 4
    assert [u["user"] for u in snapshot["users"]] == ["u0", "u1"]
    assert snapshot["truncated"] is True
    assert [c.user for c in seen.changes if c.kind == JOIN] == ["u0", "u1"]
    for connection_id in ids:
        tracker.disconnect(connection_id)
    await settled(tracker, GRACE * 2)
    assert [c.user for c in seen.changes if c.kind == LEAVE] == ["u0", "u1"]
    assert (await tracker.snapshot(tenant_id=1, topic="room"))["connections"] == 0


async def test_beyond_the_tenant_cap_users_are_counted_but_not_listed(settings):
    settings.EVENTHUB_PRESENCE_MAX_PER_TENANT = 3
    tracker, _ = tracker_on(LocalStore())
    await connect(tracker, "a", topics=("t1", "t2"))
    await connect(tracker, "b", topics=("t1", "t2"))
    second = await tracker.snapshot(tenant_id=1, topic="t2")
    assert [u["user"] for u in second["users"]] == ["a"]
    assert second["connections"] == 2
    assert second["truncated"]
    other_tenant = await connect(tracker, "c", tenant_id=2)
    assert other_tenant  # another tenant's cap is its own
    assert [u["user"] for u in (await tracker.snapshot(tenant_id=2, topic="room"))["users"]] == [
        "c"
    ]


# On Redis -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def redis_port(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on this machine")
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
async def client(redis_port):
    client = aioredis.Redis(host="127.0.0.1", port=redis_port)
    yield client
    await client.aclose()


async def test_on_redis_a_user_on_two_processes_joins_once_and_leaves_once(client):
    one, seen_one = tracker_on(RedisStore(client), "p1")
    two, seen_two = tracker_on(RedisStore(client), "p2")
    first = await connect(one, "alice")
    second = await connect(two, "alice")
    snapshot = await two.snapshot(tenant_id=1, topic="room")
    assert snapshot["connections"] == 2
    assert snapshot["users"] == [{"user": "alice", "info": {"name": "alice"}, "connections": 2}]
    assert seen_one.kinds() + seen_two.kinds() == [(OCCUPIED, None), (JOIN, "alice")]
    one.disconnect(first)
    await settled(one, GRACE * 2)
    assert seen_one.kinds() + seen_two.kinds() == [(OCCUPIED, None), (JOIN, "alice")]
    two.disconnect(second)
    await settled(two, GRACE * 2)
    assert seen_two.kinds()[-2:] == [(LEAVE, "alice"), (VACATED, None)]
    assert sorted(await client.keys("eventhub:t:*")) == [], "keys left behind"


async def test_on_redis_the_caps_hold_across_processes(client, settings):
    settings.EVENTHUB_PRESENCE_MAX_PER_TOPIC = 1
    one, _ = tracker_on(RedisStore(client), "p1")
    two, _ = tracker_on(RedisStore(client), "p2")
    await connect(one, "a")
    await connect(two, "b")
    snapshot = await one.snapshot(tenant_id=1, topic="room")
    assert [u["user"] for u in snapshot["users"]] == ["a"]
    assert snapshot["connections"] == 2
    assert snapshot["truncated"]


async def test_on_redis_a_dead_processes_users_leave_when_its_lease_runs_out(client, settings):
    settings.EVENTHUB_HEARTBEAT_INTERVAL = 0.2
    dead, _ = tracker_on(RedisStore(client), "dead")
    alive, seen = tracker_on(RedisStore(client), "alive")
    await dead.heartbeat()
    await connect(dead, "gone", topics=("room", "hall"))
    await connect(dead, "stays")
    await connect(alive, "stays")
    started = time.monotonic()
    # The dead process renews nothing from now on (SIGKILL); the live one beats each tick.
    while not any(c.kind == LEAVE for c in seen.changes):
        assert time.monotonic() - started < 3 * 0.2 + 0.5, "the lease never ran out"
        await alive.heartbeat()
        await asyncio.sleep(0.05)
    assert sorted((c.kind, c.topic, c.user) for c in seen.changes if c.kind != JOIN) == [
        (LEAVE, "hall", "gone"),
        (LEAVE, "room", "gone"),
        (VACATED, "hall", None),
    ]
    snapshot = await alive.snapshot(tenant_id=1, topic="room")
    assert snapshot["users"] == [{"user": "stays", "info": {"name": "stays"}, "connections": 1}]
    assert not await client.exists("eventhub:presence:held:dead")
    assert sorted(await client.keys("eventhub:t:*")) == [
        b"eventhub:t:1:presence-topics",
        b"eventhub:t:1:presence-users",
        b"eventhub:t:1:presence:room",
    ]
    assert await client.smembers("eventhub:t:1:presence-topics") == {b"room"}


async def test_a_disconnect_while_the_connect_is_being_counted_leaves_nothing_behind():
    tracker, seen = tracker_on(LocalStore())
    await connect(tracker, "busy")
    connecting = asyncio.ensure_future(
        tracker.connect(
            connection_id="early", tenant_id=1, patterns=("room",), user="frank", info=None
        )
    )
    async with tracker._lock:  # another connection's write is under way
        await asyncio.sleep(0)  # the connect has begun, and waits for it
        tracker.disconnect("early")
    await connecting
    await settled(tracker, GRACE * 2)
    assert (LEAVE, "frank") in seen.kinds()
    users = [u["user"] for u in (await tracker.snapshot(tenant_id=1, topic="room"))["users"]]
    assert users == ["busy"]


class FlakyStore(LocalStore):
    """A store whose drops fail until told otherwise (Redis down for a while)."""

    down = True

    async def drop(self, **kwargs):
        if self.down:
            raise ConnectionError("store down")
        return await super().drop(**kwargs)


async def test_a_leave_the_store_could_not_take_is_tried_again(monkeypatch):
    monkeypatch.setattr("streams.presence.tracker.RETRY_SECONDS", 0.05)
    store = FlakyStore()
    tracker, seen = tracker_on(store)
    tracker.disconnect(await connect(tracker, "gia"))
    await settled(tracker, GRACE * 2)
    assert (LEAVE, "gia") not in seen.kinds()
    store.down = False
    await settled(tracker, 0.2)
    assert (LEAVE, "gia") in seen.kinds()
    assert store.topics == {}


async def test_a_tenants_present_topics_are_listed_busiest_first_within_the_limit():
    await present_topics_listed(LocalStore())


async def test_on_redis_a_tenants_present_topics_are_listed_busiest_first_within_the_limit(
    client,
):
    await present_topics_listed(RedisStore(client))
    assert not await client.exists("eventhub:t:3:presence-topics")


async def present_topics_listed(store) -> None:
    tracker, _ = tracker_on(store)
    await connect(tracker, "ada", topics=("room", "hall", "news.*"))
    await connect(tracker, "bob", topics=("room",))
    await connect(tracker, None, topics=("room",))
    gone = await connect(tracker, "eve", topics=("attic",))
    await connect(tracker, "ada", topics=("room",), tenant_id=2)

    listed = await tracker.present_topics(tenant_id=1, limit=10)
    assert listed == {
        "topics": [
            {"topic": "room", "connections": 3, "users": 2},
            {"topic": "attic", "connections": 1, "users": 1},
            {"topic": "hall", "connections": 1, "users": 1},
        ],
        "truncated": False,
    }
    assert len((await tracker.present_topics(tenant_id=1, limit=2))["topics"]) == 2
    assert (await tracker.present_topics(tenant_id=1, limit=2))["truncated"]
    tracker.disconnect(gone)
    await settled(tracker, GRACE * 2)
    topics = (await tracker.present_topics(tenant_id=1, limit=10))["topics"]
    assert [t["topic"] for t in topics] == ["room", "hall"]
    assert (await tracker.present_topics(tenant_id=3, limit=10)) == {
        "topics": [],
        "truncated": False,
    }
