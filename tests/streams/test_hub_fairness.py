"""Fan-out shared fairly: each tenant's deliveries queue and run on their own, so a big
tenant's burst does not hold a small tenant's events behind all of it."""

import asyncio

from streams.delivery import fairness, subscribers
from streams.groups import tenant_group
from tests.streams.test_hub import Client, FakeBackend, envelope, joined

NOISY, QUIET = 1, 2


async def published(backend: FakeBackend, tenant_id: int, seqs) -> None:
    events = [envelope(seq, tenant_id=tenant_id).to_wire() for seq in seqs]
    await backend.layer.group_send(
        tenant_group(tenant_id), {"type": "event.published", "tenant": tenant_id, "events": events}
    )


async def test_a_quiet_tenants_event_is_delivered_during_a_noisy_tenants_burst(
    hub, backend, monkeypatch
):
    monkeypatch.setattr(fairness, "FAIR_SLICE_SECONDS", 0.0)  # a turn after every broadcast
    noisy = [Client(tenant_id=NOISY) for _ in range(50)]
    quiet = Client(tenant_id=QUIET)
    await joined(hub, *noisy, quiet)
    burst = range(1, 301)

    await published(backend, NOISY, burst)
    await published(backend, QUIET, [1])
    await quiet.eventually(lambda: quiet.seqs == [1])

    # The quiet event went out between two broadcasts of the burst, not after all of it.
    assert len(noisy[0].seqs) < len(burst)
    await noisy[-1].eventually(lambda: len(noisy[-1].seqs) == len(burst))
    assert all(client.seqs == list(burst) for client in noisy)


async def test_one_yield_of_a_burst_lets_another_tenants_publish_take_its_steps_in_a_row():
    """A publish crosses the loop in a few turns in a row, each scheduled by the one before
    (Twisted's read, its application, the layer's receive loop, its tenant's delivery task):
    each yield of a burst lets it take two of them, not one."""
    steps: list[str] = []

    async def another_tenants_publish() -> None:
        for step in ("read", "published", "received", "delivered"):
            steps.append(step)
            await asyncio.sleep(0)  # the next step runs a turn later

    publish = asyncio.ensure_future(another_tenants_publish())
    await fairness.give_turn()

    assert steps == ["read", "published"]
    await asyncio.wait_for(publish, 2)


async def test_a_tenants_full_delivery_queue_drops_and_the_gap_is_filled_from_the_buffer(
    hub, backend, settings
):
    settings.EVENTHUB_HUB_INBOX_EVENTS = 3
    client = Client(tenant_id=NOISY)
    await joined(hub, client)
    backend.buffer = [envelope(seq, tenant_id=NOISY) for seq in range(1, 9)]
    tenant = hub.tenants[NOISY]

    for seq in range(1, 9):  # queued in one go: the receive loop does not wait for delivery
        hub._enqueue(NOISY, [envelope(seq, tenant_id=NOISY)])
    assert tenant.inbox_events <= 3

    await client.eventually(lambda: len(client.seqs) >= 3)
    hub._enqueue(NOISY, [envelope(9, tenant_id=NOISY)])  # shows the gap 4..8
    backend.buffer.append(envelope(9, tenant_id=NOISY))
    await client.eventually(lambda: client.seqs[-1:] == [9])
    assert client.seqs == list(range(1, 10))


async def test_a_tenants_delivery_task_ends_when_its_queue_is_empty(hub, backend):
    client = Client(tenant_id=QUIET)
    await joined(hub, client)

    await published(backend, QUIET, [1, 2])
    await client.eventually(lambda: client.seqs == [1, 2])
    await asyncio.wait_for(asyncio.gather(*hub._drains), 2)

    assert not hub._drains
    assert not hub.tenants[QUIET].draining


async def test_the_catch_up_tick_leaves_a_tenant_whose_deliveries_run_to_them(hub, backend):
    """A tenant behind because its delivery queue is still being worked through is not filled
    from the buffer as well (the queued events would be read twice), and the heartbeat, which
    serves every tenant, never waits for one tenant's deliveries."""
    release = asyncio.Event()
    slow = Client(tenant_id=NOISY)
    record = slow.sub.send

    async def held(message: dict) -> None:
        await release.wait()
        await record(message)

    slow.sub.send = held
    await joined(hub, slow)
    backend.buffer = [envelope(seq, tenant_id=NOISY) for seq in range(1, 4)]
    backend.seq = 3
    filled = []
    buffered = backend.buffered

    async def counted(tenant_id, from_seq, to_seq=None):
        filled.append((from_seq, to_seq))
        return await buffered(tenant_id, from_seq, to_seq)

    backend.buffered = counted
    for seq in range(1, 4):
        hub._enqueue(NOISY, [envelope(seq, tenant_id=NOISY)])
    await asyncio.sleep(0.01)  # the delivery task holds the tenant's lock, sending seq 1

    await asyncio.wait_for(hub.supervisor._catch_up(), 0.5)

    assert filled == []
    release.set()
    await slow.eventually(lambda: slow.seqs == [1, 2, 3])


async def test_the_heartbeat_pings_thousands_of_connections_in_turns(hub, monkeypatch, loop_turns):
    monkeypatch.setattr(fairness, "FAIR_SLICE_SECONDS", 0.0)
    clients = [Client(tenant_id=NOISY) for _ in range(640)]
    await joined(hub, *clients)
    for client in clients:
        client.sub.opening = False
        client.sub.next_ping = 1.0  # due
    loop_turns.count = 0

    await hub.supervisor._beat(asyncio.get_running_loop().time(), 15.0, stale=3600)

    assert all(c.messages == [subscribers.PING_WS] for c in clients)
    assert loop_turns.count >= 640 // 64 - 1  # the loop ran between every slice of 64


async def test_a_crowd_that_connected_at_once_is_pinged_in_turns_each_once_an_interval(hub):
    clients = [Client(tenant_id=NOISY) for _ in range(300)]
    await joined(hub, *clients)
    for client in clients:
        client.sub.opening = False
    start, interval = asyncio.get_running_loop().time(), 15.0

    pinged_per_tick = []
    for tick in range(int(interval) + 1):  # a tick a second over the first interval
        before = sum(len(c.messages) for c in clients)
        await hub.supervisor._beat(start + tick, interval, stale=3600)
        pinged_per_tick.append(sum(len(c.messages) for c in clients) - before)

    assert all(c.messages == [subscribers.PING_WS] for c in clients)
    # Spread over the second half of the interval (about 40 a tick), not 300 at once.
    assert sum(pinged_per_tick[: int(interval) // 2]) == 0, pinged_per_tick
    assert max(pinged_per_tick) < 120, pinged_per_tick
    for tick in range(int(interval) + 1, 2 * int(interval) + 1):
        await hub.supervisor._beat(start + tick, interval, stale=3600)
    assert all(c.messages == [subscribers.PING_WS] * 2 for c in clients)
