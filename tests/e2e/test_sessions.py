"""A logged-in dashboard user may subscribe from the hub's own pages with the session cookie;
a non-browser client (no Origin) or another origin may never use that cookie."""

import pytest

from tests.e2e.conftest import publish

pytestmark = pytest.mark.e2e


def cookie(session: str) -> dict[str, str]:
    return {"Cookie": f"sessionid={session}"}


def same_origin(hub) -> str:
    return f"http://127.0.0.1:{hub.port}"


async def test_a_staff_session_subscribes_over_websocket_from_an_allowed_origin(
    hub, tenant, api, subscribers
):
    session = await hub.login(staff=True)
    ws = await subscribers.ws(
        hub, headers=cookie(session), origin=same_origin(hub), tenant=tenant.slug
    )
    await ws.welcome()

    accepted = await publish(api, hub, tenant.key, "orders.created", 1)

    assert [e["id"] for e in await ws.events(1)] == [accepted["id"]]


async def test_a_staff_session_subscribes_over_sse_from_the_same_origin(
    hub, tenant, api, subscribers
):
    session = await hub.login(staff=True)
    sse = await subscribers.sse(hub, headers=cookie(session), tenant=tenant.slug)
    await sse.welcome()

    accepted = await publish(api, hub, tenant.key, "orders.created", 1)

    assert [e["id"] for e in await sse.events(1)] == [accepted["id"]]


async def test_the_end_of_a_session_closes_its_websocket_with_a_reconnect_code(
    hub, tenant, subscribers
):
    session = await hub.login(staff=True)
    ws = await subscribers.ws(
        hub, headers=cookie(session), origin=same_origin(hub), tenant=tenant.slug
    )
    await ws.welcome()

    await hub.logout(session)

    # 1012: a browser that logged in again reconnects with its new session (daphne itself can
    # send no such code: the hub writes the close frame through its protocol).
    assert await ws.closed(within=8) == 1012
    refused = await subscribers.ws(
        hub, headers=cookie(session), origin=same_origin(hub), tenant=tenant.slug
    )
    assert await refused.closed() == 4401


async def test_a_websocket_without_origin_may_not_use_the_session_cookie(hub, tenant, subscribers):
    session = await hub.login(staff=True)

    refused = await subscribers.ws_refused(hub, headers=cookie(session), tenant=tenant.slug)

    assert refused.code == 4401


async def test_an_sse_request_from_another_origin_may_not_use_the_session_cookie(
    hub, tenant, subscribers
):
    session = await hub.login(staff=True)

    refused = await subscribers.sse_refused(
        hub,
        headers={**cookie(session), "Origin": "http://evil.example"},
        tenant=tenant.slug,
    )

    assert refused.status == 401


async def test_a_session_must_name_its_tenant(hub, subscribers):
    session = await hub.login(staff=True)

    refused = await subscribers.ws_refused(hub, headers=cookie(session), origin=same_origin(hub))

    assert refused.code == 4400


async def test_a_user_may_not_subscribe_to_a_tenant_they_do_not_belong_to(hub, tenant, subscribers):
    session = await hub.login(staff=False)

    ws = await subscribers.ws_refused(
        hub, headers=cookie(session), origin=same_origin(hub), tenant=tenant.slug
    )
    sse = await subscribers.sse_refused(hub, headers=cookie(session), tenant=tenant.slug)

    assert ws.code == 4403
    assert sse.status == 403


async def test_a_session_subscription_gets_only_its_tenants_events(hub, api, subscribers):
    acme, globex = hub.tenant("acme"), hub.tenant("globex")
    session = await hub.login(staff=True)
    ws = await subscribers.ws(
        hub, headers=cookie(session), origin=same_origin(hub), tenant=acme.slug
    )
    await ws.welcome()

    await publish(api, hub, globex.key, "shared", "globex")
    await publish(api, hub, acme.key, "shared", "fence")

    assert [e["data"] for e in await ws.until("fence")] == ["fence"]


async def test_a_forged_session_cookie_is_not_a_credential(hub, tenant, subscribers):
    forged = cookie("0123456789abcdefghijklmnopqrstuv")

    ws = await subscribers.ws_refused(
        hub, headers=forged, origin=same_origin(hub), tenant=tenant.slug
    )
    sse = await subscribers.sse_refused(hub, headers=forged, tenant=tenant.slug)

    assert ws.code == 4401
    assert sse.status == 401
