"""Accepted events reach the persisted log shortly after, and the history API pages through it;
/api/v1/stats shows the log catching up."""

import pytest

from tests.clients import bearer
from tests.e2e.conftest import eventually, history, publish, publish_batch, stats

pytestmark = pytest.mark.e2e

PERSISTED_WITHIN = 5.0


async def publish_mix(api, hub, key) -> list[dict]:
    """Fifteen events one by one and ten in a batch, on a few topics."""
    accepted = [
        await publish(api, hub, key, ("orders.created", "billing.paid", "orders.shipped")[i % 3], i)
        for i in range(15)
    ]
    batch = [{"topic": "orders.created", "type": "bulk", "data": i} for i in range(15, 25)]
    accepted += await publish_batch(api, hub, key, batch)
    return accepted


async def logged(api, hub, key, count: int, **params) -> list[dict]:
    async def all_there():
        events = await history(api, hub, key, **params)
        return events if len(events) >= count else None

    return await eventually(all_there, PERSISTED_WITHIN, f"{count} events in the log")


async def test_published_events_appear_in_the_history_in_order(hub, tenant, api):
    accepted = await publish_mix(api, hub, tenant.key)

    events = await logged(api, hub, tenant.key, 25)

    assert [e["id"] for e in events] == [a["id"] for a in accepted]
    assert [e["seq"] for e in events] == [a["seq"] for a in accepted]
    assert [e["data"] for e in events] == list(range(25))


async def test_a_logged_event_has_the_shape_subscribers_received(hub, tenant, api, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()
    await publish(api, hub, tenant.key, "orders.created", {"n": [1, 2]}, event_type="created")
    (delivered,) = await ws.events(1)

    (logged_event,) = await logged(api, hub, tenant.key, 1)

    assert logged_event == delivered


async def test_history_pages_follow_next_until_it_is_null(hub, tenant, api):
    accepted = await publish_mix(api, hub, tenant.key)
    await logged(api, hub, tenant.key, 25)

    pages, url = [], f"{hub.url}/api/v1/events?limit=10"
    while url:
        response = await api.get(url, headers=tenant.auth)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        url = pages[-1]["next"]
        assert len(pages) <= 4, "next never became null"

    assert [len(p["results"]) for p in pages] == [10, 10, 5]
    assert pages[0]["next"].startswith(hub.url)
    assert [e["id"] for p in pages for e in p["results"]] == [a["id"] for a in accepted]


async def test_history_after_an_id_starts_right_after_it(hub, tenant, api):
    accepted = await publish_mix(api, hub, tenant.key)
    await logged(api, hub, tenant.key, 25)

    events = await history(api, hub, tenant.key, after=accepted[19]["id"])

    assert [e["id"] for e in events] == [a["id"] for a in accepted[20:]]


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("orders.created", {"orders.created"}),
        ("orders.*", {"orders.created", "orders.shipped"}),
        ("*", {"orders.created", "orders.shipped", "billing.paid"}),
    ],
    ids=["exact", "prefix", "everything"],
)
async def test_history_filters_by_topic_or_prefix(hub, tenant, api, topic, expected):
    accepted = await publish_mix(api, hub, tenant.key)
    await logged(api, hub, tenant.key, 25)

    events = await history(api, hub, tenant.key, topic=topic)

    assert {e["topic"] for e in events} == expected
    assert [e["id"] for e in events] == [a["id"] for a in accepted if a["topic"] in expected]


async def test_stats_show_the_log_catching_up(hub, tenant, api, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()
    await publish_mix(api, hub, tenant.key)
    await ws.events(25)

    async def caught_up():
        numbers = await stats(api, hub, tenant.key)
        return numbers if numbers["events"]["persisted"] == 25 else None

    numbers = await eventually(caught_up, PERSISTED_WITHIN, "stats to show 25 persisted")
    assert numbers["events"]["accepted"] == 25
    assert numbers["events"]["delivered"] == 25
    assert numbers["persistence"]["pending"] == 0
    assert numbers["persistence"]["lag_seconds"] == 0
    assert numbers["connections"] == {"websocket": 1, "sse": 0}


async def test_history_of_a_new_tenant_is_empty(hub, tenant, api):
    response = await api.get(f"{hub.url}/api/v1/events", headers=tenant.auth)

    assert response.status_code == 200
    assert response.json() == {"results": [], "next": None}


async def test_history_refuses_a_limit_over_1000(hub, tenant, api):
    response = await api.get(f"{hub.url}/api/v1/events?limit=1001", headers=bearer(tenant.key))

    assert response.status_code == 400
    assert "limit" in response.json()


async def test_an_event_with_a_lone_surrogate_does_not_break_the_history(hub, tenant, api):
    raw = b'{"topic": "odd", "data": "\\ud800 half a character"}'
    odd = await api.post(
        f"{hub.url}/api/v1/events",
        content=raw,
        headers={**tenant.auth, "Content-Type": "application/json"},
    )
    # Half a surrogate pair is not Unicode: no database can log it as sent, so it is refused.
    assert odd.status_code == 400, odd.text
    await publish(api, hub, tenant.key, "normal", "after")
    expected = 1

    async def logged_and_readable():
        response = await api.get(f"{hub.url}/api/v1/events", headers=tenant.auth)
        assert response.status_code == 200, f"{response.status_code}: {response.text}"
        events = response.json()["results"]
        return events if len(events) == expected else None

    events = await eventually(logged_and_readable, PERSISTED_WITHIN, "the history to show both")
    assert events[-1]["data"] == "after"


VALUES = [
    None,
    False,
    0,
    "",
    [],
    {},
    2**64,
    -(2**63),
    1.5e300,
    "emoji 🎉 and ünïcode",
    'quotes " and \\ backslashes and \n newlines',
    {"nested": {"list": [1, {"x": None}], "empty": {}}},
]


async def test_any_json_value_is_delivered_and_logged_unchanged(hub, tenant, api, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    sse = await subscribers.sse(hub, tenant.key)
    await ws.welcome()
    await sse.welcome()

    for value in VALUES:
        await publish(api, hub, tenant.key, "values", value)

    assert [e["data"] for e in await ws.events(len(VALUES))] == VALUES
    assert [e["data"] for e in await sse.events(len(VALUES))] == VALUES
    assert [e["data"] for e in await logged(api, hub, tenant.key, len(VALUES))] == VALUES
