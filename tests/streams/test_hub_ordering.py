"""A property of the per-process hub (streams.delivery.hub.Hub.deliver): however a tenant's events
arrive from the channel layer (out of order, dropped, duplicated, in batches of any size),
every subscriber sees each seq once, in strictly increasing order, with no gap that the replay
buffer could fill; and a re-seeded sequence (a new epoch starting lower) restarts delivery.

Each example runs on a loop of its own (asyncio.run) over an in-memory stand-in engine.
"""

import asyncio
import json
from datetime import UTC, datetime

from channels.layers import InMemoryChannelLayer
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.delivery.hub import Hub
from streams.delivery.subscribers import Subscriber
from streams.envelope import Envelope

TENANT = 7
TOPICS = ["a", "b.x", "b.y"]
PATTERNS = [("*",), ("a",), ("b.*",), ("a", "b.y")]


def envelope(seq: int, epoch: str = "first") -> Envelope:
    return Envelope.build(
        tenant_id=TENANT,
        seq=seq,
        epoch=epoch,
        topic=TOPICS[seq % len(TOPICS)],
        type="message",
        data_json=json.dumps(seq),
        received_at=datetime.now(UTC),
    )


def matches(patterns: tuple[str, ...], topic: str) -> bool:
    return any(
        p == "*" or p == topic or (p.endswith("*") and topic.startswith(p[:-1])) for p in patterns
    )


class Engine:
    """The engine interface the hub uses, in memory; its buffer holds every event."""

    def __init__(self) -> None:
        self.layer = InMemoryChannelLayer()
        self.buffer: dict[int, Envelope] = {}
        self.seq = 0
        self.epoch: str | None = None

    def publish(self, envelopes: list[Envelope]) -> None:
        for e in envelopes:
            self.buffer[e.seq] = e
            self.seq = max(self.seq, e.seq)
            self.epoch = e.id.partition("-")[2]

    def reseed(self) -> None:
        """What an emptied Redis looks like: no buffer, a sequence counting from 0 again."""
        self.buffer.clear()
        self.seq = 0

    async def buffered(self, tenant_id: int, from_seq: int, to_seq: int | None = None):
        last = self.seq if to_seq is None else to_seq
        return [self.buffer[s] for s in range(from_seq, last + 1) if s in self.buffer]

    async def current_seq(self, tenant_id: int) -> int:
        return self.seq

    async def changed_seqs(self, tenant_ids, since):
        return 0, {t: self.seq for t in tenant_ids}

    async def current_epoch(self, tenant_id: int) -> str | None:
        return self.epoch

    def count_delivered(self, tenant_id: int, n: int) -> None:
        pass

    async def connection_change(self, tenant_id: int, transport: str, delta: int) -> None:
        pass

    async def connections(self, tenant_id: int, local: dict[str, int]) -> dict[str, int]:
        return local


class Receiver:
    """A connection as a consumer would make it; records the events the hub writes to it."""

    def __init__(self, patterns: tuple[str, ...], transport: str) -> None:
        self.patterns = patterns
        self.events: list[dict] = []
        self.sub = Subscriber(
            transport=transport,
            tenant_id=TENANT,
            key_id=None,
            patterns=patterns,
            send=self._send,
            close=self._close,
        )

    async def _send(self, message: dict) -> None:
        if message["type"] == "websocket.send":
            self.events.append(json.loads(message["text"]))
        else:  # SSE: a chunk holds one event or several, each ended by a blank line
            for block in message["body"].decode().split("\n\n"):
                if block.startswith("id: "):
                    self.events.append(json.loads(block.split("data: ", 1)[1]))

    async def _close(self, code: int, reason: str) -> None:
        raise AssertionError(f"closed with {code}: {reason}")

    @property
    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.events]


@st.composite
def arrivals(draw):
    """N events, and how they reach the hub: shuffled, some dropped, some twice, in batches."""
    n = draw(st.integers(1, 40))
    seqs = list(range(1, n + 1))
    dropped = draw(st.sets(st.sampled_from(seqs), max_size=n - 1))
    kept = [s for s in seqs if s not in dropped]
    twice = draw(st.lists(st.sampled_from(kept), max_size=5))
    order = draw(st.permutations(kept + twice))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=6)))
    batches = [order[i:j] for i, j in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    return n, [b for b in batches if b]


receivers_spec = st.lists(
    st.tuples(st.sampled_from(PATTERNS), st.sampled_from(["websocket", "sse"]), st.integers(0, 6)),
    min_size=1,
    max_size=4,
)


async def joined(hub: Hub, receiver: Receiver) -> None:
    await hub.subscribe(receiver.sub, max_connections=None)


@settings(max_examples=200, deadline=None)
@given(scenario=arrivals(), spec=receivers_spec)
def test_every_subscriber_sees_each_seq_once_in_order_with_gaps_filled(scenario, spec):
    n, batches = scenario

    async def run():
        engine = Engine()
        engine.publish([envelope(s) for s in range(1, n + 1)])
        engine.seq = 0  # the hub joins before anything was published
        hub = Hub(engine)
        receivers = [(Receiver(patterns, transport), at) for patterns, transport, at in spec]
        delivered_before: dict[Receiver, int] = {}
        highest = 0
        try:
            for i, batch in enumerate(batches):
                for receiver, at in receivers:
                    if at == i:  # joins between two batches
                        delivered_before[receiver] = highest
                        await joined(hub, receiver)
                engine.seq = max(engine.seq, *batch)
                await hub.deliver(TENANT, [envelope(s) for s in batch])
                highest = max(highest, *batch)
        finally:
            await hub.shutdown()
        for receiver, _ in receivers:
            if receiver not in delivered_before:
                assert receiver.events == []
                continue
            expected = [
                s
                for s in range(delivered_before[receiver] + 1, highest + 1)
                if matches(receiver.patterns, envelope(s).topic)
            ]
            assert receiver.seqs == expected
            assert all(e["topic"] == envelope(e["seq"]).topic for e in receiver.events)

    asyncio.run(run())


@settings(max_examples=50, deadline=None)
@given(first=st.integers(1, 20), second=st.integers(1, 20), data=st.data())
def test_a_reseeded_sequence_restarts_delivery_in_order(first, second, data):
    # A Redis that came back empty re-seeds the sequence from the log with a new epoch; its seqs
    # may start lower than those already delivered, and must be delivered all the same.
    start = data.draw(st.integers(1, first + 1), label="new epoch starts at")

    async def run():
        engine = Engine()
        hub = Hub(engine)
        receiver = Receiver(("*",), "websocket")
        await joined(hub, receiver)
        try:
            old = [envelope(s) for s in range(1, first + 1)]
            engine.publish(old)
            await hub.deliver(TENANT, old)
            engine.reseed()
            new = [envelope(s, epoch="second") for s in range(start, start + second)]
            engine.publish(new)
            for e in new:
                await hub.deliver(TENANT, [e])
        finally:
            await hub.shutdown()
        assert [(e["id"]) for e in receiver.events] == [e.id for e in old + new]

    asyncio.run(run())


@settings(max_examples=50, deadline=None)
@given(first=st.integers(3, 20), second=st.integers(2, 20), data=st.data())
def test_a_reseeded_sequence_arriving_out_of_order_loses_nothing(first, second, data):
    start = data.draw(st.integers(1, first), label="new epoch starts at")

    async def run():
        engine = Engine()
        hub = Hub(engine)
        receiver = Receiver(("*",), "websocket")
        await joined(hub, receiver)
        try:
            old = [envelope(s) for s in range(1, first + 1)]
            engine.publish(old)
            await hub.deliver(TENANT, old)
            engine.reseed()
            new = [envelope(s, epoch="second") for s in range(start, start + second)]
            engine.publish(new)
            arrival = data.draw(st.permutations(new), label="arrival order")
            for e in arrival:
                await hub.deliver(TENANT, [e])
        finally:
            await hub.shutdown()
        got_new = [e["seq"] for e in receiver.events[len(old) :]]
        assert got_new == [e.seq for e in new]

    asyncio.run(run())


def test_a_straggler_from_before_a_reseed_is_not_delivered_again():
    async def run():
        engine = Engine()
        hub = Hub(engine)
        receiver = Receiver(("*",), "websocket")
        await joined(hub, receiver)
        try:
            old = [envelope(s) for s in range(1, 4)]
            engine.publish(old)
            await hub.deliver(TENANT, old)
            engine.reseed()
            new = [envelope(s, epoch="second") for s in range(1, 3)]
            engine.publish(new)
            await hub.deliver(TENANT, new[:1])
            await hub.deliver(TENANT, old[1:])  # sent again by a process that lagged behind
            await hub.deliver(TENANT, new[1:])
        finally:
            await hub.shutdown()
        assert [e["id"] for e in receiver.events] == [e.id for e in old + new]

    asyncio.run(run())


def test_a_subscriber_still_replaying_gets_both_runs_across_a_reseed():
    async def run():
        engine = Engine()
        engine.publish([envelope(s) for s in range(1, 11)])
        hub = Hub(engine)
        live = Receiver(("*",), "websocket")
        await joined(hub, live)
        replaying = Receiver(("*",), "websocket")
        replaying.sub.pending = []  # as subscription_start does, while it replays
        await joined(hub, replaying)
        old = [envelope(11), envelope(12)]
        engine.publish(old)
        await hub.deliver(TENANT, old)
        engine.reseed()
        new = [envelope(s, epoch="second") for s in (1, 2, 3)]
        engine.publish(new)
        await hub.deliver(TENANT, new)
        # The replay got up to 10 of the first run; then it goes live.
        replaying.sub.last_seq, replaying.sub.epoch = 10, "first"
        await hub.go_live(replaying.sub)
        await hub.shutdown()
        expected = [e.id for e in old + new]
        assert [e["id"] for e in live.events] == expected
        assert [e["id"] for e in replaying.events] == expected

    asyncio.run(run())


def test_a_hub_that_starts_after_a_reseed_ignores_stragglers_of_the_old_run():
    async def run():
        engine = Engine()
        engine.reseed()
        engine.publish([envelope(s, epoch="second") for s in range(1, 6)])
        hub = Hub(engine)
        receiver = Receiver(("*",), "websocket")
        await joined(hub, receiver)  # knows the tenant is at 5 of "second"
        await hub.deliver(TENANT, [envelope(7)])  # late, from before the re-seed
        current = envelope(6, epoch="second")
        engine.publish([current])
        await hub.deliver(TENANT, [current])
        await hub.shutdown()
        assert [e["id"] for e in receiver.events] == [current.id]

    asyncio.run(run())
