"""SIGTERM stops the server gracefully: connections are told it is going away, and every event
answered 202 is in the log when it comes back on the same database."""

import asyncio

import httpx
import pytest

from tests.clients import bearer, bounded
from tests.e2e.conftest import STOP_WITHIN, history, publish, publish_batch, stats

pytestmark = pytest.mark.e2e


@pytest.fixture
def slow_writer_hub(make_hub):
    """A hub whose log writer lingers, so that events are still pending when SIGTERM comes."""
    server = make_hub(EVENTHUB_PERSIST_LINGER="1.0")
    yield server
    server.stop()


async def test_events_accepted_before_sigterm_are_all_in_the_log_after_a_restart(
    slow_writer_hub, api
):
    hub = slow_writer_hub
    tenant = hub.tenant()
    events = [{"topic": "a", "data": i} for i in range(100)]
    accepted = [e["id"] for e in await publish_batch(api, hub, tenant.key, events)]
    for i in range(20):
        accepted.append((await publish(api, hub, tenant.key, "b", i))["id"])
    assert (await stats(api, hub, tenant.key))["persistence"]["pending"] > 0, "nothing to drain"

    hub.terminate()
    exit_code = await asyncio.to_thread(hub.wait_exit, STOP_WITHIN)

    assert exit_code == 0, hub.log()
    hub.start()
    assert [e["id"] for e in await history(api, hub, tenant.key)] == accepted


async def test_a_connected_websocket_is_closed_with_1001_on_sigterm(own_hub, subscribers):
    tenant = own_hub.tenant()
    ws = await subscribers.ws(own_hub, tenant.key)
    await ws.welcome()

    own_hub.terminate()

    assert await ws.closed(within=STOP_WITHIN) == 1001
    assert await asyncio.to_thread(own_hub.wait_exit, STOP_WITHIN) == 0


async def test_an_sse_stream_ends_on_sigterm(own_hub, subscribers):
    tenant = own_hub.tenant()
    sse = await subscribers.sse(own_hub, tenant.key)
    await sse.welcome()

    own_hub.terminate()

    await sse.ended(within=STOP_WITHIN)
    assert await asyncio.to_thread(own_hub.wait_exit, STOP_WITHIN) == 0


async def test_a_restarted_server_serves_the_same_tenants_and_log(own_hub, api, subscribers):
    tenant = own_hub.tenant()
    before = await publish(api, own_hub, tenant.key, "a", 1)

    own_hub.restart()

    ws = await subscribers.ws(own_hub, tenant.key)
    await ws.welcome()
    assert [e["id"] for e in await history(api, own_hub, tenant.key)] == [before["id"]]


async def publish_until_refused(hub, key: str, accepted: list[str], going: asyncio.Event):
    """Publishes one event after another, noting each id answered 202, until the server
    refuses (503 while it drains) or stops answering."""
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        for i in range(100_000):
            try:
                response = await client.post(
                    f"{hub.url}/api/v1/events",
                    json={"topic": "burst", "data": i},
                    headers=bearer(key),
                )
            except httpx.HTTPError:
                return
            if response.status_code != 202:
                assert response.status_code == 503, response.text
                return
            accepted.append(response.json()["id"])
            going.set()


PUBLISHERS = 16
TRIALS = 3


async def test_sigterm_amid_busy_publishers_exits_in_time_and_loses_nothing(own_hub, api):
    hub = own_hub
    tenant = hub.tenant()
    accepted: list[str] = []
    # Each trial stops the server with requests in flight; a hang shows in most of them.
    for _ in range(TRIALS):
        going = asyncio.Event()
        bursts = [
            asyncio.create_task(publish_until_refused(hub, tenant.key, accepted, going))
            for _ in range(PUBLISHERS)
        ]
        await bounded(going.wait(), 10, "the publishers to get going")

        hub.terminate()
        await bounded(asyncio.gather(*bursts), 20, "the publishers to be refused")
        exit_code = await asyncio.to_thread(hub.wait_exit, 5.0)

        assert exit_code == 0, hub.log()
        hub.start()
        logged = {e["id"] for e in await history(api, hub, tenant.key)}
        assert not set(accepted) - logged, "events answered 202 are missing from the log"
