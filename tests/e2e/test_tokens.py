"""Subscriber tokens let a browser subscribe, without an API key, to the topics they grant and
to nothing else."""

import asyncio
import time
from datetime import UTC, datetime

import pytest

from tests.clients import bearer
from tests.e2e.conftest import publish

pytestmark = pytest.mark.e2e


async def issue(api, hub, key: str, topics: list[str], ttl: int = 600) -> dict:
    response = await api.post(
        f"{hub.url}/api/v1/tokens", json={"topics": topics, "ttl": ttl}, headers=bearer(key)
    )
    assert response.status_code == 201, response.text
    return response.json()


def tampered(token: str) -> str:
    """The token with one character of its signature changed."""
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


async def test_it_issues_a_token_that_expires_after_its_ttl(hub, tenant, api):
    before = datetime.now(UTC)

    issued = await issue(api, hub, tenant.key, ["orders.*"], ttl=120)

    assert set(issued) == {"token", "id", "expires_at"}
    assert isinstance(issued["token"], str)
    assert tenant.key not in issued["token"]
    expires_at = datetime.fromisoformat(issued["expires_at"])
    assert 110 <= (expires_at - before).total_seconds() <= 130


async def test_a_token_subscribes_on_both_transports_to_what_it_grants(
    hub, tenant, api, subscribers
):
    token = (await issue(api, hub, tenant.key, ["orders.*"]))["token"]
    ws = await subscribers.ws(hub, token=token, topics="orders.*")
    sse = await subscribers.sse(hub, token=token, topics="orders.*")
    await ws.welcome()
    await sse.welcome()

    created = await publish(api, hub, tenant.key, "orders.created", "created")
    await publish(api, hub, tenant.key, "billing.paid", "paid")
    fence = await publish(api, hub, tenant.key, "orders.fence", "fence")

    for client in (ws, sse):
        assert [e["id"] for e in await client.until("fence")] == [created["id"], fence["id"]]


async def test_a_token_may_subscribe_to_a_narrower_pattern_than_it_grants(
    hub, tenant, api, subscribers
):
    token = (await issue(api, hub, tenant.key, ["orders.*", "news"]))["token"]
    ws = await subscribers.ws(hub, token=token, topics="orders.created,news")
    await ws.welcome()

    await publish(api, hub, tenant.key, "orders.shipped", "shipped")
    await publish(api, hub, tenant.key, "news", "fence")

    assert [e["data"] for e in await ws.until("fence")] == ["fence"]


async def test_a_token_for_everything_gets_every_topic(hub, tenant, api, subscribers):
    token = (await issue(api, hub, tenant.key, ["*"]))["token"]
    sse = await subscribers.sse(hub, token=token)
    await sse.welcome()

    await publish(api, hub, tenant.key, "a", 1)
    await publish(api, hub, tenant.key, "b.c", 2)

    assert [e["data"] for e in await sse.events(2)] == [1, 2]


@pytest.mark.parametrize(
    "topics", ["billing.*", "*", "orders*", "orders.created,billing.paid", None]
)
async def test_a_pattern_outside_the_grant_is_refused_as_forbidden(
    hub, tenant, api, subscribers, topics
):
    token = (await issue(api, hub, tenant.key, ["orders.*"]))["token"]

    ws = await subscribers.ws_refused(hub, token=token, topics=topics)
    sse = await subscribers.sse_refused(hub, token=token, topics=topics)

    assert ws.code == 4403
    assert ws.frames[-1]["code"] == 4403
    assert sse.status == 403
    assert sse.body["detail"]


async def test_a_tampered_token_is_refused_as_unauthenticated(hub, tenant, api, subscribers):
    token = tampered((await issue(api, hub, tenant.key, ["*"]))["token"])

    ws = await subscribers.ws_refused(hub, token=token)
    sse = await subscribers.sse_refused(hub, token=token)

    assert ws.code == 4401
    assert ws.frames[-1]["code"] == 4401
    assert sse.status == 401
    assert sse.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("token", ["garbage", "a:b:c", "eyJ0IjoxfQ:1abc:sig"])
async def test_a_made_up_token_is_refused_as_unauthenticated(hub, subscribers, token):
    assert (await subscribers.ws_refused(hub, token=token)).code == 4401
    assert (await subscribers.sse_refused(hub, token=token)).status == 401


async def test_an_expired_token_is_refused_as_unauthenticated(hub, tenant, api, subscribers):
    issued = await issue(api, hub, tenant.key, ["*"], ttl=1)
    expires_at = datetime.fromisoformat(issued["expires_at"]).timestamp()

    # Time has to pass here: the token must be past its expiry.
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.2)

    ws = await subscribers.ws_refused(hub, token=issued["token"])
    sse = await subscribers.sse_refused(hub, token=issued["token"])
    assert ws.code == 4401
    assert sse.status == 401


async def test_a_token_of_a_revoked_key_is_refused(hub, api, subscribers):
    tenant = hub.tenant()
    token = (await issue(api, hub, tenant.key, ["*"]))["token"]

    await hub.revoke(tenant.key)

    assert (await subscribers.ws_refused(hub, token=token)).code == 4401
    assert (await subscribers.sse_refused(hub, token=token)).status == 401


async def test_a_token_of_a_suspended_tenant_is_refused(hub, api, subscribers):
    tenant = hub.tenant()
    token = (await issue(api, hub, tenant.key, ["*"]))["token"]

    await hub.suspend(tenant)

    assert (await subscribers.ws_refused(hub, token=token)).code == 4403
    assert (await subscribers.sse_refused(hub, token=token)).status == 403


async def test_a_token_does_not_work_as_an_api_key(hub, tenant, api):
    token = (await issue(api, hub, tenant.key, ["*"]))["token"]

    response = await api.post(
        f"{hub.url}/api/v1/events", json={"topic": "a", "data": 1}, headers=bearer(token)
    )

    assert response.status_code == 401


async def test_a_token_reaches_only_its_own_tenant(hub, api, subscribers):
    acme, globex = hub.tenant("acme"), hub.tenant("globex")
    token = (await issue(api, hub, acme.key, ["*"]))["token"]
    ws = await subscribers.ws(hub, token=token)
    await ws.welcome()

    await publish(api, hub, globex.key, "shared", "globex")
    await publish(api, hub, acme.key, "shared", "fence")

    assert [e["data"] for e in await ws.until("fence")] == ["fence"]


# Contract v2: expiry, refresh, revocation --------------------------------------------------


async def test_a_connection_ends_when_its_token_expires(hub, tenant, api, subscribers):
    issued = await issue(api, hub, tenant.key, ["*"], ttl=2)
    ws = await subscribers.ws(hub, token=issued["token"])
    sse = await subscribers.sse(hub, token=issued["token"])
    assert (await ws.welcome())["token_expires_at"] == issued["expires_at"]
    await sse.welcome()

    assert await ws.closed(within=5) == 4401
    await sse.ended(within=5)
    assert time.time() >= datetime.fromisoformat(issued["expires_at"]).timestamp()


async def test_a_websocket_refreshes_its_token_without_reconnecting(hub, tenant, api, subscribers):
    first = await issue(api, hub, tenant.key, ["*"], ttl=2)
    second = await issue(api, hub, tenant.key, ["*"], ttl=600)
    ws = await subscribers.ws(hub, token=first["token"])
    await ws.welcome()

    await ws.send({"type": "refresh", "token": second["token"]})
    refreshed = await ws.next_frame()
    await asyncio.sleep(
        max(0.0, datetime.fromisoformat(first["expires_at"]).timestamp() - time.time()) + 0.5
    )
    fence = await publish(api, hub, tenant.key, "after-expiry", "fence")

    assert refreshed == {"type": "refreshed", "expires_at": second["expires_at"]}
    assert [e["id"] for e in await ws.until("fence")] == [fence["id"]]


async def test_revoking_a_token_closes_its_connections_within_five_seconds(
    hub, tenant, api, subscribers
):
    issued = await issue(api, hub, tenant.key, ["*"])
    ws = await subscribers.ws(hub, token=issued["token"])
    sse = await subscribers.sse(hub, token=issued["token"])
    await ws.welcome()
    await sse.welcome()

    response = await api.delete(
        f"{hub.url}/api/v1/tokens/{issued['id']}", headers=bearer(tenant.key)
    )

    assert response.status_code == 204
    assert await ws.closed(within=5) == 4403
    await sse.ended(within=5)
    assert (await subscribers.ws_refused(hub, token=issued["token"])).code == 4401
    assert (await subscribers.sse_refused(hub, token=issued["token"])).status == 401


async def test_revoking_an_unknown_token_is_not_found(hub, tenant, api):
    response = await api.delete(f"{hub.url}/api/v1/tokens/tk_unknown", headers=bearer(tenant.key))

    assert response.status_code == 404
    assert response.json()["detail"]
