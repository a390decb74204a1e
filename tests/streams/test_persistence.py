"""The embedded log writer: batches in order, and idempotent responses kept only behind the
events they name, also while events keep coming."""

import asyncio
import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from streams import metrics
from streams.envelope import Envelope
from streams.log.writer import LocalLogQueue
from streams.log.writes import (
    IdempotentResponseInput,
    event_log_write_batch,
    idempotent_responses_write,
)
from streams.models import IdempotentResponse
from tests.factories import TenantFactory, envelope_make


def envelope(seq: int) -> Envelope:
    return envelope_make(seq, data_json="1")


class Storage:
    """What the writer wrote, in order."""

    def __init__(self) -> None:
        self.writes: list = []

    def write_batch(self, batch) -> int:
        self.writes.append(("events", [e.seq for e in batch]))
        return len(batch)

    def write_records(self, records) -> int:
        self.writes.append(("records", list(records)))
        return len(records)


async def test_a_record_is_written_once_its_events_are_although_more_keep_coming(settings):
    settings.EVENTHUB_PERSIST_BATCH = 2
    settings.EVENTHUB_PERSIST_LINGER = 0
    storage = Storage()
    queue = LocalLogQueue(storage.write_batch, lambda: 0, storage.write_records)
    queue.put([envelope(1), envelope(2)])
    queue.put_record("answer for 1-2")
    for seq in range(3, 41):  # the queue never runs dry before the record is due
        queue.put([envelope(seq)])

    await queue.drain(within=10)
    await queue.stop()

    kinds = [kind for kind, _ in storage.writes]
    record_at = kinds.index("records")
    assert storage.writes[record_at] == ("records", ["answer for 1-2"])
    assert storage.writes[:record_at] == [("events", [1, 2])]  # after its events, no later
    written = [seq for kind, seqs in storage.writes if kind == "events" for seq in seqs]
    assert written == list(range(1, 41))


async def test_a_record_waits_for_every_event_queued_before_it(settings):
    settings.EVENTHUB_PERSIST_BATCH = 2
    settings.EVENTHUB_PERSIST_LINGER = 0
    storage = Storage()
    queue = LocalLogQueue(storage.write_batch, lambda: 0, storage.write_records)
    queue.put([envelope(s) for s in range(1, 6)])
    queue.put_record("answer for 1-5")

    await queue.drain(within=10)
    await queue.stop()

    assert storage.writes == [
        ("events", [1, 2]),
        ("events", [3, 4]),
        ("events", [5]),
        ("records", ["answer for 1-5"]),
    ]


def record(tenant_id: int, slot: str, response: str) -> IdempotentResponseInput:
    return IdempotentResponseInput(tenant_id, slot, "f" * 64, response, 3600)


@pytest.mark.django_db(transaction=True)
async def test_a_record_of_a_deleted_tenant_does_not_hold_up_the_others():
    kept = await sync_to_async(TenantFactory)()

    await sync_to_async(idempotent_responses_write)(
        records=[record(kept.pk + 1000, "gone", "{}"), record(kept.pk, "kept", '{"id": 1}')]
    )

    assert await IdempotentResponse.objects.filter(slot="kept").aexists()
    assert not await IdempotentResponse.objects.filter(slot="gone").aexists()


@pytest.mark.django_db(transaction=True)
async def test_an_expired_record_is_replaced_by_the_keys_next_use():
    tenant = await sync_to_async(TenantFactory)()
    await IdempotentResponse.objects.acreate(
        tenant=tenant,
        slot="s",
        fingerprint="old",
        response="old",
        expires_at=timezone.now() - timedelta(seconds=1),
    )

    await sync_to_async(idempotent_responses_write)(records=[record(tenant.pk, "s", "new")])

    assert (await IdempotentResponse.objects.aget(slot="s")).response == "new"


@pytest.mark.parametrize("turns", range(6))
async def test_the_writer_stops_when_cancelled_as_an_event_wakes_it(settings, turns):
    """At shutdown the writer is cancelled; an event arriving in the same instant must not
    swallow the cancel (asyncio.wait_for on Python 3.11 did, and stop() then hung forever)."""
    settings.EVENTHUB_PERSIST_LINGER = 0
    storage = Storage()
    queue = LocalLogQueue(storage.write_batch, lambda: 0, storage.write_records)
    queue.start()
    await queue.drain(within=5)  # idle: waiting for a wakeup
    queue.put([envelope(1)])
    for _ in range(turns):  # each turn lands the cancel at another step of the wakeup
        await asyncio.sleep(0)

    queue._task.cancel()
    done, _ = await asyncio.wait({queue._task}, timeout=5)

    assert done, "the writer ignored its cancellation"


@pytest.mark.django_db(transaction=True)
async def test_stats_never_show_an_event_both_persisted_and_pending(settings):
    """The batch is written in a thread of its own; /stats reads on the loop. While the write's
    thread is still busy, the events count as pending and not yet as persisted (they were
    counted in the thread once, and a reader in between saw them as both)."""
    settings.EVENTHUB_PERSIST_LINGER = 0
    tenant = await sync_to_async(TenantFactory)()
    written, release = threading.Event(), threading.Event()

    def write_then_wait(batch) -> int:
        n = event_log_write_batch(envelopes=batch)
        written.set()
        release.wait(10)
        return n

    queue = LocalLogQueue(write_then_wait, lambda: 0)
    queue.put([envelope_make(seq, tenant_id=tenant.pk) for seq in (1, 2, 3)])
    assert await asyncio.to_thread(written.wait, 10), "the batch was never written"

    assert (metrics.tenant_counters[tenant.pk].persisted, queue.pending(tenant.pk)[0]) == (0, 3)
    release.set()
    await queue.stop()
    assert (metrics.tenant_counters[tenant.pk].persisted, queue.pending(tenant.pk)[0]) == (3, 0)
