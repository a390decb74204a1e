"""A tenant's accepted events reach its layer group coalesced: alone at a low rate, together
(in seq order) when they were accepted while the previous message was on its way, and a layer
that fails never leaves a publisher waiting."""

import asyncio

from streams.backends.announcer import MAX_EVENTS_PER_MESSAGE, Announcer
from streams.envelope import Envelope
from streams.groups import tenant_group
from tests.factories import envelope_make


def envelope(seq: int, tenant_id: int = 1) -> Envelope:
    return envelope_make(seq, tenant_id=tenant_id, data_json=str(seq))


class Layer:
    """A channel layer whose group_send waits for `gate` and records what it sent."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, list[int]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = fail

    async def group_send(self, group: str, message: dict) -> None:
        await self.gate.wait()
        if self.fail:
            raise ConnectionError("layer down")
        self.sent.append((group, [wire[0] for wire in message["events"]]))


def seqs_sent(layer: Layer) -> list[list[int]]:
    return [seqs for _, seqs in layer.sent]


async def test_an_event_alone_goes_out_at_once_in_a_message_of_its_own():
    layer = Layer()
    announcer = Announcer(layer)

    await asyncio.wait_for(announcer.announce(1, [envelope(1)]), 1)
    await asyncio.wait_for(announcer.announce(1, [envelope(2)]), 1)

    assert layer.sent == [(tenant_group(1), [1]), (tenant_group(1), [2])]


async def test_events_accepted_while_a_message_is_on_its_way_go_together_in_seq_order():
    layer = Layer()
    layer.gate.clear()
    announcer = Announcer(layer)
    first = asyncio.ensure_future(announcer.announce(1, [envelope(1)]))
    await asyncio.sleep(0)  # the first message is on its way
    later = [asyncio.ensure_future(announcer.announce(1, [envelope(s)])) for s in (4, 2, 3)]
    await asyncio.sleep(0)

    layer.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *later), 1)

    assert seqs_sent(layer) == [[1], [2, 3, 4]]


async def test_tenants_are_coalesced_apart():
    layer = Layer()
    layer.gate.clear()
    announcer = Announcer(layer)
    waits = [
        asyncio.ensure_future(announcer.announce(t, [envelope(s, tenant_id=t)]))
        for t, s in ((1, 1), (2, 1), (1, 2), (2, 2))
    ]
    await asyncio.sleep(0)

    layer.gate.set()
    await asyncio.wait_for(asyncio.gather(*waits), 1)

    # Each tenant's two events were waiting together before its sender ran: one message each.
    assert sorted(layer.sent) == [(tenant_group(1), [1, 2]), (tenant_group(2), [1, 2])]


async def test_a_long_burst_is_split_into_messages_of_a_bounded_size():
    layer = Layer()
    layer.gate.clear()
    announcer = Announcer(layer)
    first = asyncio.ensure_future(announcer.announce(1, [envelope(0)]))
    await asyncio.sleep(0)
    burst = [envelope(s) for s in range(1, MAX_EVENTS_PER_MESSAGE + 2)]
    rest = asyncio.ensure_future(announcer.announce(1, burst))
    await asyncio.sleep(0)

    layer.gate.set()
    await asyncio.wait_for(asyncio.gather(first, rest), 1)

    assert [len(seqs) for seqs in seqs_sent(layer)] == [1, MAX_EVENTS_PER_MESSAGE, 1]
    assert [s for seqs in seqs_sent(layer) for s in seqs] == list(range(MAX_EVENTS_PER_MESSAGE + 2))


async def test_a_failing_layer_leaves_no_publisher_waiting():
    layer = Layer(fail=True)
    announcer = Announcer(layer)

    await asyncio.wait_for(announcer.announce(1, [envelope(1)]), 1)

    assert layer.sent == []


async def test_a_publisher_cancelled_while_waiting_stops_no_one_elses_send():
    layer = Layer()
    layer.gate.clear()
    announcer = Announcer(layer)
    first = asyncio.ensure_future(announcer.announce(1, [envelope(1)]))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(announcer.announce(1, [envelope(2)]))
    await asyncio.sleep(0)

    first.cancel()
    layer.gate.set()
    await asyncio.wait_for(second, 1)

    assert seqs_sent(layer) == [[1], [2]]


async def test_publishers_whose_message_is_on_its_way_get_their_answer_when_the_engine_closes():
    layer = Layer()
    layer.gate.clear()
    announcer = Announcer(layer)
    sending = asyncio.ensure_future(announcer.announce(1, [envelope(1)]))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # its message is on its way
    waiting = asyncio.ensure_future(announcer.announce(1, [envelope(2)]))
    await asyncio.sleep(0)

    announcer.close()

    await asyncio.wait_for(asyncio.gather(sending, waiting), 1)
