"""Subscribe requests that are not allowed are refused with a reason a client can show: a close
code and a last error frame on the WebSocket, a JSON HTTP error before any SSE stream."""

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.e2e.conftest import eventually, publish, stats

pytestmark = pytest.mark.e2e


def assert_ws_refused(refused, code: int) -> None:
    """Closed with `code`, right after a last frame that says why."""
    assert refused.code == code, f"closed with {refused.code}, frames {refused.frames}"
    assert refused.frames, "the reason is sent as a last frame before the close"
    last = refused.frames[-1]
    assert last["type"] == "error"
    assert last["code"] == code
    assert isinstance(last["detail"], str)
    assert last["detail"]


def assert_sse_refused(refused, status: int) -> None:
    """A plain JSON HTTP error, not a stream."""
    assert refused.status == status, (refused.status, refused.body)
    assert refused.headers["content-type"].startswith("application/json")
    assert refused.body["detail"]
    if status == 401:
        assert refused.headers["www-authenticate"].startswith("Bearer")


async def test_a_subscriber_without_credentials_is_refused_as_unauthenticated(hub, subscribers):
    assert_ws_refused(await subscribers.ws_refused(hub), 4401)
    assert_sse_refused(await subscribers.sse_refused(hub), 401)


@pytest.mark.parametrize(
    "key",
    ["ehk_00000000_thisKeyWasNeverIssuedByThisHubAtAll000000000", "garbage"],
    ids=["unknown", "garbage"],
)
async def test_a_subscriber_with_an_unknown_key_is_refused_as_unauthenticated(
    hub, subscribers, key
):
    assert_ws_refused(await subscribers.ws_refused(hub, key), 4401)
    assert_sse_refused(await subscribers.sse_refused(hub, key), 401)


async def test_a_subscriber_with_a_revoked_key_is_refused_as_unauthenticated(hub, subscribers):
    tenant = hub.tenant()
    await hub.revoke(tenant.key)

    assert_ws_refused(await subscribers.ws_refused(hub, tenant.key), 4401)
    assert_sse_refused(await subscribers.sse_refused(hub, tenant.key), 401)


async def test_a_key_without_the_subscribe_scope_is_refused_as_forbidden(hub, subscribers):
    tenant = hub.tenant(extra_keys=("publish,history",))
    key = tenant.keys["publish,history"]

    assert_ws_refused(await subscribers.ws_refused(hub, key), 4403)
    assert_sse_refused(await subscribers.sse_refused(hub, key), 403)


async def test_a_subscriber_of_a_suspended_tenant_is_refused_as_forbidden(hub, subscribers):
    tenant = hub.tenant()
    await hub.suspend(tenant)

    ws = await subscribers.ws_refused(hub, tenant.key)
    sse = await subscribers.sse_refused(hub, tenant.key)

    assert_ws_refused(ws, 4403)
    assert "suspended" in ws.frames[-1]["detail"]
    assert_sse_refused(sse, 403)
    assert "suspended" in sse.body["detail"]


# Contract v2: a subscription holds at most 100 patterns. Short ones, so that the request line
# stays far below what daphne reads (about 16 KiB).
MAX_PATTERNS = 100
ONE_HUNDRED_TOPICS = ",".join(f"t{i}" for i in range(MAX_PATTERNS))
ONE_HUNDRED_AND_ONE_TOPICS = ",".join(f"t{i}" for i in range(MAX_PATTERNS + 1))


@pytest.mark.parametrize(
    "topics",
    ["has space", "orders.**", "*.created", "a,,b", "x" * 202, ONE_HUNDRED_AND_ONE_TOPICS],
    ids=["space", "double-star", "star-first", "empty-entry", "too-long", "too-many"],
)
async def test_malformed_topics_are_refused_as_a_bad_request(hub, tenant, subscribers, topics):
    assert_ws_refused(await subscribers.ws_refused(hub, tenant.key, topics=topics), 4400)
    assert_sse_refused(await subscribers.sse_refused(hub, tenant.key, topics=topics), 400)


async def test_a_subscription_of_exactly_100_patterns_is_admitted(hub, tenant, subscribers):
    ws = await subscribers.ws(hub, tenant.key, topics=ONE_HUNDRED_TOPICS)
    sse = await subscribers.sse(hub, tenant.key, topics=ONE_HUNDRED_TOPICS)
    await ws.welcome()
    await sse.welcome()


async def test_a_tenant_over_its_connection_limit_is_refused_with_429(hub, api, subscribers):
    tenant = hub.tenant("small", max_connections=2)
    first = await subscribers.ws(hub, tenant.key)
    second = await subscribers.sse(hub, tenant.key)
    await first.welcome()
    await second.welcome()

    ws = await subscribers.ws_refused(hub, tenant.key)
    sse = await subscribers.sse_refused(hub, tenant.key)

    assert_ws_refused(ws, 4429)
    assert_sse_refused(sse, 429)
    assert int(sse.headers["retry-after"]) >= 1
    assert (await stats(api, hub, tenant.key))["connections"] == {"websocket": 1, "sse": 1}


async def test_a_freed_connection_slot_can_be_taken_again(hub, api, subscribers):
    tenant = hub.tenant("small", max_connections=1)
    first = await subscribers.ws(hub, tenant.key)
    await first.welcome()
    await first.close()

    async def slot_free():
        return (await stats(api, hub, tenant.key))["connections"]["websocket"] == 0

    await eventually(slot_free, 5, "the closed connection to be released")
    second = await subscribers.ws(hub, tenant.key)
    await second.welcome()


async def test_refused_subscribers_do_not_count_as_connections(hub, api, subscribers):
    tenant = hub.tenant()
    for topics in ("bad topic", "orders.**"):
        await subscribers.ws_refused(hub, tenant.key, topics=topics)
        await subscribers.sse_refused(hub, tenant.key, topics=topics)

    assert (await stats(api, hub, tenant.key))["connections"] == {"websocket": 0, "sse": 0}


@pytest.mark.parametrize("origin", ["http://evil.example", "http://localhost.evil.example", "null"])
async def test_a_websocket_from_an_origin_not_allowed_is_refused_at_the_handshake(
    hub, tenant, subscribers, origin
):
    with pytest.raises(InvalidStatus) as refused:
        await subscribers.ws(hub, tenant.key, origin=origin)

    assert refused.value.response.status_code == 403


async def test_a_websocket_from_an_allowed_origin_is_admitted(hub, tenant, api, subscribers):
    ws = await subscribers.ws(hub, tenant.key, origin=f"http://127.0.0.1:{hub.port}")
    await ws.welcome()

    accepted = await publish(api, hub, tenant.key, "hello", 1)

    assert [e["id"] for e in await ws.events(1)] == [accepted["id"]]


async def test_an_sse_request_that_is_not_a_get_is_refused_with_405(hub, tenant, api):
    response = await api.post(f"{hub.url}/sse/v1/events", headers=tenant.auth)

    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/json")


async def test_a_websocket_to_an_unknown_path_is_refused_without_a_500(hub, tenant):
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(
            f"{hub.ws_url}/ws/v1/nothing-here",
            additional_headers=tenant.auth,
            proxy=None,
            open_timeout=5,
        )

    assert 400 <= refused.value.response.status_code < 500


# The hub re-checks the credentials of live connections every couple of seconds.
RECHECKED_WITHIN = 10.0


async def test_a_websocket_is_closed_with_4403_when_its_key_is_revoked(hub, subscribers):
    tenant = hub.tenant()
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()

    await hub.revoke(tenant.key.split("_")[1])  # by its visible prefix, as an operator would

    assert await ws.closed(within=RECHECKED_WITHIN) == 4403
    assert ws.received[-1].get("code") == 4403, ws.received


async def test_a_websocket_is_closed_with_4403_when_its_tenant_is_suspended(hub, subscribers):
    tenant = hub.tenant()
    ws = await subscribers.ws(hub, tenant.key)
    await ws.welcome()

    await hub.suspend(tenant)

    assert await ws.closed(within=RECHECKED_WITHIN) == 4403
    assert "suspended" in ws.received[-1].get("detail", ""), ws.received


async def test_an_sse_stream_ends_when_its_key_is_revoked(hub, subscribers):
    tenant = hub.tenant()
    sse = await subscribers.sse(hub, tenant.key)
    await sse.welcome()

    await hub.revoke(tenant.key)

    await sse.ended(within=RECHECKED_WITHIN)
    assert (await subscribers.sse_refused(hub, tenant.key)).status == 401


async def test_connections_of_other_keys_survive_a_revocation(hub, api, subscribers):
    tenant = hub.tenant(extra_keys=("subscribe",))
    doomed = await subscribers.ws(hub, tenant.keys["subscribe"])
    survivor = await subscribers.ws(hub, tenant.key)
    await doomed.welcome()
    await survivor.welcome()

    await hub.revoke(tenant.keys["subscribe"])
    assert await doomed.closed(within=RECHECKED_WITHIN) == 4403

    assert survivor.open
    accepted = await publish(api, hub, tenant.key, "still.here", 1)
    assert [e["id"] for e in await survivor.events(1)] == [accepted["id"]]
