"""Dashboard users subscribing with their session cookie, and the Origin rules that keep other
sites from riding on it (cross-site WebSocket hijacking)."""

import json

import pytest
from asgiref.sync import sync_to_async
from channels import auth as channels_auth
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.test import Client

from eventhub.asgi import application
from tenants.services import tenant_set_active
from tests.conftest import asgi_client
from tests.factories import ACTOR
from tests.inprocess import publish
from tests.streams import test_sse_consumer as sse
from tests.streams.test_revocation import stream_ended

pytestmark = pytest.mark.django_db(transaction=True)

# pytest-django adds `testserver` to ALLOWED_HOSTS, which is also the Origin allow-list here.
SAME_SITE = "http://testserver"
FOREIGN_ORIGINS = [
    "http://evil.example",
    "https://testserver.evil.example",
    "http://localhost.evil.example",
    "null",
    "file://",
]


def login(user) -> str:
    """The session cookie a browser holds after logging in as `user`."""
    client = Client()
    client.force_login(user)
    name = django_settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


@pytest.fixture
def staff_cookie(db):
    user = get_user_model().objects.create_user("staff", password=None, is_staff=True)
    return login(user)


@pytest.fixture
def member_cookie(tenant):
    user = get_user_model().objects.create_user("member", password=None)
    tenant.members.add(user)
    return login(user)


@pytest.fixture
def inactive_cookie(db):
    user = get_user_model().objects.create_user("gone", password=None, is_staff=True)
    cookie = login(user)
    user.is_active = False
    user.save()
    return cookie


def browser_ws(cookie: str | None, origin: str | None, query: str = "", key: str | None = None):
    headers = []
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    return WebsocketCommunicator(application, f"/ws/v1/events?{query}", headers=headers)


async def welcomed(ws: WebsocketCommunicator) -> WebsocketCommunicator:
    connected, _ = await ws.connect()
    assert connected
    welcome = await ws.receive_json_from(timeout=2)
    assert welcome["type"] == "welcome", welcome
    return ws


async def refused_code(ws: WebsocketCommunicator) -> int:
    connected, _ = await ws.connect()
    assert connected
    error = await ws.receive_json_from(timeout=2)
    assert error["type"] == "error", error
    assert (await ws.receive_output(timeout=2))["code"] == error["code"]
    return error["code"]


def sse_headers(cookie: str, origin: str | None = None) -> list[tuple[str, str]]:
    return [("Cookie", cookie)] + ([("Origin", origin)] if origin else [])


# Who may subscribe --------------------------------------------------------------------------


async def test_a_staff_user_subscribes_to_a_tenant_with_the_session(
    staff_cookie, tenant, api_key, other_key
):
    ws = await welcomed(browser_ws(staff_cookie, SAME_SITE, f"tenant={tenant.slug}"))
    await publish(other_key, "orders.created", "theirs")
    accepted = await publish(api_key, "orders.created", "mine")
    event = await ws.receive_json_from(timeout=2)
    assert event["id"] == accepted["id"]
    assert event["data"] == "mine"
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()


async def test_only_a_request_with_a_cookie_looks_up_a_user(
    staff_cookie, tenant, api_key, monkeypatch
):
    lookups = []
    get_user = channels_auth.get_user

    async def counted(scope):
        lookups.append(scope["path"])
        return await get_user(scope)

    monkeypatch.setattr(channels_auth, "get_user", counted)

    by_key = await welcomed(browser_ws(None, None, key=api_key))
    by_session = await welcomed(browser_ws(staff_cookie, SAME_SITE, f"tenant={tenant.slug}"))

    assert lookups == ["/ws/v1/events"]  # the session's; a key needs no user
    await by_key.disconnect()
    await by_session.disconnect()


async def test_a_staff_user_may_subscribe_to_every_tenant(staff_cookie, other_tenant, other_key):
    ws = await welcomed(
        browser_ws(staff_cookie, SAME_SITE, f"tenant={other_tenant.slug}&topics=orders.*")
    )
    await publish(other_key, "users.x", "filtered out")
    await publish(other_key, "orders.x", "in")
    assert (await ws.receive_json_from(timeout=2))["data"] == "in"
    await ws.disconnect()


async def test_a_member_subscribes_to_their_tenant(member_cookie, tenant, api_key):
    ws = await welcomed(browser_ws(member_cookie, SAME_SITE, f"tenant={tenant.slug}"))
    await publish(api_key, "t", "mine")
    assert (await ws.receive_json_from(timeout=2))["data"] == "mine"
    await ws.disconnect()


@pytest.mark.parametrize("slug", ["other", "no-such-tenant"])
async def test_a_member_is_forbidden_any_other_tenant(member_cookie, other_tenant, slug):
    slug = other_tenant.slug if slug == "other" else slug
    ws = browser_ws(member_cookie, SAME_SITE, f"tenant={slug}")
    assert await refused_code(ws) == 4403
    refused = await sse.refusal(headers=sse_headers(member_cookie), tenant=slug)
    assert refused.status == 403
    # The same answer whether the tenant exists or not: nothing to enumerate.
    assert json.loads(refused.raw)["detail"] == "This user may not see that tenant."


async def test_a_session_must_name_its_tenant(staff_cookie):
    assert await refused_code(browser_ws(staff_cookie, SAME_SITE)) == 4400


async def test_a_deactivated_user_cannot_subscribe(inactive_cookie, tenant):
    ws = browser_ws(inactive_cookie, SAME_SITE, f"tenant={tenant.slug}")
    assert await refused_code(ws) == 4401


async def test_a_suspended_tenant_is_forbidden_to_its_dashboard_users(staff_cookie, tenant):
    await sync_to_async(tenant_set_active)(actor=ACTOR, tenant=tenant, active=False)
    ws = browser_ws(staff_cookie, SAME_SITE, f"tenant={tenant.slug}")
    assert await refused_code(ws) == 4403


async def test_suspending_a_tenant_closes_its_session_subscribers(staff_cookie, tenant):
    ws = await welcomed(browser_ws(staff_cookie, SAME_SITE, f"tenant={tenant.slug}"))
    await sync_to_async(tenant_set_active)(actor=ACTOR, tenant=tenant, active=False)
    error = await ws.receive_json_from(timeout=6)
    assert error["code"] == 4403
    assert (await ws.receive_output(timeout=1))["code"] == 4403
    await ws.disconnect()


async def closed_within_a_recheck(ws: WebsocketCommunicator) -> int:
    """The close code the hub's credential re-check (every 2 s) sends, after its reason."""
    error = await ws.receive_json_from(timeout=6)
    assert error["type"] == "error", error
    assert (await ws.receive_output(timeout=1))["code"] == error["code"]
    return error["code"]


def member_and_cookie(tenant):
    user = get_user_model().objects.create_user("leaving", password=None)
    tenant.members.add(user)
    return user, login(user)


async def test_removing_a_member_closes_their_session_subscriptions(tenant, api_key):
    user, cookie = await sync_to_async(member_and_cookie)(tenant)
    ws = await welcomed(browser_ws(cookie, SAME_SITE, f"tenant={tenant.slug}"))

    await sync_to_async(tenant.members.remove)(user)

    assert await closed_within_a_recheck(ws) == 4403
    await ws.disconnect()


async def test_deactivating_a_user_closes_their_session_subscriptions(staff_cookie, tenant):
    ws = await welcomed(browser_ws(staff_cookie, SAME_SITE, f"tenant={tenant.slug}"))

    await get_user_model().objects.filter(username="staff").aupdate(is_active=False)

    assert await closed_within_a_recheck(ws) == 4403
    await ws.disconnect()


async def test_the_end_of_a_session_closes_its_subscriptions_with_a_reconnect_code(tenant):
    _user, cookie = await sync_to_async(member_and_cookie)(tenant)
    ws = await welcomed(browser_ws(cookie, SAME_SITE, f"tenant={tenant.slug}"))
    session_key = cookie.split("=", 1)[1]

    # What logout does, and also logging in again (a new session key for the same user).
    await Session.objects.filter(session_key=session_key).adelete()

    # 1012, not 4403: a browser that logged in again reconnects with its new session ...
    closed = await ws.receive_output(timeout=6)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1012)
    await ws.disconnect()
    # ... while one that logged out is refused when it does.
    assert await refused_code(browser_ws(cookie, SAME_SITE, f"tenant={tenant.slug}")) == 4401


async def test_a_password_change_ends_the_users_session_subscriptions_for_good(tenant):
    # Django's remedy for a stolen session: change the password. Its live streams end too.
    user, cookie = await sync_to_async(member_and_cookie)(tenant)
    ws = await welcomed(browser_ws(cookie, SAME_SITE, f"tenant={tenant.slug}"))
    stream, _ = await sse.connect(headers=sse_headers(cookie), tenant=tenant.slug)

    def change_password() -> None:
        user.set_password("a new password, 8c1e")
        user.save()

    await sync_to_async(change_password)()

    assert await closed_within_a_recheck(ws) == 4401
    assert await stream_ended(stream)
    await ws.disconnect()
    await stream.close()
    # The old cookie no longer subscribes at all.
    assert await refused_code(browser_ws(cookie, SAME_SITE, f"tenant={tenant.slug}")) == 4401


async def test_other_session_subscribers_survive_a_removal(staff_cookie, tenant, api_key):
    user, cookie = await sync_to_async(member_and_cookie)(tenant)
    leaving = await welcomed(browser_ws(cookie, SAME_SITE, f"tenant={tenant.slug}"))
    staying = await welcomed(browser_ws(staff_cookie, SAME_SITE, f"tenant={tenant.slug}"))

    await sync_to_async(tenant.members.remove)(user)
    assert await closed_within_a_recheck(leaving) == 4403

    accepted = await publish(api_key, "t", "still here")
    assert (await staying.receive_json_from(timeout=2))["id"] == accepted["id"]
    await leaving.disconnect()
    await staying.disconnect()


# Origin rules: WebSocket --------------------------------------------------------------------


async def test_a_websocket_without_origin_cannot_use_the_session(staff_cookie, tenant):
    # Not a browser (browsers always send Origin on a WebSocket handshake): key or token only.
    ws = browser_ws(staff_cookie, None, f"tenant={tenant.slug}")
    assert await refused_code(ws) == 4401


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
async def test_a_websocket_from_another_site_is_refused_at_the_handshake(
    staff_cookie, tenant, api_key, origin
):
    # Refused before accept (daphne answers the handshake with 403), whatever it carries.
    for ws in (
        browser_ws(staff_cookie, origin, f"tenant={tenant.slug}"),
        browser_ws(None, origin, key=api_key),
    ):
        connected, _ = await ws.connect()
        assert not connected


async def test_an_allowed_origin_on_another_port_is_the_same_site(staff_cookie, tenant):
    # Hosts come from ALLOWED_HOSTS, which has no ports: any port of an allowed host passes.
    ws = await welcomed(browser_ws(staff_cookie, "http://localhost:3000", f"tenant={tenant.slug}"))
    await ws.disconnect()


async def test_explicit_allowed_origins_replace_the_host_list(staff_cookie, tenant, settings):
    settings.EVENTHUB_ALLOWED_ORIGINS = ["https://app.example.com"]
    ws = await welcomed(
        browser_ws(staff_cookie, "https://app.example.com/", f"tenant={tenant.slug}")
    )
    await ws.disconnect()
    for origin in (SAME_SITE, "http://app.example.com", "https://app.example.com:8443"):
        connected, _ = await browser_ws(staff_cookie, origin, f"tenant={tenant.slug}").connect()
        assert not connected, origin


async def test_a_browser_on_another_site_may_still_use_a_token(tenant, api_key, settings):
    settings.EVENTHUB_ALLOWED_ORIGINS = ["https://app.example.com"]
    async with asgi_client(api_key) as client:
        token = (await client.post("/api/v1/tokens", json={"topics": ["*"]})).json()["token"]
    ws = await welcomed(browser_ws(None, "https://app.example.com", f"token={token}"))
    await ws.disconnect()


# Origin rules: SSE --------------------------------------------------------------------------


async def test_a_same_origin_event_source_uses_the_session(staff_cookie, tenant, api_key):
    # EventSource sends no Origin to its own origin: the session counts.
    stream, welcome = await sse.connect(headers=sse_headers(staff_cookie), tenant=tenant.slug)
    assert welcome["type"] == "welcome"
    accepted = await publish(api_key, "t", "mine")
    (message,) = await stream.events(1)
    assert message["id"] == accepted["id"]
    await stream.close()


async def test_an_event_source_from_an_allowed_origin_uses_the_session(staff_cookie, tenant):
    stream, _ = await sse.connect(headers=sse_headers(staff_cookie, SAME_SITE), tenant=tenant.slug)
    await stream.close()


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
async def test_an_event_source_from_another_site_cannot_use_the_session(
    staff_cookie, tenant, origin
):
    refused = await sse.refusal(headers=sse_headers(staff_cookie, origin), tenant=tenant.slug)
    assert refused.status == 401
    assert refused.headers[b"www-authenticate"].startswith(b"Bearer")


async def test_an_event_source_from_another_site_may_still_use_a_token(tenant, api_key):
    async with asgi_client(api_key) as client:
        token = (await client.post("/api/v1/tokens", json={"topics": ["*"]})).json()["token"]
    stream, _ = await sse.connect(headers=[("Origin", "http://evil.example")], token=token)
    await stream.close()
