"""Every refusal of the REST API is a clear JSON error with the status the contract names, never
a 500 and never an HTML page."""

import asyncio
import json

import httpx
import pytest

from tests.clients import bearer
from tests.e2e.conftest import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    MAX_EVENT_BYTES,
    eventually,
    history,
    publish,
    stats,
)

pytestmark = pytest.mark.e2e


def assert_json_error(response: httpx.Response, status: int) -> dict:
    """The response has `status` and a JSON body (DRF style: `detail`, or field errors)."""
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict)
    assert body, "an error says what is wrong"
    return body


async def post_event(api, hub, key: str | None, body, **kw) -> httpx.Response:
    headers = {**(bearer(key) if key else {}), **kw.pop("headers", {})}
    if isinstance(body, (bytes, str)):
        return await api.post(f"{hub.url}/api/v1/events", content=body, headers=headers, **kw)
    return await api.post(f"{hub.url}/api/v1/events", json=body, headers=headers, **kw)


async def post_batch(api, hub, key: str, events) -> httpx.Response:
    return await api.post(
        f"{hub.url}/api/v1/events/batch", json={"events": events}, headers=bearer(key)
    )


# 400 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"topic": "has space", "data": 1}, "topic"),
        ({"topic": "", "data": 1}, "topic"),
        ({"topic": "x" * 201, "data": 1}, "topic"),
        ({"topic": "wild.*", "data": 1}, "topic"),
        ({"data": 1}, "topic"),
        ({"topic": "ok"}, "data"),
        ({"topic": "ok", "type": "bad type", "data": 1}, "type"),
    ],
    ids=[
        "space-in-topic",
        "empty-topic",
        "topic-too-long",
        "pattern-as-topic",
        "missing-topic",
        "missing-data",
        "bad-type",
    ],
)
async def test_it_rejects_an_invalid_event_with_400_naming_the_field(hub, tenant, api, body, field):
    response = await post_event(api, hub, tenant.key, body)

    errors = assert_json_error(response, 400)
    assert field in errors


@pytest.mark.parametrize(
    "raw",
    [b'{"topic": "ok", "data": ', b"not json at all", b'{"topic": "ok", "data": NaN}', b""],
    ids=["truncated", "garbage", "nan", "empty"],
)
async def test_it_rejects_a_body_that_is_not_valid_json_with_400(hub, tenant, api, raw):
    response = await post_event(
        api, hub, tenant.key, raw, headers={"Content-Type": "application/json"}
    )

    assert_json_error(response, 400)


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"null"], ids=["list", "string", "null"])
async def test_it_rejects_a_json_body_that_is_not_an_object_with_400(hub, tenant, api, raw):
    response = await post_event(
        api, hub, tenant.key, raw, headers={"Content-Type": "application/json"}
    )

    assert_json_error(response, 400)


async def test_it_rejects_data_nested_too_deeply_with_400(hub, tenant, api):
    data: list = []
    for _ in range(40):
        data = [data]

    response = await post_event(api, hub, tenant.key, {"topic": "deep", "data": data})

    assert "data" in assert_json_error(response, 400)


async def test_it_rejects_a_batch_over_the_limit_with_400(hub, tenant, api):
    events = [{"topic": "bulk", "data": i} for i in range(MAX_BATCH + 1)]

    response = await post_batch(api, hub, tenant.key, events)

    assert "events" in assert_json_error(response, 400)


async def test_it_accepts_a_batch_at_the_limit(hub, tenant, api):
    events = [{"topic": "bulk", "data": i} for i in range(MAX_BATCH)]

    response = await post_batch(api, hub, tenant.key, events)

    assert response.status_code == 202
    assert len(response.json()["events"]) == MAX_BATCH


async def test_it_rejects_an_empty_batch_with_400(hub, tenant, api):
    response = await post_batch(api, hub, tenant.key, [])

    assert "events" in assert_json_error(response, 400)


async def test_a_batch_with_one_bad_event_is_refused_whole(hub, tenant, api, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()
    events = [{"topic": "ok", "data": 1}, {"topic": "not ok", "data": 2}]

    response = await post_batch(api, hub, tenant.key, events)

    assert "events" in assert_json_error(response, 400)
    await publish(api, hub, tenant.key, "ok", "fence")
    assert [e["data"] for e in await ws.until("fence")] == ["fence"]

    async def fence_logged():
        return await history(api, hub, tenant.key)

    logged = await eventually(fence_logged, 5, "the fence in the log")
    assert [e["data"] for e in logged] == ["fence"]
    assert (await stats(api, hub, tenant.key))["events"]["accepted"] == 1


@pytest.mark.parametrize(
    "params",
    ["after=garbage", "after=12", "limit=0", "limit=abc", "topic=bad%20topic", "topic=a**"],
)
async def test_it_rejects_a_bad_history_query_with_400(hub, tenant, api, params):
    response = await api.get(f"{hub.url}/api/v1/events?{params}", headers=tenant.auth)

    assert_json_error(response, 400)


@pytest.mark.parametrize(
    "body",
    [
        {"topics": ["ok"], "ttl": 0},
        {"topics": ["ok"], "ttl": 86401},
        {"topics": ["bad topic"], "ttl": 60},
        {"topics": [], "ttl": 60},
        {"topics": "orders.*", "ttl": 60},
    ],
    ids=["ttl-zero", "ttl-over-a-day", "bad-pattern", "no-topics", "topics-not-a-list"],
)
async def test_it_rejects_a_bad_token_request_with_400(hub, tenant, api, body):
    response = await api.post(f"{hub.url}/api/v1/tokens", json=body, headers=tenant.auth)

    assert_json_error(response, 400)


# 401 ---------------------------------------------------------------------------------------

ENDPOINTS = [
    ("POST", "/api/v1/events", {"topic": "ok", "data": 1}),
    ("POST", "/api/v1/events/batch", {"events": [{"topic": "ok", "data": 1}]}),
    ("GET", "/api/v1/events", None),
    ("POST", "/api/v1/tokens", {"topics": ["*"], "ttl": 60}),
    ("GET", "/api/v1/stats", None),
]
ENDPOINT_IDS = ["publish", "batch", "history", "tokens", "stats"]


async def call(api, hub, method, path, body, headers) -> httpx.Response:
    return await api.request(method, f"{hub.url}{path}", json=body, headers=headers)


def assert_unauthenticated(response: httpx.Response) -> None:
    assert "detail" in assert_json_error(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
async def test_it_rejects_a_request_without_a_key_with_401(hub, api, method, path, body):
    response = await call(api, hub, method, path, body, {})

    assert_unauthenticated(response)


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer ehk_00000000_thisKeyWasNeverIssuedByThisHubAtAll000000000",
        "Bearer not-a-key",
        "Bearer",
        "Bearer two words",
        "Basic dXNlcjpwYXNz",
    ],
    ids=["unknown-key", "garbage-key", "no-credential", "two-words", "basic-auth"],
)
async def test_it_rejects_an_unknown_or_malformed_key_with_401(hub, api, authorization):
    response = await post_event(
        api, hub, None, {"topic": "ok", "data": 1}, headers={"Authorization": authorization}
    )

    assert_unauthenticated(response)


async def test_it_rejects_a_revoked_key_with_401(hub, api):
    tenant = hub.tenant()
    await publish(api, hub, tenant.key, "before", 1)

    await hub.revoke(tenant.key)

    for method, path, body in ENDPOINTS:
        assert_unauthenticated(await call(api, hub, method, path, body, tenant.auth))


# 403 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scopes", "method", "path", "body"),
    [
        ("subscribe,history", *ENDPOINTS[0]),
        ("subscribe,history", *ENDPOINTS[1]),
        ("publish,subscribe", *ENDPOINTS[2]),
        ("publish,history", *ENDPOINTS[3]),
    ],
    ids=["publish", "batch", "history", "tokens"],
)
async def test_it_refuses_a_key_without_the_scope_with_403(hub, api, scopes, method, path, body):
    tenant = hub.tenant(extra_keys=(scopes,))

    response = await call(api, hub, method, path, body, bearer(tenant.keys[scopes]))

    assert "scope" in assert_json_error(response, 403)["detail"]


async def test_it_refuses_every_request_of_a_suspended_tenant_with_403(hub, api):
    tenant = hub.tenant()
    await publish(api, hub, tenant.key, "before", 1)

    await hub.suspend(tenant)

    for method, path, body in ENDPOINTS:
        response = await call(api, hub, method, path, body, tenant.auth)
        assert "suspended" in assert_json_error(response, 403)["detail"]


# 413 ---------------------------------------------------------------------------------------


async def test_it_rejects_an_event_over_the_size_limit_with_413(hub, tenant, api):
    data = "x" * MAX_EVENT_BYTES

    response = await post_event(api, hub, tenant.key, {"topic": "big", "data": data})

    assert "detail" in assert_json_error(response, 413)


async def test_it_accepts_an_event_at_the_size_limit(hub, tenant, api):
    data = "x" * (MAX_EVENT_BYTES - 2)  # its JSON adds two quotes

    response = await post_event(api, hub, tenant.key, {"topic": "big", "data": data})

    assert response.status_code == 202, response.text


async def test_it_rejects_a_batch_holding_an_event_over_the_size_limit_with_413(hub, tenant, api):
    events = [{"topic": "ok", "data": 1}, {"topic": "big", "data": "x" * MAX_EVENT_BYTES}]

    response = await post_batch(api, hub, tenant.key, events)

    assert_json_error(response, 413)


async def test_it_rejects_a_body_over_the_size_limit_with_413(hub, tenant, api):
    # Each event is small enough; the request as a whole is not.
    events = [{"topic": "bulk", "data": "x" * (MAX_EVENT_BYTES - 100)} for _ in range(MAX_BATCH)]
    assert len(json.dumps({"events": events})) > MAX_BODY_BYTES

    response = await post_batch(api, hub, tenant.key, events)

    assert "detail" in assert_json_error(response, 413)


# 415 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("text/plain", b'{"topic": "ok", "data": 1}'),
        ("application/x-www-form-urlencoded", b"topic=ok&data=1"),
        ("application/xml", b"<event/>"),
    ],
    ids=["text", "form", "xml"],
)
async def test_it_rejects_a_body_that_is_not_json_with_415(hub, tenant, api, content_type, raw):
    response = await post_event(api, hub, tenant.key, raw, headers={"Content-Type": content_type})

    assert "detail" in assert_json_error(response, 415)


# 429 ---------------------------------------------------------------------------------------


async def burst(api, hub, key: str, count: int) -> list[httpx.Response]:
    """`count` publishes sent at once, as a busy publisher would."""
    return await asyncio.gather(
        *(post_event(api, hub, key, {"topic": "t", "data": i}) for i in range(count))
    )


async def test_it_throttles_a_burst_over_the_publish_rate_with_429_and_retry_after(hub, api):
    tenant = hub.tenant("limited", publish_rate=2)

    answers = await burst(api, hub, tenant.key, 6)

    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(202) >= 2, "the burst allowance is the rate"
    assert 429 in statuses
    for throttled in (r for r in answers if r.status_code == 429):
        assert "detail" in assert_json_error(throttled, 429)
        assert int(throttled.headers["retry-after"]) >= 1


async def test_a_throttled_event_is_neither_delivered_nor_logged(hub, api, subscribers):
    tenant = hub.tenant("limited", publish_rate=2)
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()

    answers = await burst(api, hub, tenant.key, 6)

    accepted = sorted((r.json() for r in answers if r.status_code == 202), key=lambda a: a["seq"])
    assert len(accepted) < 6
    assert (await stats(api, hub, tenant.key))["events"]["accepted"] == len(accepted)
    assert [e["id"] for e in await ws.events(len(accepted))] == [a["id"] for a in accepted]
    fence = await eventually(lambda: try_publish(api, hub, tenant.key), 5, "the rate to allow")
    assert [e["id"] for e in await ws.events(1)] == [fence["id"]], "no throttled event came"


async def try_publish(api, hub, key: str) -> dict | None:
    response = await post_event(api, hub, key, {"topic": "t", "data": "fence"})
    return response.json() if response.status_code == 202 else None


async def test_a_batch_larger_than_the_publish_rate_is_refused_with_429(hub, api):
    tenant = hub.tenant("limited", publish_rate=2)

    response = await post_batch(api, hub, tenant.key, [{"topic": "t", "data": i} for i in range(3)])

    assert_json_error(response, 429)
    assert int(response.headers["retry-after"]) >= 1


async def test_the_publish_rate_of_one_tenant_does_not_throttle_another(hub, api):
    limited = hub.tenant("limited", publish_rate=2)
    other = hub.tenant()

    for i in range(4):
        await post_event(api, hub, limited.key, {"topic": "t", "data": i})

    for i in range(5):
        await publish(api, hub, other.key, "t", i)


# Never a 500, never HTML -------------------------------------------------------------------

# (method, path, body); each is sent as JSON with a valid key.
HOSTILE = [
    ("GET", "/api/v1/nothing-here", None),
    ("GET", "/no/such/page", None),
    ("PUT", "/api/v1/events", b"{}"),
    ("DELETE", "/api/v1/events", None),
    ("GET", "/api/v1/events/batch", None),
    ("GET", "/api/v1/tokens", None),
    ("POST", "/api/v1/stats", b"{}"),
    ("POST", "/api/v1/events", b"\xff\xfe\x00garbage"),
    ("POST", "/api/v1/events", b"[" * 100_000),
    ("POST", "/api/v1/events", b'{"topic": "a", "data": 1e999}'),
    ("POST", "/api/v1/events", b'{"topic": ["a"], "data": 1}'),
    ("POST", "/api/v1/events", b'{"topic": "a", "data": 1, "type": null}'),
    ("POST", "/api/v1/events/batch", b'{"events": {"a": 1}}'),
    ("POST", "/api/v1/events/batch", b'{"events": [1, "x", null]}'),
    ("POST", "/api/v1/events/batch", b"[]"),
    ("POST", "/api/v1/tokens", b'{"topics": [null], "ttl": "x"}'),
    ("GET", "/api/v1/events?after=99999999999999999999999-abc", None),
    ("GET", "/api/v1/events?after=1-%00", None),
    ("GET", "/api/v1/events?limit=99999999999999999999999999", None),
    ("GET", "/api/v1/events?topic=%C3%A9t%C3%A9", None),
]


async def send_hostile(api, hub, tenant, method, path, raw) -> httpx.Response:
    headers = {"Content-Type": "application/json", **tenant.auth}
    return await api.request(method, f"{hub.url}{path}", content=raw, headers=headers)


@pytest.mark.parametrize(("method", "path", "raw"), HOSTILE)
async def test_hostile_requests_get_a_json_4xx_never_a_500_or_an_html_page(
    hub, tenant, api, method, path, raw
):
    response = await send_hostile(api, hub, tenant, method, path, raw)

    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert not response.text.lstrip().startswith("<")
    assert isinstance(response.json(), dict)


async def test_an_empty_idempotency_key_is_a_400(hub, tenant, api):
    response = await post_event(
        api, hub, tenant.key, {"topic": "a", "data": 1}, headers={"Idempotency-Key": ""}
    )

    assert_json_error(response, 400)


async def test_a_non_ascii_authorization_header_is_a_401_not_a_500(hub, api):
    response = await api.post(
        f"{hub.url}/api/v1/events",
        json={"topic": "a", "data": 1},
        headers=[(b"Authorization", "Bearer ehk_clé".encode())],
    )

    assert_unauthenticated(response)


async def test_bad_requests_do_not_disturb_live_connections(hub, tenant, api, subscribers):
    ws = await subscribers.ws(hub, tenant.key)
    sse = await subscribers.sse(hub, tenant.key)
    await ws.welcome()
    await sse.welcome()

    for method, path, raw in HOSTILE:
        response = await send_hostile(api, hub, tenant, method, path, raw)
        assert response.status_code >= 400
    accepted = await publish(api, hub, tenant.key, "after.the.storm", 1)

    assert [e["id"] for e in await ws.events(1)] == [accepted["id"]]
    assert [e["id"] for e in await sse.events(1)] == [accepted["id"]]


async def test_health_readiness_metrics_docs_and_the_js_client_answer(hub, api):
    assert (await api.get(f"{hub.url}/healthz")).status_code == 200
    ready = await api.get(f"{hub.url}/readyz")
    assert ready.status_code == 200
    metrics = await api.get(f"{hub.url}/metrics")
    assert metrics.status_code == 200
    assert "eventhub_" in metrics.text
    schema = await api.get(f"{hub.url}/api/schema/")
    assert schema.status_code == 200
    assert "/api/v1/events" in schema.text
    assert (await api.get(f"{hub.url}/api/docs/")).status_code == 200
    client = await api.get(f"{hub.url}/static/eventhub.js")
    assert client.status_code == 200
    assert "javascript" in client.headers["content-type"]
