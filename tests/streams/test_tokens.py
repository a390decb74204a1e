"""Subscriber tokens: what a browser holding one may and may not receive, on both transports."""

import asyncio
import json
import time
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core import signing
from django.utils import timezone

from eventhub.asgi import application
from streams import tokens
from tenants import selectors
from tenants.services import api_key_issue, api_key_revoke, tenant_set_active
from tests.conftest import asgi_client
from tests.factories import ACTOR
from tests.inprocess import publish
from tests.streams import test_sse_consumer as sse

pytestmark = pytest.mark.django_db(transaction=True)


# Helpers ------------------------------------------------------------------------------------


async def issue(key: str, topics: list[str], ttl: int = 3600) -> str:
    async with asgi_client(key) as client:
        response = await client.post("/api/v1/tokens", json={"topics": topics, "ttl": ttl})
    assert response.status_code == 201, response.content
    return response.json()["token"]


def ws(**params: str) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, f"/ws/v1/events?{urlencode(params)}")


async def ws_open(**params: str) -> WebsocketCommunicator:
    """A WebSocket that was welcomed."""
    communicator = ws(**params)
    connected, _ = await communicator.connect()
    assert connected
    welcome = await communicator.receive_json_from(timeout=2)
    assert welcome["type"] == "welcome", welcome
    return communicator


async def ws_refused(**params: str) -> int:
    """The close code of a WebSocket the hub refuses (after accepting it, with a reason frame)."""
    communicator = ws(**params)
    connected, _ = await communicator.connect()
    assert connected
    error = await communicator.receive_json_from(timeout=2)
    assert error["type"] == "error", error
    closed = await communicator.receive_output(timeout=2)
    assert closed["type"] == "websocket.close"
    assert closed["code"] == error["code"]
    return closed["code"]


async def ws_first_frame_code(token: str) -> int | None:
    """The close code announced by the first frame, or None when it is the welcome."""
    communicator = ws(token=token)
    await communicator.connect()
    first = await communicator.receive_json_from(timeout=2)
    await communicator.disconnect()
    return first.get("code")


async def sse_refused(**params: str) -> int:
    return (await sse.refusal(**params)).status


class Clock:
    """Stands in for the `time` module of streams.tokens: the real time, moved ahead."""

    def __init__(self, ahead: float) -> None:
        self.ahead = ahead

    def time(self) -> float:
        return time.time() + self.ahead


@pytest.fixture
def issued(tenant):
    return api_key_issue(actor=ACTOR, tenant=tenant, name="issuer")


# What a token allows ------------------------------------------------------------------------


async def test_a_token_subscribes_to_the_patterns_it_grants(api_key):
    token = await issue(api_key, ["orders.*", "billing"])
    socket = await ws_open(token=token, topics="orders.created,billing")
    stream, _ = await sse.connect(token=token, topics="orders.*")
    for topic in ("users.x", "orders.created", "orders.deleted", "billing", "billing.x"):
        await publish(api_key, topic, topic)
    got = [(await socket.receive_json_from(timeout=2))["topic"] for _ in range(2)]
    assert got == ["orders.created", "billing"]
    assert await socket.receive_nothing(timeout=0.2)
    streamed = [json.loads(m["data"])["topic"] for m in await stream.events(2)]
    assert streamed == ["orders.created", "orders.deleted"]
    assert await stream.nothing_more()
    await socket.disconnect()
    await stream.close()


@pytest.mark.parametrize(
    ("grant", "asked"),
    [
        (["orders.*"], "users.x"),
        (["orders.*"], "*"),
        (["orders.*"], "orders*"),  # broader: would also match `ordersecret`
        (["orders.*"], ""),  # no topics means `*`
        (["orders"], "orders.created"),
        (["orders"], "orders*"),
        (["orders.created"], "orders.created,billing"),
    ],
)
async def test_a_pattern_outside_the_grant_is_forbidden(api_key, grant, asked):
    token = await issue(api_key, grant)
    assert await ws_refused(token=token, topics=asked) == 4403
    assert await sse_refused(token=token, topics=asked) == 403


async def test_a_token_of_one_tenant_never_sees_another_tenants_events(
    api_key, other_key, other_tenant
):
    token = await issue(api_key, ["*"])
    # Naming the other tenant in the query changes nothing: the token says whose events these are.
    socket = await ws_open(token=token, tenant=other_tenant.slug)
    stream, _ = await sse.connect(token=token, tenant=other_tenant.slug)
    await publish(other_key, "secret", "theirs")
    await publish(api_key, "secret", "mine")
    assert (await socket.receive_json_from(timeout=2))["data"] == "mine"
    assert [json.loads(m["data"])["data"] for m in await stream.events(1)] == ["mine"]
    assert await socket.receive_nothing(timeout=0.2)
    assert await stream.nothing_more()
    await socket.disconnect()
    await stream.close()


# Expiry -------------------------------------------------------------------------------------


async def test_a_token_works_until_it_expires(api_key, monkeypatch):
    token = await issue(api_key, ["*"], ttl=60)
    monkeypatch.setattr(tokens, "time", Clock(ahead=58))
    socket = await ws_open(token=token)
    await socket.disconnect()
    monkeypatch.setattr(tokens, "time", Clock(ahead=61))
    assert await ws_refused(token=token) == 4401
    refused = await sse.refusal(token=token)
    assert refused.status == 401
    assert "expired" in json.loads(refused.raw)["detail"]


async def test_a_token_with_a_one_second_ttl_expires_in_real_time(api_key):
    token = await issue(api_key, ["*"], ttl=1)
    deadline = time.monotonic() + 4
    while await ws_first_frame_code(token) != 4401:
        assert time.monotonic() < deadline, "a token with ttl=1 still works after 4 s"
        await asyncio.sleep(0.2)
    assert await sse_refused(token=token) == 401


# Tampering and forgery ----------------------------------------------------------------------


def _tamper_signature(token: str) -> str:
    payload, _, signature = token.rpartition(":")
    flipped = "A" if signature[-1] != "A" else "B"
    return f"{payload}:{signature[:-1]}{flipped}"


def _swap_payload(narrow: str, wide: str) -> str:
    """The payload of a wider token under the signature of a narrow one."""
    return f"{wide.rpartition(':')[0]}:{narrow.rpartition(':')[2]}"


async def test_a_tampered_token_is_refused(api_key):
    narrow = await issue(api_key, ["orders.*"])
    wide = await issue(api_key, ["*"])
    for token in (
        _tamper_signature(narrow),
        _swap_payload(narrow, wide),
        narrow[:-5],
        narrow.rpartition(":")[0],
        "x" + narrow,
        "not-a-token",
    ):
        assert await ws_refused(token=token, topics="orders.*") == 4401, token
        assert await sse_refused(token=token, topics="orders.*") == 401, token


async def test_a_token_signed_without_the_servers_secret_is_refused(issued, settings):
    grant = {"t": issued.api_key.tenant_id, "k": issued.api_key.pk, "p": ["*"], "e": 2e9}
    other_salt = signing.dumps(grant, salt="another.salt")
    other_secret = signing.dumps(grant, key="not-the-servers-secret", salt=tokens.SALT)
    for token in (other_salt, other_secret):
        assert await ws_refused(token=token) == 4401
        assert await sse_refused(token=token) == 401


async def test_a_token_naming_another_tenant_than_its_keys_is_refused(issued, other_tenant):
    # Only someone holding SECRET_KEY could sign this; the hub still checks the key's tenant.
    token, _, _ = tokens.token_sign(
        tenant_id=other_tenant.pk, key_id=issued.api_key.pk, patterns=["*"], ttl=60
    )
    assert await ws_refused(token=token) == 4401
    assert await sse_refused(token=token) == 401


# The issuing key ----------------------------------------------------------------------------


async def test_a_token_is_refused_once_its_issuing_key_is_revoked(issued):
    token = await issue(issued.secret, ["*"])
    await (await ws_open(token=token)).disconnect()
    await sync_to_async(api_key_revoke)(actor=ACTOR, api_key=issued.api_key)
    assert await ws_refused(token=token) == 4401
    assert await sse_refused(token=token) == 401


async def test_a_crowd_subscribing_with_one_token_reads_its_key_once(issued, monkeypatch, settings):
    settings.EVENTHUB_KEY_CACHE_SECONDS = 60  # however slowly the crowd comes in
    token = await issue(issued.secret, ["*"])
    reads = []
    read = selectors.api_key_principal_by_id
    monkeypatch.setattr(
        selectors, "api_key_principal_by_id", lambda **kw: reads.append(kw) or read(**kw)
    )

    crowd = [await ws_open(token=token) for _ in range(20)]
    # A revocation empties the key cache: the next subscriber reads the key again.
    await sync_to_async(api_key_revoke)(actor=ACTOR, api_key=issued.api_key)
    refused = await ws_refused(token=token)

    assert len(reads) == 2  # once for the crowd, once after the revocation
    assert refused == 4401
    for communicator in crowd:
        await communicator.disconnect()


async def test_a_token_is_refused_once_its_issuing_key_has_expired(tenant):
    soon = timezone.now() + timedelta(seconds=60)
    issued = await sync_to_async(api_key_issue)(actor=ACTOR, tenant=tenant, expires_at=soon)
    token = await issue(issued.secret, ["*"])
    issued.api_key.expires_at = timezone.now() - timedelta(seconds=1)
    await issued.api_key.asave(update_fields=["expires_at"])
    assert await ws_refused(token=token) == 4401
    assert await sse_refused(token=token) == 401


async def test_a_token_of_a_suspended_tenant_is_forbidden(issued, tenant):
    token = await issue(issued.secret, ["*"])
    await sync_to_async(tenant_set_active)(actor=ACTOR, tenant=tenant, active=False)
    assert await ws_refused(token=token) == 4403
    assert await sse_refused(token=token) == 403


# Issuing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [86401, 10**9, 0, -1, "soon"])
async def test_a_ttl_outside_one_second_to_a_day_is_a_bad_request(api_key, ttl):
    async with asgi_client(api_key) as client:
        response = await client.post("/api/v1/tokens", json={"topics": ["*"], "ttl": ttl})
    assert response.status_code == 400, response.content
    assert "ttl" in response.json()


async def test_a_ttl_of_exactly_a_day_is_allowed(api_key):
    async with asgi_client(api_key) as client:
        response = await client.post("/api/v1/tokens", json={"topics": ["*"], "ttl": 86400})
    assert response.status_code == 201, response.content


@pytest.mark.parametrize("topics", [["bad topic"], ["a*b"], [], "orders.*", [None]])
async def test_a_malformed_grant_is_a_bad_request(api_key, topics):
    async with asgi_client(api_key) as client:
        response = await client.post("/api/v1/tokens", json={"topics": topics})
    assert response.status_code == 400, response.content


async def test_a_token_grants_at_most_100_patterns(api_key):
    patterns = [f"t{i}.*" for i in range(100)]
    token = await issue(api_key, patterns)
    communicator = await ws_open(token=token, topics=",".join(patterns))
    await communicator.disconnect()
    async with asgi_client(api_key) as client:
        response = await client.post("/api/v1/tokens", json={"topics": [*patterns, "one.more"]})
    assert response.status_code == 400, response.content
    assert "topics" in response.json()


async def test_a_key_without_the_subscribe_scope_cannot_issue_tokens(tenant):
    for scopes in (["publish"], ["history"], ["publish", "history"]):
        key = (await sync_to_async(api_key_issue)(actor=ACTOR, tenant=tenant, scopes=scopes)).secret
        async with asgi_client(key) as client:
            response = await client.post("/api/v1/tokens", json={"topics": ["*"]})
        assert response.status_code == 403, response.content
        assert "subscribe" in response.json()["detail"]


async def test_issuing_a_token_needs_a_key(db):
    async with asgi_client() as client:
        response = await client.post("/api/v1/tokens", json={"topics": ["*"]})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_token_carries_no_secret_of_its_key(issued):
    token = await issue(issued.secret, ["*"])
    assert issued.secret not in token
    assert issued.secret.split("_", 2)[2] not in token  # the random part after the prefix
