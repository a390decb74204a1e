"""With Redis, the persistence worker is watched like a web process: its own /metrics and
/healthz, and every web process's /metrics reports the log's backlog as it is, whichever
process accepted the events."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.clients import publish
from tests.scaleout.test_multi_process import wait_for

pytestmark = pytest.mark.e2e


async def sample(client: httpx.AsyncClient, url: str, name: str) -> float:
    """The value of a metric without labels on a /metrics page."""
    response = await client.get(f"{url}/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            if s.name == name and not s.labels:
                return s.value
    raise AssertionError(f"{name} not on {url}/metrics:\n{response.text}")


def worker_url(process) -> str:
    return f"http://127.0.0.1:{process.metrics_port}"


async def test_the_worker_counts_what_it_persists_on_its_own_port(two_webs):
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        for n in range(5):
            await publish(client, (two_webs.web_a, two_webs.web_b)[n % 2].url, two_webs.key, "t", n)

        async def all_persisted():
            url = worker_url(two_webs.worker)
            return await sample(client, url, "eventhub_events_persisted_total") == 5

        await wait_for(all_persisted, 20, "the worker to count 5 events persisted")
        health = await client.get(f"{worker_url(two_webs.worker)}/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "redis": True}
        assert (await client.get(f"{worker_url(two_webs.worker)}/nothing")).status_code == 404
        url = worker_url(two_webs.worker)
        assert await sample(client, url, "eventhub_worker_batch_duration_seconds_count") >= 1


async def test_every_web_process_reports_the_backlog_of_the_log_while_no_worker_runs(two_webs):
    two_webs.worker.stop()
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        for n in range(3):
            await publish(client, two_webs.web_a.url, two_webs.key, "t", n)

        for web in (two_webs.web_a, two_webs.web_b):
            assert await sample(client, web.url, "eventhub_persistence_pending") == 3
            assert await sample(client, web.url, "eventhub_persistence_lag_seconds") > 0

        two_webs.worker = two_webs.start("worker")

        async def drained():
            pending = [
                await sample(client, web.url, "eventhub_persistence_pending")
                for web in (two_webs.web_a, two_webs.web_b)
            ]
            return pending == [0, 0]

        await wait_for(drained, 20, "the backlog to drain once a worker runs again")
        assert await sample(client, two_webs.web_b.url, "eventhub_persistence_lag_seconds") == 0
