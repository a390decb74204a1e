"""The per-process hub (streams.delivery.hub), driven directly over a stand-in engine."""

import asyncio
import json
from datetime import UTC, datetime

import pytest
from channels.layers import InMemoryChannelLayer
from hypothesis import given
from hypothesis import strategies as st

from streams.delivery.hub import ConnectionLimitReached, Hub, Subscriber, TenantHub
from streams.envelope import Envelope
from streams.groups import tenant_group
from streams.topics import pattern_matches

TENANT = 1
EPOCH = "abc123"


def envelope(seq: int, topic: str = "t", tenant_id: int = TENANT) -> Envelope:
    return Envelope.build(
        tenant_id=tenant_id,
        seq=seq,
        epoch=EPOCH,
        topic=topic,
        type="message",
        data_json=json.dumps(seq),
        received_at=datetime.now(UTC),
    )


class FakeBackend:
    """The engine interface the hub uses (see streams/backends/__init__.py), in memory."""

    def __init__(self) -> None:
        self.layer = InMemoryChannelLayer()
        self.buffer: list[Envelope] = []
        self.seq = 0
        self.changes: list[tuple[int, str, int]] = []
        self.notices: list = []

    async def webhook_notice(self, notice) -> None:
        self.notices.append(notice)

    async def current_seq(self, tenant_id: int) -> int:
        return self.seq

    async def changed_seqs(self, tenant_ids, since):
        return 0, {t: self.seq for t in tenant_ids}

    async def current_epoch(self, tenant_id: int) -> str | None:
        return None  # one epoch throughout: the hub takes it from the first event

    async def buffered(self, tenant_id: int, from_seq: int, to_seq: int | None = None):
        return [
            e
            for e in self.buffer
            if e.tenant_id == tenant_id and from_seq <= e.seq <= (to_seq or e.seq)
        ]

    async def connections(self, tenant_id: int, local: dict[str, int]) -> dict[str, int]:
        return local

    async def connection_acquire(
        self, tenant_id: int, transport: str, limit: int, local: dict[str, int]
    ) -> bool:
        if sum(local.values()) >= limit:
            return False
        self.changes.append((tenant_id, transport, 1))
        return True

    async def connection_change(self, tenant_id: int, transport: str, delta: int) -> None:
        self.changes.append((tenant_id, transport, delta))

    def count_delivered(self, tenant_id: int, n: int) -> None:
        pass


class Client:
    """A connection as its consumer would make it, recording what the hub sends it."""

    def __init__(
        self,
        *patterns: str,
        transport: str = "websocket",
        tenant_id: int = TENANT,
        broken: bool = False,
    ) -> None:
        self.messages: list[dict] = []
        self.closed_with: int | None = None
        self.broken = broken
        self.activity = asyncio.Event()
        self.sub = Subscriber(
            transport=transport,
            tenant_id=tenant_id,
            key_id=None,
            patterns=patterns or ("*",),
            send=self._send,
            close=self._close,
        )

    async def _send(self, message: dict) -> None:
        if self.broken:
            raise ConnectionResetError("peer went away")
        self.messages.append(message)
        self.activity.set()

    async def _close(self, code: int, reason: str) -> None:
        self.closed_with = code
        self.activity.set()

    async def eventually(self, condition, within: float = 2.0) -> None:
        """Waits (bounded) for what the hub does to this connection in a task of its own."""
        async with asyncio.timeout(within):
            while not condition():
                self.activity.clear()
                await self.activity.wait()

    @property
    def seqs(self) -> list[int]:
        seqs = []
        for message in self.messages:
            if message["type"] == "websocket.send":
                frame = json.loads(message["text"])
            elif b"data: " in message["body"]:
                frame = json.loads(message["body"].decode().split("data: ", 1)[1])
            else:
                continue  # a `: ping`
            if frame["type"] == "event":
                seqs.append(frame["seq"])
        return seqs


async def joined(hub: Hub, *clients: Client, max_connections: int | None = None) -> None:
    for client in clients:
        await hub.subscribe(client.sub, max_connections=max_connections)


# TenantHub: who receives a topic ------------------------------------------------------------


def test_recipients_are_found_by_exact_prefix_and_wildcard_patterns():
    tenant = TenantHub()
    exact, prefix, bare_prefix, wildcard, other, both = (
        Client("orders.created"),
        Client("orders.*"),
        Client("orders*"),
        Client("*"),
        Client("users.*", "orders"),
        Client("orders.created", "orders.*"),
    )
    for client in (exact, prefix, bare_prefix, wildcard, other, both):
        tenant.add(client.sub)

    def recipients(topic: str) -> set[Subscriber]:
        return set(tenant.recipients(topic))

    assert recipients("orders.created") == {
        exact.sub,
        prefix.sub,
        bare_prefix.sub,
        wildcard.sub,
        both.sub,
    }
    assert recipients("orders.paid") == {prefix.sub, bare_prefix.sub, wildcard.sub, both.sub}
    assert recipients("orders") == {bare_prefix.sub, wildcard.sub, other.sub}
    assert recipients("ordersx") == {bare_prefix.sub, wildcard.sub}
    assert recipients("users.x") == {wildcard.sub, other.sub}
    assert recipients("Orders.created") == {wildcard.sub}
    assert recipients("billing") == {wildcard.sub}


def test_a_subscriber_matching_twice_is_a_recipient_once():
    tenant = TenantHub()
    client = Client("orders.created", "orders.*", "*")
    tenant.add(client.sub)
    assert list(tenant.recipients("orders.created")) == [client.sub]


def test_a_removed_subscriber_is_no_longer_a_recipient():
    tenant = TenantHub()
    staying, leaving = Client("orders.*"), Client("orders.*", "billing", "*")
    tenant.add(staying.sub)
    tenant.add(leaving.sub)
    assert tenant.remove(leaving.sub) is True
    assert set(tenant.recipients("orders.x")) == {staying.sub}
    assert set(tenant.recipients("billing")) == set()
    assert tenant.remove(leaving.sub) is False
    assert tenant.by_transport == {"websocket": 1, "sse": 0}


class CountingIndex(dict):
    """A prefix index that counts lookups and refuses to be scanned."""

    lookups = 0

    def get(self, key, default=None):
        self.lookups += 1
        return super().get(key, default)

    def __iter__(self):
        raise AssertionError("the prefix index was scanned")

    def items(self):
        raise AssertionError("the prefix index was scanned")


def test_finding_recipients_among_many_prefixes_looks_up_only_the_topics_own_prefixes():
    tenant = TenantHub()
    crowd = [Client(f"room{i}.*", f"room{i}.members.*") for i in range(5000)]
    nested = Client("a*", "a.b*", "a.b.c*")
    for client in (*crowd, nested):
        tenant.add(client.sub)
    tenant.prefixes = CountingIndex(tenant.prefixes)

    assert set(tenant.recipients("room42.members.joined")) == {crowd[42].sub}
    assert set(tenant.recipients("room4")) == set()
    assert set(tenant.recipients("a.b.c.d")) == {nested.sub}
    assert set(tenant.recipients("a.x")) == {nested.sub}
    topics_length = len("room42.members.joined") + len("room4") + len("a.b.c.d") + len("a.x")
    assert tenant.prefixes.lookups <= topics_length


def test_removing_every_subscriber_leaves_nothing_in_the_index():
    tenant = TenantHub()
    clients = [Client(f"p{i}.*", f"x{i % 7}*", f"exact{i}", "*") for i in range(300)]
    for client in clients:
        tenant.add(client.sub)
    for client in clients[:-1]:
        tenant.remove(client.sub)
    assert set(tenant.recipients("x1.y")) == {clients[-1].sub}
    tenant.remove(clients[-1].sub)
    assert (tenant.subscribers, tenant.wildcard) == (set(), set())
    assert (tenant.exact, tenant.prefixes, tenant.prefix_lengths) == ({}, {}, {})


topic_text = st.text(alphabet="ab.", min_size=1, max_size=6)
pattern_lists = st.lists(
    st.one_of(st.just("*"), topic_text, topic_text.map(lambda t: t + "*")),
    min_size=1,
    max_size=4,
)


@given(
    subscriptions=st.lists(pattern_lists, min_size=1, max_size=12),
    leaving=st.sets(st.integers(min_value=0, max_value=11)),
    topic=topic_text,
)
def test_recipients_are_exactly_the_subscribers_with_a_matching_pattern(
    subscriptions, leaving, topic
):
    tenant = TenantHub()
    clients = [Client(*dict.fromkeys(patterns)) for patterns in subscriptions]
    for client in clients:
        tenant.add(client.sub)
    for i in leaving & set(range(len(clients))):
        tenant.remove(clients[i].sub)
    expected = {
        c.sub
        for c in clients
        if c.sub in tenant.subscribers and any(pattern_matches(p, topic) for p in c.sub.patterns)
    }
    assert set(tenant.recipients(topic)) == expected


# Hub: delivery ------------------------------------------------------------------------------


async def test_it_delivers_each_event_to_matching_subscribers_only(hub):
    orders, billing, everything = Client("orders.*"), Client("billing"), Client("*")
    await joined(hub, orders, billing, everything)
    await hub.deliver(
        TENANT, [envelope(1, "orders.a"), envelope(2, "billing"), envelope(3, "users.x")]
    )
    assert orders.seqs == [1]
    assert billing.seqs == [2]
    assert everything.seqs == [1, 2, 3]


async def test_websocket_and_sse_subscribers_get_the_same_event_json(hub):
    ws, sse = Client(), Client(transport="sse")
    await joined(hub, ws, sse)
    event = envelope(1, "orders.a")
    await hub.deliver(TENANT, [event])
    (ws_message,) = ws.messages
    (sse_message,) = sse.messages
    assert ws_message == {"type": "websocket.send", "text": event.frame}
    assert (
        sse_message["body"] == f"id: {event.id}\nevent: message\ndata: {event.frame}\n\n".encode()
    )
    assert sse_message["more_body"] is True


async def test_an_event_sent_to_the_tenant_group_reaches_subscribers(hub, backend):
    client = Client()
    await joined(hub, client)
    await backend.layer.group_send(
        tenant_group(TENANT),
        {"type": "event.published", "tenant": TENANT, "events": [envelope(1).to_wire()]},
    )
    await client.eventually(lambda: client.messages)
    assert client.seqs == [1]


async def test_events_are_delivered_once_and_in_seq_order(hub, backend):
    client = Client()
    await joined(hub, client)
    backend.buffer = [envelope(seq) for seq in range(1, 6)]
    await hub.deliver(TENANT, [envelope(1), envelope(2)])
    await hub.deliver(TENANT, [envelope(2), envelope(1)])  # a duplicate delivery
    await hub.deliver(TENANT, [envelope(5)])  # 3 and 4 are late: filled from the buffer
    await hub.deliver(TENANT, [envelope(3), envelope(4)])
    assert client.seqs == [1, 2, 3, 4, 5]


async def test_events_of_another_tenant_do_not_reach_a_tenants_subscribers(hub):
    mine, theirs = Client(), Client(tenant_id=2)
    await joined(hub, mine, theirs)
    await hub.deliver(2, [envelope(1, tenant_id=2)])
    assert mine.messages == []
    assert theirs.seqs == [1]


async def test_a_subscriber_whose_send_fails_is_dropped_and_the_others_still_receive(hub, backend):
    healthy = [Client() for _ in range(3)]
    broken = Client(broken=True)
    await joined(hub, healthy[0], broken, *healthy[1:])
    await hub.deliver(TENANT, [envelope(1)])
    assert [c.seqs for c in healthy] == [[1], [1], [1]]
    await broken.eventually(lambda: broken.closed_with == 1011)
    assert hub.count(TENANT) == {"websocket": 3, "sse": 0}
    broken.broken = False
    await hub.deliver(TENANT, [envelope(2)])
    assert [c.seqs for c in healthy] == [[1, 2], [1, 2], [1, 2]]
    assert broken.messages == []


async def test_a_closed_subscriber_gets_nothing_more(hub):
    staying, leaving = Client(), Client()
    await joined(hub, staying, leaving)
    await hub.close(leaving.sub, 4403, "revoked")
    await hub.deliver(TENANT, [envelope(1)])
    assert leaving.closed_with == 4403
    assert leaving.messages == []
    assert staying.seqs == [1]


# Hub: membership ----------------------------------------------------------------------------


async def test_unsubscribing_twice_is_safe(hub, backend):
    first, second = Client(), Client(transport="sse")
    await joined(hub, first, second)
    await hub.unsubscribe(first.sub)
    await hub.unsubscribe(first.sub)
    assert hub.count(TENANT) == {"websocket": 0, "sse": 1}
    assert backend.changes.count((TENANT, "websocket", -1)) == 1
    await hub.unsubscribe(second.sub)
    await hub.unsubscribe(second.sub)
    assert hub.count(TENANT) == {"websocket": 0, "sse": 0}
    assert backend.changes.count((TENANT, "sse", -1)) == 1


async def test_the_hub_leaves_a_tenant_group_when_its_last_subscriber_leaves(hub, backend):
    first, second = Client(), Client()
    group = tenant_group(TENANT)
    await joined(hub, first)
    await joined(hub, second)
    assert list(backend.layer.groups[group]) == [hub.channel]
    await hub.unsubscribe(first.sub)
    assert list(backend.layer.groups[group]) == [hub.channel]
    await hub.unsubscribe(second.sub)
    assert hub.channel not in backend.layer.groups.get(group, {})
    # Back again: it rejoins, and delivery resumes.
    again = Client()
    await joined(hub, again)
    assert hub.channel in backend.layer.groups[group]
    await hub.deliver(TENANT, [envelope(1)])
    assert again.seqs == [1]


async def test_a_tenant_connected_longer_than_the_layers_group_expiry_still_gets_events(
    hub, backend, settings
):
    settings.EVENTHUB_HEARTBEAT_INTERVAL = 1.0  # a supervisor tick every half second
    backend.layer.group_expiry = 3  # seconds: a day, shrunk
    client = Client()
    await joined(hub, client)

    # Time must pass: the layer forgets members by their age. The catch-up tick sees nothing
    # to catch up (the backend's seq stays 0): only the group brings the event.
    await asyncio.sleep(4.5)
    await backend.layer.group_send(
        tenant_group(TENANT),
        {"type": "event.published", "tenant": TENANT, "events": [envelope(1).to_wire()]},
    )

    await client.eventually(lambda: client.seqs)
    assert client.seqs == [1]


async def test_the_connection_limit_refuses_one_connection_too_many(hub, backend):
    clients = [Client(), Client(transport="sse"), Client()]
    await joined(hub, *clients[:2], max_connections=2)
    with pytest.raises(ConnectionLimitReached):
        await joined(hub, clients[2], max_connections=2)
    assert hub.count(TENANT) == {"websocket": 1, "sse": 1}
    await hub.deliver(TENANT, [envelope(1)])
    assert clients[2].messages == []
    await hub.unsubscribe(clients[0].sub)
    await joined(hub, clients[2], max_connections=2)
    assert hub.count(TENANT) == {"websocket": 1, "sse": 1}


async def test_a_refused_first_connection_leaves_no_group_behind(hub, backend):
    with pytest.raises(ConnectionLimitReached):
        await joined(hub, Client(), max_connections=0)
    assert tenant_group(TENANT) not in backend.layer.groups
    assert hub.count(TENANT) == {"websocket": 0, "sse": 0}


async def test_a_limited_connection_is_counted_when_admitted_and_given_back_once(hub, backend):
    admitted, refused = Client(), Client()
    await joined(hub, admitted, max_connections=1)
    with pytest.raises(ConnectionLimitReached):
        await joined(hub, refused, max_connections=1)
    await hub.unsubscribe(refused.sub)  # every disconnect path runs, also for a refused one
    await hub.unsubscribe(admitted.sub)
    await hub.unsubscribe(admitted.sub)
    assert backend.changes == [(TENANT, "websocket", 1), (TENANT, "websocket", -1)]


async def test_connects_arriving_at_once_are_admitted_up_to_the_limit_exactly(hub, backend):
    clients = [Client(transport=("websocket", "sse")[i % 2]) for i in range(20)]
    outcomes = await asyncio.gather(
        *(hub.subscribe(c.sub, max_connections=5) for c in clients), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, ConnectionLimitReached)]
    assert (len(refused), outcomes.count(None)) == (15, 5)
    assert sum(hub.count(TENANT).values()) == 5
    assert [delta for _, _, delta in backend.changes] == [1] * 5


# Hub: replay hand-over ----------------------------------------------------------------------


async def test_go_live_flushes_what_arrived_during_replay_without_duplicates(hub):
    client = Client()
    client.sub.pending = []  # replay mode, as subscription_start sets it
    await joined(hub, client)
    await hub.deliver(TENANT, [envelope(1), envelope(2), envelope(3)])
    assert client.messages == []  # held back while the replay is being sent
    client.sub.last_seq = 2  # the replay covered 1 and 2
    await hub.go_live(client.sub)
    assert client.seqs == [3]
    assert client.sub.pending is None
    await hub.deliver(TENANT, [envelope(3), envelope(4)])
    assert client.seqs == [3, 4]


async def test_go_live_stops_at_a_failed_send_and_drops_the_connection(hub):
    client = Client(broken=True)
    client.sub.pending = []
    await joined(hub, client)
    await hub.deliver(TENANT, [envelope(1), envelope(2)])
    await hub.go_live(client.sub)
    await client.eventually(lambda: client.closed_with == 1011)
    assert hub.count(TENANT) == {"websocket": 0, "sse": 0}


async def test_live_events_held_back_during_a_replay_are_bounded_in_bytes(hub, settings):
    frame = len(envelope(1).frame)
    settings.EVENTHUB_MAX_BUFFER_BYTES = 10 * frame  # half of it held back at most
    replaying, live = Client(), Client()
    replaying.sub.pending = []
    await joined(hub, replaying, live)
    await hub.deliver(TENANT, [envelope(seq) for seq in range(1, 6)])
    assert len(replaying.sub.pending) == 5  # up to the limit: held for the hand-over
    await hub.deliver(TENANT, [envelope(6)])
    await replaying.eventually(lambda: replaying.closed_with == 4008)
    assert len(replaying.sub.pending) == 5, "nothing held past the limit"
    assert live.seqs == [1, 2, 3, 4, 5, 6]
    assert hub.count(TENANT) == {"websocket": 1, "sse": 0}


async def test_go_live_starts_holding_from_nothing_again(hub, settings):
    settings.EVENTHUB_MAX_BUFFER_BYTES = 6 * len(envelope(1).frame)
    client = Client()
    client.sub.pending = []
    await joined(hub, client)
    await hub.deliver(TENANT, [envelope(1), envelope(2), envelope(3)])
    await hub.go_live(client.sub)
    assert (client.sub.pending, client.sub.pending_bytes) == (None, 0)
    await hub.deliver(TENANT, [envelope(seq) for seq in range(4, 10)])
    assert client.seqs == list(range(1, 10))
    assert client.closed_with is None


async def test_shutdown_closes_every_connection_with_1001(backend):
    hub = Hub(backend)
    clients = [Client(), Client(transport="sse"), Client(tenant_id=2)]
    await joined(hub, *clients)
    await hub.shutdown()
    assert [c.closed_with for c in clients] == [1001, 1001, 1001]
    assert hub.count(TENANT) == {"websocket": 0, "sse": 0}
