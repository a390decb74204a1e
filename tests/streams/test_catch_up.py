"""The heartbeat's catch-up delivers what a lost layer message left out, reading only the
tenants whose sequence moved, and never loses sight of one: a tenant whose fill failed, or that
joined the hub while a tick was reading, is read again until this hub has caught up."""

from streams.delivery.subscribers import TenantHub
from streams.delivery.supervisor import Supervisor
from streams.envelope import Envelope
from tests.factories import envelope_make


def envelope(tenant_id: int, seq: int) -> Envelope:
    return envelope_make(seq, tenant_id=tenant_id)


class Backend:
    """Reports a tenant's move once, as the Redis engine does: after that, only a new move."""

    def __init__(self) -> None:
        self.seqs: dict[int, int] = {}
        self.unreported: set[int] = set()

    def publish(self, tenant_id: int, seq: int) -> None:
        self.seqs[tenant_id] = seq
        self.unreported.add(tenant_id)

    async def changed_seqs(self, tenant_ids, since):
        moved = {t: self.seqs.get(t, 0) for t in tenant_ids if t in self.unreported}
        self.unreported -= set(tenant_ids)
        return object(), moved

    async def current_seq(self, tenant_id: int) -> int:
        return self.seqs.get(tenant_id, 0)


class Hub:
    def __init__(self) -> None:
        self.backend = Backend()
        self.tenants: dict[int, TenantHub] = {}
        self.delivered: list[tuple[int, list[int]]] = []
        self.fails = 0

    def join(self, tenant_id: int, last_seq: int) -> None:
        tenant = self.tenants[tenant_id] = TenantHub()
        tenant.last_seq = last_seq

    async def fill(self, tenant_id: int, first: int, last: int) -> list[Envelope]:
        if self.fails:
            self.fails -= 1
            raise ConnectionError("replay buffer unreachable")
        return [envelope(tenant_id, seq) for seq in range(first, last + 1)]

    async def deliver(self, tenant_id: int, envelopes: list[Envelope]) -> None:
        self.delivered.append((tenant_id, [e.seq for e in envelopes]))
        self.tenants[tenant_id].last_seq = envelopes[-1].seq


async def test_a_lost_event_is_delivered_on_the_next_tick():
    hub = Hub()
    hub.join(1, last_seq=5)
    supervisor = Supervisor(hub)
    await supervisor._catch_up()

    hub.backend.publish(1, 6)  # its layer message never came
    await supervisor._catch_up()

    assert hub.delivered == [(1, [6])]


async def test_a_tenant_whose_fill_failed_is_read_again_until_it_is_caught_up():
    hub = Hub()
    hub.join(1, last_seq=5)
    supervisor = Supervisor(hub)
    await supervisor._catch_up()
    hub.backend.publish(1, 6)
    hub.fails = 1

    await supervisor._catch_up()  # the engine reports the move once: this fill fails
    assert hub.delivered == []
    await supervisor._catch_up()

    assert hub.delivered == [(1, [6])]


async def test_a_tenant_that_joined_between_ticks_is_read_whatever_the_engine_reports():
    hub = Hub()
    hub.join(1, last_seq=0)
    supervisor = Supervisor(hub)
    await supervisor._catch_up()
    # Joined while a tick read the engine; its move was reported to that tick, not for it.
    hub.join(2, last_seq=3)
    hub.backend.seqs[2] = 4

    await supervisor._catch_up()

    assert hub.delivered == [(2, [4])]


async def test_a_quiet_hub_reads_nothing_more_once_caught_up():
    hub = Hub()
    hub.join(1, last_seq=5)
    supervisor = Supervisor(hub)
    await supervisor._catch_up()
    hub.backend.publish(1, 6)
    await supervisor._catch_up()
    await supervisor._catch_up()  # reads it once more: caught up
    reads = []
    hub.backend.current_seq = lambda t: reads.append(t)  # type: ignore[method-assign]

    await supervisor._catch_up()

    assert reads == []
    assert hub.delivered == [(1, [6])]
