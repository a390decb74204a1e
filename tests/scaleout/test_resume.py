"""Resuming across processes: a subscriber that reconnects, to any process, gets every missed
event once and in order, then live ones."""

import asyncio

import httpx
import pytest

from tests.clients import publish, sse_open, ws_connect
from tests.scaleout.test_multi_process import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(make_module_cluster):
    """Two webs and a worker that the module's tests share; none of them stops a process."""
    cluster = make_module_cluster(EVENTHUB_REPLAY_WINDOW="30")
    cluster.web_a, cluster.web_b, cluster.worker = cluster.start_side_by_side(
        "web", "web", "worker"
    )
    return cluster


@pytest.fixture
def hub(cluster):
    """The module's cluster with a key of a tenant of the test's own."""
    cluster.key = cluster.fresh_key()
    return cluster


async def publish_many(hub, count: int, start: int = 0) -> list[dict]:
    async with httpx.AsyncClient() as client:
        return [
            await publish(client, (hub.web_a if i % 2 else hub.web_b).url, hub.key, "t", i)
            for i in range(start, start + count)
        ]


async def test_resume_after_the_20th_of_50_gets_21_to_50_then_live_on_websocket(hub):
    accepted = await publish_many(hub, 50)
    ws = await ws_connect(hub.web_a.ws_url, hub.key, last_event_id=accepted[19]["id"])
    welcome = await ws.next_frame()
    assert welcome["recovered"] is True
    replayed = await ws.events(30)
    assert [e["id"] for e in replayed] == [a["id"] for a in accepted[20:]]
    (live,) = await publish_many(hub, 1, start=50)
    assert (await ws.events(1))[0]["id"] == live["id"]
    await ws.close()


async def test_resume_after_the_20th_of_50_gets_21_to_50_then_live_on_sse(hub):
    accepted = await publish_many(hub, 50)
    # As a browser's EventSource does on reconnect: the header wins over the parameter.
    sse = await sse_open(
        hub.web_b.url,
        hub.key,
        headers={"Last-Event-ID": accepted[19]["id"]},
        last_event_id=accepted[0]["id"],
    )
    welcome = await sse.next_message()
    assert welcome["event"] == "welcome"
    assert welcome["data"]["recovered"] is True
    replayed = await sse.events(30)
    assert [e["id"] for e in replayed] == [a["id"] for a in accepted[20:]]
    (live,) = await publish_many(hub, 1, start=50)
    assert (await sse.events(1))[0]["id"] == live["id"]
    await sse.close()


async def test_resume_from_an_id_older_than_the_buffer_replays_from_the_log(hub):
    accepted = await publish_many(hub, 50)  # the buffer holds the last 30
    auth = {"Authorization": f"Bearer {hub.key}"}
    async with httpx.AsyncClient(headers=auth) as client:

        async def persisted():
            stats = (await client.get(f"{hub.web_a.url}/api/v1/stats")).json()
            return stats["events"]["persisted"] >= 50

        await wait_for(persisted, 15, "the log to hold the 50 events")
    ws = await ws_connect(hub.web_b.ws_url, hub.key, last_event_id=accepted[4]["id"])
    assert (await ws.next_frame())["recovered"] is True
    replayed = await ws.events(45)
    assert [e["id"] for e in replayed] == [a["id"] for a in accepted[5:]]
    await ws.close()


async def test_four_publishers_on_two_processes_and_a_subscriber_hopping_between_them(hub):
    """The subscriber reconnects twice, each time to the other process, with its last id;
    it must see every seq exactly once and in order."""
    total_per_publisher = 60
    done = asyncio.Event()

    async def publisher(web, n):
        async with httpx.AsyncClient() as client:
            for i in range(n):
                await publish(client, web.url, hub.key, "load", {"i": i})
                await asyncio.sleep(0.005)

    seen: list[int] = []
    ws = await ws_connect(hub.web_a.ws_url, hub.key)
    await ws.next_frame()
    publishers = asyncio.gather(
        *(publisher(w, total_per_publisher) for w in (hub.web_a, hub.web_b) * 2)
    )
    publishing = asyncio.ensure_future(publishers)
    publishing.add_done_callback(lambda _: done.set())
    last_id = None
    for hop, web in enumerate((hub.web_b, hub.web_a, None)):
        target = 40 * (hop + 1) if web is not None else 4 * total_per_publisher
        while len(seen) < target:
            event = (await ws.events(1, within=20))[0]
            seen.append(event["seq"])
            last_id = event["id"]
        if web is None:
            break
        await ws.close()
        ws = await ws_connect(web.ws_url, hub.key, last_event_id=last_id)
        assert (await ws.next_frame())["recovered"] is True
    await asyncio.wait_for(done.wait(), 30)
    await ws.close()
    assert len(seen) == 4 * total_per_publisher
    assert seen == list(range(seen[0], seen[0] + len(seen)))
