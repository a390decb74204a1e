"""The dashboard's per-topic presence counts (`<slug>/presence.json`, polled by the tenant
page) are shown to the users who may see the tenant, and to no one else."""

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.test import Client

from eventhub.asgi import application
from tests.streams.test_presence import token_of, ws_open

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def member_of(tenant, username: str):
    user = get_user_model().objects.create_user(username, password=None)
    tenant.members.add(user)
    return user


@sync_to_async
def session_of(user) -> dict[str, str]:
    client = Client()
    client.force_login(user)
    name = django_settings.SESSION_COOKIE_NAME
    return {name: client.cookies[name].value}


async def dashboard_client(user) -> httpx.AsyncClient:
    """The whole ASGI application in-process, with `user` logged in."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application),
        base_url="http://testserver",
        cookies=await session_of(user),
    )


async def test_a_member_sees_the_topics_with_someone_present_and_their_counts(tenant, api_key):
    member = await member_of(tenant, "member")
    ws, _ = await ws_open(await token_of(api_key, "ada"), presence=False)
    try:
        async with await dashboard_client(member) as client:
            counts = await client.get(f"/dashboard/{tenant.slug}/presence.json")
    finally:
        await ws.disconnect()

    assert counts.status_code == 200
    assert [(t["topic"], t["connections"], t["users"]) for t in counts.json()["topics"]] == [
        ("room", 1, 1)
    ]


async def test_a_member_of_another_tenant_gets_a_404_and_nothing_of_it(
    tenant, other_tenant, api_key
):
    outsider = await member_of(other_tenant, "outsider")
    ws, _ = await ws_open(await token_of(api_key, "ada"), presence=False)
    try:
        async with await dashboard_client(outsider) as client:
            counts = await client.get(f"/dashboard/{tenant.slug}/presence.json")
    finally:
        await ws.disconnect()

    assert counts.status_code == 404
    assert "room" not in counts.text
    assert "ada" not in counts.text
