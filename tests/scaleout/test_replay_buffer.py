"""The Redis engine's replay buffer as replay reads it (RedisBackend.buffered_size and
buffered_page), on the machine's Redis: sized and paged in Redis, members rebuilt without
parsing their data."""

import json

import pytest
from django.utils import timezone

from streams.backends.redis import RedisBackend
from streams.envelope import data_encode
from streams.redis_keys import envelope_from_member
from tests.factories import TenantFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# How far the engine's estimate of a frame may be from its length: the ISO time in a frame is
# shorter by 7 bytes when its microseconds are 0.
SLACK = 7


@pytest.fixture
def engine(redis_engine):
    return redis_engine


@pytest.fixture
def tenant_id(db):
    return TenantFactory().pk


async def publish(engine: RedisBackend, tenant_id: int, events: list[tuple[str, object]]):
    items = [(topic, "message", data_encode(data)) for topic, data in events]
    return await engine.publish(tenant_id, items, timezone.now())


async def test_buffered_events_are_the_frames_published(engine, tenant_id):
    data = [{"b": 1, "a": [1.5, None, "x,y"]}, "é ✓ \u2028 , ]", None, 10**15, [], "😀"]
    published = await publish(engine, tenant_id, [("t:a/b-c_d.e", d) for d in data])
    buffered = await engine.buffered(tenant_id, published[0].seq)
    assert [e.frame for e in buffered] == [e.frame for e in published]
    assert [json.loads(e.frame)["data"] for e in buffered] == data


async def test_a_member_is_split_into_its_fields_without_parsing_its_data():
    member = b'[7,"7-abc123","orders.x","created",1700000000.25,{"a":"b,c","d":[1,2]}]'
    envelope = envelope_from_member(3, member)
    assert (envelope.seq, envelope.id, envelope.topic, envelope.type) == (
        7,
        "7-abc123",
        "orders.x",
        "created",
    )
    assert envelope.data_json == '{"a":"b,c","d":[1,2]}'
    assert envelope.received_at.timestamp() == 1700000000.25


async def test_the_buffer_is_sized_in_redis_by_the_topics_matched(engine, tenant_id, monkeypatch):
    monkeypatch.setattr("streams.backends.redis.BUFFER_SIZE_CHUNK", 4)  # several calls
    events = [("orders.a" if i % 2 else "users.b", "x" * i) for i in range(11)]
    published = await publish(engine, tenant_id, events)
    first_seq = published[1].seq

    for patterns, chosen in [
        (("*",), published[1:]),
        (("orders.*",), [e for e in published[1:] if e.topic == "orders.a"]),
        (("users.b", "nothing"), [e for e in published[1:] if e.topic == "users.b"]),
        (("order",), []),
    ]:
        first, held, size = await engine.buffered_size(
            tenant_id, first_seq, published[-1].seq, patterns
        )
        assert (first, held) == (first_seq, 10)
        assert abs(size - sum(len(e.frame) for e in chosen)) <= SLACK * len(chosen)


async def test_a_buffer_page_stops_at_its_bytes_or_events_and_holds_at_least_one(engine, tenant_id):
    published = await publish(engine, tenant_id, [("t", "x" * 100)] * 40)
    seqs = [e.seq for e in published]
    member = len(published[0].frame) - 66  # about a member's size

    by_bytes = await engine.buffered_page(tenant_id, seqs[0], seqs[-1], 100, 3 * member + 10)
    by_count = await engine.buffered_page(tenant_id, seqs[2], seqs[-1], 4, 10**6)
    tiny = await engine.buffered_page(tenant_id, seqs[5], seqs[-1], 100, 1)
    to_end = await engine.buffered_page(tenant_id, seqs[8], seqs[-1], 100, 10**6)

    assert [e.seq for e in by_bytes] == seqs[:3]
    assert [e.seq for e in by_count] == seqs[2:6]
    assert [e.seq for e in tiny] == seqs[5:6]
    assert [e.frame for e in to_end] == [e.frame for e in published[8:]]
