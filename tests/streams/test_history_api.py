"""Reading the persisted event log: GET /api/v1/events."""

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from channels.testing import WebsocketCommunicator

from eventhub.asgi import application
from tests.conftest import asgi_client
from tests.inprocess import publish_batch, wait_until_logged

pytestmark = pytest.mark.django_db(transaction=True)


async def publish_topics(key: str, *topics: str) -> list[dict]:
    return await publish_batch(key, [{"topic": t, "data": t} for t in topics])


async def history(key: str, **params) -> dict:
    async with asgi_client(key) as client:
        response = await client.get("/api/v1/events", params=params)
    assert response.status_code == 200, response.content
    return response.json()


async def test_published_events_appear_in_the_history_oldest_first(api_key):
    accepted = await publish_batch(
        api_key,
        [
            {"topic": "orders.created", "type": "created", "data": {"id": 1}},
            {"topic": "orders.paid", "data": [1, 2]},
            {"topic": "users.x", "data": "text"},
        ],
    )
    await wait_until_logged(api_key, 3)
    page = await history(api_key)
    assert page["next"] is None
    assert page["results"] == [
        {
            "type": "event",
            "id": a["id"],
            "seq": a["seq"],
            "topic": a["topic"],
            "event": a["type"],
            "data": data,
            "ts": a["received_at"],
        }
        for a, data in zip(accepted, [{"id": 1}, [1, 2], "text"], strict=True)
    ]


async def test_an_event_with_null_data_appears_in_the_history(api_key):
    await publish_batch(api_key, [{"topic": "t", "data": None}, {"topic": "t", "data": 0}])
    await wait_until_logged(api_key, 2)
    page = await history(api_key)
    assert [(e["seq"], e["data"]) for e in page["results"]] == [(1, None), (2, 0)]


async def test_history_entries_match_what_subscribers_received(api_key):
    ws = WebsocketCommunicator(
        application, "/ws/v1/events", headers=[(b"authorization", f"Bearer {api_key}".encode())]
    )
    await ws.connect()
    await ws.receive_json_from(timeout=2)
    await publish_topics(api_key, "a", "b")
    live = [await ws.receive_json_from(timeout=2) for _ in range(2)]
    await ws.disconnect()
    await wait_until_logged(api_key, 2)
    assert (await history(api_key))["results"] == live


async def test_an_empty_history_has_no_results_and_no_next(api_key):
    assert await history(api_key) == {"results": [], "next": None}


async def test_after_and_limit_page_through_the_history_with_next_links(api_key):
    accepted = await publish_topics(api_key, *[f"t.{i}" for i in range(5)])
    await wait_until_logged(api_key, 5)

    first = await history(api_key, limit=2)
    assert [e["seq"] for e in first["results"]] == [1, 2]
    query = parse_qs(urlsplit(first["next"]).query)
    assert query == {"after": [accepted[1]["id"]], "limit": ["2"]}

    seen = []
    url = "/api/v1/events?limit=2"
    async with asgi_client(api_key) as client:
        while url:
            page = (await client.get(url)).json()
            seen += [e["seq"] for e in page["results"]]
            url = page["next"]
    assert seen == [1, 2, 3, 4, 5]

    after_third = await history(api_key, after=accepted[2]["id"])
    assert [e["seq"] for e in after_third["results"]] == [4, 5]
    assert after_third["next"] is None


async def test_the_next_link_keeps_the_topic_filter(api_key):
    await publish_topics(api_key, "a.1", "b.1", "a.2", "b.2", "a.3")
    await wait_until_logged(api_key, 5)
    first = await history(api_key, topic="a.*", limit=2)
    assert [e["topic"] for e in first["results"]] == ["a.1", "a.2"]
    async with asgi_client(api_key) as client:
        second = (await client.get(first["next"])).json()
    assert [e["topic"] for e in second["results"]] == ["a.3"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("orders.created", ["orders.created"]),
        ("orders", ["orders"]),
        ("orders.*", ["orders.created", "orders.paid"]),
        ("orders*", ["orders.created", "orders", "orders.paid", "ordersx"]),
        ("Orders.*", ["Orders.big"]),
        ("orders.CREATED", []),
        ("a_*", ["a_b"]),
        ("*", ["orders.created", "orders", "Orders.big", "orders.paid", "ordersx", "a_b", "abc"]),
    ],
)
async def test_the_topic_filter_is_exact_or_a_case_sensitive_prefix(api_key, pattern, expected):
    topics = ["orders.created", "orders", "Orders.big", "orders.paid", "ordersx", "a_b", "abc"]
    await publish_topics(api_key, *topics)
    await wait_until_logged(api_key, len(topics))
    page = await history(api_key, topic=pattern)
    assert [e["topic"] for e in page["results"]] == expected


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 1001},
        {"limit": 0},
        {"limit": -1},
        {"limit": "ten"},
        {"after": "nope"},
        {"after": "12"},
        {"after": "-abc"},
        {"after": "1-"},
        {"after": "1-ab cd"},
        {"topic": "bad topic"},
        {"topic": "a*b"},
    ],
)
async def test_bad_query_parameters_are_refused_with_400(api_key, params):
    async with asgi_client(api_key) as client:
        response = await client.get("/api/v1/events", params=params)
    assert response.status_code == 400
    assert set(response.json()) == set(params)


async def test_the_largest_limit_is_accepted(api_key):
    assert (await history(api_key, limit=1000))["results"] == []


async def test_another_tenants_events_never_appear(api_key, other_key):
    theirs = await publish_topics(other_key, "secret.a", "secret.b", "shared")
    await publish_topics(api_key, "shared")
    await wait_until_logged(other_key, 3)
    await wait_until_logged(api_key, 1)

    mine = await history(api_key)
    assert [(e["topic"], e["seq"]) for e in mine["results"]] == [("shared", 1)]
    assert (await history(api_key, topic="secret.*"))["results"] == []
    # Their ids name nothing of ours beyond our own seqs.
    assert (await history(api_key, after=theirs[0]["id"]))["results"] == []
    assert len((await history(other_key))["results"]) == 3


# Pages bounded in bytes ---------------------------------------------------------------------


async def all_pages(key: str, url: str) -> list[dict]:
    """Every page from `url` on, following `next`."""
    pages = []
    async with asgi_client(key) as client:
        while url:
            response = await client.get(url)
            assert response.status_code == 200, response.content
            pages.append(response.json())
            url = pages[-1]["next"]
    return pages


def page_bytes(events: list[dict]) -> int:
    """The bytes of a page's events as the hub writes each (compact JSON) and joins them."""
    return sum(len(json.dumps(e, separators=(",", ":")).encode()) + 1 for e in events)


async def test_a_page_stops_at_the_byte_budget_and_next_goes_on_after_it(api_key, settings):
    accepted = await publish_batch(api_key, [{"topic": "t", "data": "x" * 300}] * 10)
    await wait_until_logged(api_key, 10)
    one = page_bytes((await history(api_key, limit=1))["results"])
    settings.EVENTHUB_HISTORY_MAX_BYTES = 3 * one + one // 2

    pages = await all_pages(api_key, "/api/v1/events?limit=100")

    assert [len(p["results"]) for p in pages] == [3, 3, 3, 1]
    assert all(page_bytes(p["results"]) <= settings.EVENTHUB_HISTORY_MAX_BYTES for p in pages)
    seen = [e["id"] for p in pages for e in p["results"]]
    assert seen == [a["id"] for a in accepted]
    query = parse_qs(urlsplit(pages[0]["next"]).query)
    assert query == {"after": [accepted[2]["id"]], "limit": ["100"]}


async def test_a_page_holds_one_event_larger_than_the_byte_budget(api_key, settings):
    accepted = await publish_batch(api_key, [{"topic": "t.a", "data": "y" * 500}] * 3)
    await wait_until_logged(api_key, 3)
    settings.EVENTHUB_HISTORY_MAX_BYTES = 10

    pages = await all_pages(api_key, "/api/v1/events?topic=t.*")

    assert [[e["id"] for e in p["results"]] for p in pages] == [[a["id"]] for a in accepted]
    assert all(e["data"] == "y" * 500 for p in pages for e in p["results"])


async def test_a_page_within_the_byte_budget_still_stops_at_the_limit(api_key):
    await publish_topics(api_key, "a", "b", "c")
    await wait_until_logged(api_key, 3)
    page = await history(api_key, limit=3)
    assert [e["topic"] for e in page["results"]] == ["a", "b", "c"]
    assert page["next"] is not None
    assert (await history(api_key, after=page["results"][-1]["id"]))["results"] == []
