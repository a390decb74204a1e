"""The embedded Idempotency-Key store: per tenant and bounded in memory, backed by the database,
so that a retry within 24 h gets the first answer whatever other tenants and restarts do."""

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError
from django.utils import timezone

from streams import runtime
from streams.backends import HubUnavailable, local_idempotency
from streams.backends.local_idempotency import IdempotencyStore
from streams.idempotency import _slot
from streams.log.reads import idempotent_response_live, idempotent_responses_live
from streams.models import Event, IdempotentResponse
from tests.conftest import asgi_client
from tests.factories import TenantFactory

EVENTS = "/api/v1/events"
BODY = {"topic": "orders", "data": 1}


@pytest.fixture
def small_stores(monkeypatch):
    """Each tenant holds at most 3 keys in memory."""
    monkeypatch.setattr(local_idempotency, "TENANT_MAX_KEYS", 3)


class Database:
    """A stand-in for the table: what the store may read, and how often it asked."""

    def __init__(self, rows=()) -> None:
        self.rows = {(t, slot): (fp, resp, left) for t, slot, fp, resp, left in rows}
        self.lookups = 0
        self.down = False

    def live_rows(self, *, max_rows_per_tenant: int, max_bytes_per_tenant: int):
        live = {}
        for t, _ in self.rows:
            live[t] = live.get(t, 0) + 1
        ordered = sorted(self.rows.items(), key=lambda item: -item[1][2])
        for (t, slot), (fp, resp, left) in ordered:
            yield t, slot, fp, resp, left, live[t]

    def live_row(self, *, tenant_id: int, slot: str):
        self.lookups += 1
        if self.down:
            raise OperationalError("database is down")
        return self.rows.get((tenant_id, slot))

    def store(self) -> IdempotencyStore:
        return IdempotencyStore(live_rows=self.live_rows, live_row=self.live_row)


class Record:
    def __init__(self, tenant_id: int, slot: str) -> None:
        self.tenant_id, self.slot = tenant_id, slot


async def answered(store: IdempotencyStore, db: Database, tenant_id: int, slot: str) -> None:
    """A key claimed, answered and written to the (stand-in) database, as the log writer does."""
    assert await store.claim(tenant_id, slot, "fp", 3600) is None
    store.save(tenant_id, slot, "fp", f"answer {slot}", 3600)
    db.rows[(tenant_id, slot)] = ("fp", f"answer {slot}", 3600.0)
    store.written([Record(tenant_id, slot)])


async def post(client, key: str):
    response = await client.post(EVENTS, json=BODY, headers={"Idempotency-Key": key})
    assert response.status_code == 202
    return response.json()


async def logged(tenant) -> int:
    assert await runtime.get_backend().log_queue.drain(within=10)
    return await Event.objects.filter(tenant=tenant).acount()


@pytest.mark.django_db(transaction=True)
async def test_one_tenant_filling_its_store_does_not_evict_another_tenants_key(
    small_stores, api_key, other_key, other_tenant
):
    async with asgi_client(api_key) as noisy, asgi_client(other_key) as quiet:
        first = await post(quiet, "quiet-1")
        for n in range(20):
            await post(noisy, f"noisy-{n}")
        await logged(other_tenant)
        looked_up = []

        async def read_one(**row):
            looked_up.append(row)

        runtime.get_backend()._idempotency._read_one = read_one

        retry = await post(quiet, "quiet-1")

    assert retry == first
    assert looked_up == []  # the quiet tenant's keys were all in memory
    assert await logged(other_tenant) == 1


@pytest.mark.django_db(transaction=True)
async def test_a_key_evicted_from_memory_is_still_answered_from_the_database(
    small_stores, api_key, tenant
):
    async with asgi_client(api_key) as client:
        first = await post(client, "first")
        await logged(tenant)
        for n in range(5):
            await post(client, f"later-{n}")
        await logged(tenant)
        store = runtime.get_backend()._idempotency
        assert store._tenants[tenant.pk].get(_slot("first", EVENTS), 0) is None
        assert store.held(tenant.pk) == 3

        retry = await post(client, "first")

    assert retry == first
    assert await logged(tenant) == 6


@pytest.mark.django_db(transaction=True)
async def test_a_key_answered_before_a_restart_is_answered_after_it(api_key, tenant):
    async with asgi_client(api_key) as client:
        first = await post(client, "before-restart")
        await logged(tenant)
    await runtime.get_backend().close()
    runtime.reset()

    async with asgi_client(api_key) as client:
        retry = await post(client, "before-restart")

    assert retry == first
    assert await logged(tenant) == 1


async def make_rows(tenant, count: int, response: str = "{}") -> list[str]:
    """`count` stored answers of `tenant`, oldest first; returns their slots."""
    now = timezone.now()
    slots = [f"{tenant.slug}-{n}" for n in range(count)]
    await IdempotentResponse.objects.abulk_create(
        IdempotentResponse(
            tenant=tenant,
            slot=slot,
            fingerprint="fp",
            response=response,
            expires_at=now + timedelta(hours=1, seconds=n),
        )
        for n, slot in enumerate(slots)
    )
    return slots


def database_store() -> IdempotencyStore:
    return IdempotencyStore(live_rows=idempotent_responses_live, live_row=idempotent_response_live)


@pytest.mark.django_db(transaction=True)
async def test_the_start_up_load_holds_a_tenants_newest_keys_and_finds_the_rest_in_the_database(
    small_stores,
):
    busy, quiet = [await sync_to_async(TenantFactory)() for _ in range(2)]
    busy_slots = await make_rows(busy, 5)
    quiet_slots = await make_rows(quiet, 2)
    store = database_store()

    assert await store.claim(quiet.pk, quiet_slots[0], "fp", 3600) == ("fp", "{}")
    assert store.held(busy.pk) == 3  # its cap
    assert store.held(quiet.pk) == 2
    assert await store.claim(busy.pk, busy_slots[0], "fp", 3600) == ("fp", "{}")  # from the db
    assert await store.claim(busy.pk, "new", "fp", 3600) is None


@pytest.mark.django_db(transaction=True)
async def test_the_start_up_load_is_capped_overall_and_a_key_beyond_it_is_found_in_the_database(
    monkeypatch,
):
    monkeypatch.setattr(local_idempotency, "LOAD_MAX_KEYS", 3)
    older, newer = [await sync_to_async(TenantFactory)() for _ in range(2)]
    older_slots = await make_rows(older, 2)
    await IdempotentResponse.objects.filter(tenant=older).aupdate(
        expires_at=timezone.now() + timedelta(minutes=30)
    )
    newer_slots = await make_rows(newer, 3)
    store = database_store()

    assert await store.claim(newer.pk, newer_slots[0], "fp", 3600) == ("fp", "{}")
    assert (store.held(newer.pk), store.held(older.pk)) == (3, 0)  # the newest 3 rows
    assert await store.claim(older.pk, older_slots[0], "fp", 3600) == ("fp", "{}")
    assert await store.claim(older.pk, "new", "fp", 3600) is None


@pytest.mark.django_db(transaction=True)
async def test_the_start_up_read_keeps_each_tenants_newest_rows_within_its_caps():
    tenant, other = [await sync_to_async(TenantFactory)() for _ in range(2)]
    slots = await make_rows(tenant, 4, response="x" * 10)
    await make_rows(other, 1)

    def read(**caps):
        return [
            (t, slot, live)
            for t, slot, _, _, _, live in idempotent_responses_live(**caps)
            if t == tenant.pk
        ]

    by_rows = await sync_to_async(read)(max_rows_per_tenant=2, max_bytes_per_tenant=1000)
    by_bytes = await sync_to_async(read)(max_rows_per_tenant=10, max_bytes_per_tenant=15)
    tiny = await sync_to_async(read)(max_rows_per_tenant=10, max_bytes_per_tenant=1)

    assert by_rows == [(tenant.pk, slots[3], 4), (tenant.pk, slots[2], 4)]
    assert by_bytes == by_rows  # 10 characters before the second, 20 before the third
    assert tiny == [(tenant.pk, slots[3], 4)]  # the newest is always read


async def test_a_tenant_whose_keys_all_fit_never_reads_the_database():
    db = Database()
    store = db.store()
    for n in range(50):
        await answered(store, db, 1, f"k{n}")

    assert db.lookups == 0
    assert await store.claim(1, "k49", "fp", 3600) == ("fp", "answer k49")
    assert db.lookups == 0


async def test_a_tenant_evicting_keys_reads_the_database_for_new_ones_and_others_do_not(
    small_stores,
):
    db = Database()
    store = db.store()
    for n in range(4):
        await answered(store, db, 1, f"k{n}")
    await answered(store, db, 2, "theirs")

    assert await store.claim(1, "k0", "fp", 3600) == ("fp", "answer k0")  # evicted, in the db
    assert db.lookups == 1
    assert await store.claim(2, "new", "fp", 3600) is None
    assert db.lookups == 1


async def test_eviction_drops_the_oldest_key_in_place_without_rebuilding_the_store(
    small_stores,
):
    db = Database()
    store = db.store()
    for n in range(3):
        await answered(store, db, 1, f"k{n}")
    await answered(store, db, 2, "theirs")
    durable = store._tenants[1].durable
    theirs = dict(store._tenants[2].durable)

    for n in range(3, 1000):
        await answered(store, db, 1, f"k{n}")
        assert store._tenants[1].durable is durable  # the same dict, one entry out per key in
        assert list(durable) == [f"k{n - 2}", f"k{n - 1}", f"k{n}"]

    assert dict(store._tenants[2].durable) == theirs


async def test_a_key_is_never_evicted_before_its_record_is_in_the_database(small_stores):
    db = Database()
    store = db.store()
    assert await store.claim(1, "pending", "fp", 3600) is None
    store.save(1, "pending", "fp", "answer pending", 3600)  # the log writer has not written it
    assert await store.claim(1, "running", "fp", 3600) is None  # its publish still runs
    for n in range(10):
        await answered(store, db, 1, f"k{n}")

    assert await store.claim(1, "pending", "fp", 3600) == ("fp", "answer pending")
    assert await store.claim(1, "running", "fp", 3600) == ("fp", None)

    db.rows[(1, "pending")] = ("fp", "answer pending", 3600.0)
    store.written([Record(1, "pending")])
    assert list(store._tenants[1].durable) == ["k9", "pending"]  # now evictable, oldest next


async def test_a_key_looked_up_twice_at_once_is_claimed_once(small_stores):
    db = Database()
    store = db.store()
    for n in range(4):
        await answered(store, db, 1, f"k{n}")  # evicted one: misses now ask the database

    first, second = await asyncio.gather(
        store.claim(1, "new", "one", 3600), store.claim(1, "new", "two", 3600)
    )

    assert db.lookups == 2
    assert (first, second) in [(None, ("one", None)), (("two", None), None)]


async def test_an_expired_key_met_in_memory_is_dropped_and_claimed_again():
    db = Database()
    store = db.store()
    assert await store.claim(1, "k", "old", 0) is None
    store.save(1, "k", "old", "answer", 0)

    assert await store.claim(1, "k", "new", 3600) is None
    assert await store.claim(1, "k", "other", 3600) == ("new", None)


async def test_a_database_that_cannot_answer_makes_the_claim_unavailable(small_stores):
    db = Database()
    store = db.store()
    for n in range(4):
        await answered(store, db, 1, f"k{n}")
    db.down = True

    with pytest.raises(HubUnavailable):
        await store.claim(1, "new", "fp", 3600)
    db.down = False
    assert await store.claim(1, "new", "fp", 3600) is None  # nothing was held by the failure
