"""The blocking Client against the real hub: publish, retries, errors, batches, history and
tokens, as a publisher's backend uses them."""

import time

import pytest
from eventhub_client import BadRequest, Client, Forbidden, RateLimited, RetryPolicy, Unauthorized

from tests.e2e.conftest import MAX_BATCH

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tenant(hub):
    return hub.tenant(extra_keys=("history",))


@pytest.fixture(scope="module")
def client(hub, tenant):
    with Client(hub.url, key=tenant.key, max_batch=MAX_BATCH) as client:
        yield client


def eventually(check, within: float, what: str):
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {within}s waiting for {what}"
        time.sleep(0.05)


def test_publish_returns_the_accepted_event(client):
    accepted = client.publish("orders.created", {"id": 42}, type="created")

    assert accepted["topic"] == "orders.created"
    assert accepted["type"] == "created"
    assert accepted["id"]
    assert accepted["seq"] >= 1


def test_a_publish_sent_twice_with_one_idempotency_key_is_published_once(client):
    first = client.publish("orders", {"n": 1}, idempotency_key="order-1")
    again = client.publish("orders", {"n": 1}, idempotency_key="order-1")

    assert again == first
    logged = eventually(lambda: list(client.history(topic="orders")), 10, "the event in the log")
    assert [e["id"] for e in logged] == [first["id"]]


def test_a_rate_limited_publish_waits_for_retry_after_and_goes_through(hub):
    tenant = hub.tenant(publish_rate=1)
    with Client(hub.url, key=tenant.key, retry=RetryPolicy(total_wait=10)) as client:
        seqs = [client.publish("t", {"n": n})["seq"] for n in range(3)]

    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3


def test_a_publish_rate_limited_for_longer_than_its_budget_raises(hub):
    tenant = hub.tenant(publish_rate=1)
    with Client(hub.url, key=tenant.key, retry=RetryPolicy(total_wait=0)) as client:
        client.publish("t", 1)
        with pytest.raises(RateLimited) as raised:
            client.publish("t", 2)

    assert raised.value.retry_after


def test_refusals_raise_their_own_exception(hub, client, tenant):
    with pytest.raises(BadRequest) as bad:
        client.publish("not a topic!", {})
    assert "topic" in bad.value.body

    with Client(hub.url, key="ehk_unknown") as stranger, pytest.raises(Unauthorized):
        stranger.publish("t", {})

    with Client(hub.url, key=tenant.keys["history"]) as reader, pytest.raises(Forbidden):
        reader.publish("t", {})


def test_a_batch_longer_than_the_hub_takes_is_sent_in_parts_in_order(client):
    events = [{"topic": "bulk", "data": n} for n in range(MAX_BATCH * 2 + 5)]

    accepted = client.publish_batch(events)

    assert len(accepted) == len(events)
    assert [e["seq"] for e in accepted] == sorted(e["seq"] for e in accepted)


def test_history_iterates_every_event_across_pages(client):
    published = client.publish_batch([("paged", n) for n in range(25)])

    def logged():
        events = list(client.history(topic="paged", page_size=10))
        return events if len(events) == 25 else None

    events = eventually(logged, 10, "25 events in the log")
    assert [e["id"] for e in events] == [e["id"] for e in published]
    assert [e["data"] for e in events] == list(range(25))

    after = list(client.history(topic="paged", after=published[19]["id"], page_size=2))
    assert [e["data"] for e in after] == [20, 21, 22, 23, 24]


def test_token_returns_the_issued_token(client):
    issued = client.token(["orders.*"], ttl=60, user="ada", info={"name": "Ada"})

    assert issued["token"]
    assert issued["id"]
    assert issued["expires_at"]
