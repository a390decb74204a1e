"""Subscriber tokens, contract v2: a token's holder (`user`, `info`), its id, its end at expiry,
its refresh without reconnecting, and its revocation by id."""

import asyncio
import json
import time
from datetime import datetime, timedelta
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from eventhub.asgi import application
from streams import tokens
from streams.delivery import admission
from streams.models import RevokedToken
from streams.revoked_tokens import revoked_tokens
from tenants.models import AuditEntry
from tests.conftest import asgi_client
from tests.streams import test_sse_consumer as sse

pytestmark = pytest.mark.django_db(transaction=True)

# Live connections are re-checked every 2 s on a tick of at most 1 s; the contract allows 5 s.
REVOKED_WITHIN = 5.0


# Helpers ------------------------------------------------------------------------------------


async def issue(key: str, topics=("*",), ttl: int = 3600, **claims) -> dict:
    async with asgi_client(key) as client:
        response = await client.post(
            "/api/v1/tokens", json={"topics": list(topics), "ttl": ttl, **claims}
        )
    assert response.status_code == 201, response.content
    return response.json()


async def issue_refused(key: str, **body) -> dict:
    async with asgi_client(key) as client:
        response = await client.post(
            "/api/v1/tokens",
            # json.dumps escapes what UTF-8 cannot hold (a lone surrogate) as JSON allows.
            content=json.dumps({"topics": ["*"], **body}),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400, response.content
    return response.json()


async def revoke(key: str, token_id: str) -> int:
    async with asgi_client(key) as client:
        return (await client.delete(f"/api/v1/tokens/{token_id}")).status_code


async def publish(key: str, topic: str = "t", data="x") -> dict:
    async with asgi_client(key) as client:
        response = await client.post("/api/v1/events", json={"topic": topic, "data": data})
    assert response.status_code == 202, response.content
    return response.json()


async def ws_open(token: str, topics: str = "*") -> tuple[WebsocketCommunicator, dict]:
    """A WebSocket that was welcomed, and its welcome."""
    ws = WebsocketCommunicator(
        application, f"/ws/v1/events?{urlencode({'token': token, 'topics': topics})}"
    )
    connected, _ = await ws.connect()
    assert connected
    welcome = await ws.receive_json_from(timeout=2)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def ws_first_code(token: str) -> int | None:
    """The close code a connection with this token is refused with; None when welcomed."""
    ws = WebsocketCommunicator(application, f"/ws/v1/events?{urlencode({'token': token})}")
    await ws.connect()
    first = await ws.receive_json_from(timeout=2)
    await ws.disconnect()
    return first.get("code")


async def closed_with(ws: WebsocketCommunicator, within: float) -> tuple[int, list[dict]]:
    """Reads (bounded) until the server closes; returns the close code and the events read."""
    deadline = time.monotonic() + within
    events = []
    while True:
        message = await ws.receive_output(timeout=max(0.01, deadline - time.monotonic()))
        if message["type"] == "websocket.close":
            return message["code"], events
        frame = json.loads(message["text"])
        if frame["type"] == "event":
            events.append(frame)


def unix(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# Issuing: id and holder ---------------------------------------------------------------------


async def test_a_token_is_issued_with_an_id_and_carries_its_holder(api_key):
    issued = await issue(api_key, user="ada", info={"name": "Ada", "color": "#f0c"})

    assert set(issued) == {"token", "id", "expires_at"}
    grant = tokens.token_verify(issued["token"])
    assert grant.token_id == issued["id"]
    assert (grant.user, grant.info) == ("ada", {"name": "Ada", "color": "#f0c"})


async def test_tokens_get_ids_of_their_own(api_key):
    ids = {(await issue(api_key))["id"] for _ in range(5)}

    assert len(ids) == 5


async def test_a_token_without_a_holder_carries_none(api_key):
    grant = tokens.token_verify((await issue(api_key))["token"])

    assert (grant.user, grant.info) == (None, None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user": ""}, "user"),
        ({"user": "u" * 201}, "user"),
        ({"user": 7}, "user"),
        ({"info": ["not", "an", "object"]}, "info"),
        ({"info": {"bio": "x" * 1020}}, "info"),  # 1033 bytes as JSON
        ({"info": {"bio": "é" * 510}}, "info"),  # 510 characters, 1020 bytes of them
        ({"info": {"x": "\ud800"}}, "info"),  # no UTF-8 for a lone surrogate
        ({"user": "ada\nlevel=admin"}, "user"),  # would forge a log line
        ({"user": "\x1b[2J"}, "user"),
        ({"user": "   "}, "user"),
    ],
)
async def test_a_holder_out_of_bounds_is_a_bad_request(api_key, body, field):
    assert field in await issue_refused(api_key, **body)


async def test_a_user_of_200_characters_and_an_info_of_1024_bytes_are_allowed(api_key):
    info = {"bio": "x" * 1014}  # {"bio":"…"} is 1024 bytes
    assert len(json.dumps(info, separators=(",", ":"))) == 1024

    issued = await issue(api_key, user="u" * 200, info=info)

    assert tokens.token_verify(issued["token"]).info == info


# Expiry -------------------------------------------------------------------------------------


async def test_a_websocket_is_closed_with_4401_when_its_token_expires_and_gets_nothing_later(
    api_key,
):
    issued = await issue(api_key, ttl=2)
    expires_at = unix(issued["expires_at"])
    ws, welcome = await ws_open(issued["token"])
    assert welcome["token_expires_at"] == issued["expires_at"]
    accepted_late: list[str] = []

    async def publish_until_closed() -> None:
        while True:
            accepted = await publish(api_key)
            if unix(accepted["received_at"]) > expires_at:
                accepted_late.append(accepted["id"])
            await asyncio.sleep(0.05)

    publisher = asyncio.get_running_loop().create_task(publish_until_closed())
    try:
        code, events = await closed_with(ws, within=4)
        closed_at = time.time()
    finally:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
        await ws.disconnect()

    assert code == 4401
    assert expires_at <= closed_at < expires_at + 0.5, "closed at the expiry, not a tick later"
    assert events, "the connection got nothing while its token was valid"
    assert all(unix(e["ts"]) <= expires_at for e in events)
    assert not {e["id"] for e in events} & set(accepted_late)


async def test_an_sse_stream_ends_when_its_token_expires(api_key):
    issued = await issue(api_key, ttl=1)
    stream, welcome = await sse.connect(token=issued["token"])
    assert welcome["token_expires_at"] == issued["expires_at"]

    deadline = time.monotonic() + 3
    while not stream.ended:
        assert time.monotonic() < deadline, "the stream outlived its token"
        await stream.read_body()

    assert time.time() >= unix(issued["expires_at"])
    await stream.close()


async def test_an_sse_stream_whose_token_expires_while_it_is_admitted_ends_after_its_welcome(
    api_key, monkeypatch
):

    issued = await issue(api_key, ttl=1)
    first = await publish(api_key)
    expires_at = unix(issued["expires_at"])
    real_plan = admission.replay_plan

    async def slow_plan(**kwargs):
        # A replay read from the log that takes until the token has expired.
        await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.05)
        return await real_plan(**kwargs)

    monkeypatch.setattr(admission, "replay_plan", slow_plan)
    stream, _ = await sse.connect(token=issued["token"], last_event_id=first["id"])

    deadline = time.monotonic() + 2
    while not stream.ended:
        assert time.monotonic() < deadline, "a stream opened for an expired token never ends"
        await stream.read_body()
    await stream.close()


async def test_a_connection_by_api_key_has_no_token_expiry(api_key):
    ws = WebsocketCommunicator(
        application, "/ws/v1/events", headers=[(b"authorization", f"Bearer {api_key}".encode())]
    )
    await ws.connect()
    welcome = await ws.receive_json_from(timeout=2)
    await ws.disconnect()

    assert welcome["type"] == "welcome"
    assert "token_expires_at" not in welcome


# Refresh ------------------------------------------------------------------------------------


async def test_a_refresh_frame_keeps_the_websocket_open_past_the_first_tokens_expiry(api_key):
    first = await issue(api_key, ["orders.*"], ttl=1)
    second = await issue(api_key, ["orders.*", "billing"], ttl=60)
    ws, _ = await ws_open(first["token"], "orders.*")

    await ws.send_json_to({"type": "refresh", "token": second["token"]})
    refreshed = await ws.receive_json_from(timeout=2)
    await asyncio.sleep(max(0.0, unix(first["expires_at"]) - time.time()) + 0.3)
    accepted = await publish(api_key, "orders.created")
    delivered = await ws.receive_json_from(timeout=2)
    await ws.disconnect()

    assert refreshed == {"type": "refreshed", "expires_at": second["expires_at"]}
    assert delivered["id"] == accepted["id"]


async def test_a_refreshed_connection_ends_when_the_new_token_expires(api_key):
    first = await issue(api_key, ttl=60)
    second = await issue(api_key, ttl=1)
    ws, _ = await ws_open(first["token"])

    await ws.send_json_to({"type": "refresh", "token": second["token"]})
    assert (await ws.receive_json_from(timeout=2))["type"] == "refreshed"
    code, _ = await closed_with(ws, within=3)
    await ws.disconnect()

    assert code == 4401


async def _refresh_closes_with(first_token: str, frame: dict, topics: str = "*") -> int:
    ws, _ = await ws_open(first_token, topics)
    await ws.send_json_to(frame)
    error = await ws.receive_json_from(timeout=2)
    closed = await ws.receive_output(timeout=2)
    await ws.disconnect()
    assert error["type"] == "error", error
    assert closed["type"] == "websocket.close"
    return closed["code"]


async def test_a_refresh_with_an_invalid_or_expired_token_closes_with_4401(api_key):
    first = (await issue(api_key))["token"]
    short = (await issue(api_key, ttl=1))["token"]
    await asyncio.sleep(max(0.0, tokens.token_verify(short).expires_at - time.time()) + 0.05)

    assert await _refresh_closes_with(first, {"type": "refresh", "token": "forged"}) == 4401
    assert await _refresh_closes_with(first, {"type": "refresh", "token": short}) == 4401


async def test_a_refresh_with_a_revoked_token_closes_with_4401(api_key):
    first = (await issue(api_key))["token"]
    second = await issue(api_key)
    assert await revoke(api_key, second["id"]) == 204

    assert await _refresh_closes_with(first, {"type": "refresh", "token": second["token"]}) == 4401


async def test_a_refresh_that_would_narrow_the_subscription_closes_with_4403(api_key):
    first = (await issue(api_key, ["orders.*", "billing"]))["token"]
    narrower = (await issue(api_key, ["orders.*"]))["token"]

    frame = {"type": "refresh", "token": narrower}
    assert await _refresh_closes_with(first, frame, "orders.*,billing") == 4403


async def test_a_refresh_with_another_tenants_or_users_token_closes_with_4403(api_key, other_key):
    first = (await issue(api_key, user="ada"))["token"]
    theirs = (await issue(other_key, user="ada"))["token"]
    someone_else = (await issue(api_key, user="bob"))["token"]

    assert await _refresh_closes_with(first, {"type": "refresh", "token": theirs}) == 4403
    assert await _refresh_closes_with(first, {"type": "refresh", "token": someone_else}) == 4403


async def test_a_refresh_frame_without_a_token_is_a_bad_request(api_key):
    first = (await issue(api_key))["token"]

    assert await _refresh_closes_with(first, {"type": "refresh"}) == 4400


# Revocation ---------------------------------------------------------------------------------


async def test_revoking_a_token_closes_its_connections_on_both_transports_and_no_others(api_key):
    doomed, spared = await issue(api_key), await issue(api_key)
    ws, _ = await ws_open(doomed["token"])
    stream, _ = await sse.connect(token=doomed["token"])
    other, _ = await ws_open(spared["token"])
    started = time.monotonic()

    assert await revoke(api_key, doomed["id"]) == 204
    code, _ = await closed_with(ws, within=REVOKED_WITHIN)
    while not stream.ended:
        assert time.monotonic() - started < REVOKED_WITHIN, "the SSE stream outlived its token"
        await stream.read_body()
    accepted = await publish(api_key, "still-here")
    still = await other.receive_json_from(timeout=2)

    assert code == 4403
    assert still["id"] == accepted["id"]
    for communicator in (ws, other):
        await communicator.disconnect()
    await stream.close()


async def test_a_revoked_token_cannot_connect_again(api_key):
    issued = await issue(api_key)
    assert await ws_first_code(issued["token"]) is None

    assert await revoke(api_key, issued["id"]) == 204

    assert await ws_first_code(issued["token"]) == 4401
    refused = await sse.refusal(token=issued["token"])
    assert refused.status == 401
    assert "revoked" in json.loads(refused.raw)["detail"]


async def test_a_token_revoked_by_another_process_is_refused_once_this_one_reads_again(
    api_key, settings
):
    settings.EVENTHUB_KEY_CACHE_SECONDS = 0  # every connect reads the revocations again
    issued = await issue(api_key)
    assert await ws_first_code(issued["token"]) is None

    # What another process's DELETE leaves behind: the row, not this process's memory.
    grant = tokens.token_verify(issued["token"])
    await RevokedToken.objects.acreate(
        tenant_id=grant.tenant_id, token_id=issued["id"], revoked_at=timezone.now()
    )

    assert await ws_first_code(issued["token"]) == 4401


async def test_a_crowd_connecting_while_the_revocations_are_unread_reads_them_once(
    api_key, monkeypatch
):
    issued = await issue(api_key)
    reads = []
    real_sync = revoked_tokens.sync

    def counted_sync():
        reads.append(1)
        time.sleep(0.05)  # a slow database: the crowd arrives while it is read
        real_sync()

    monkeypatch.setattr(revoked_tokens, "sync", counted_sync)
    codes = await asyncio.gather(*(ws_first_code(issued["token"]) for _ in range(20)))

    assert codes == [None] * 20
    assert len(reads) == 1


async def test_revoking_is_idempotent_and_recorded_once(api_key, tenant):
    issued = await issue(api_key)

    assert await revoke(api_key, issued["id"]) == 204
    assert await revoke(api_key, issued["id"]) == 204

    entries = [e async for e in AuditEntry.objects.filter(action="token.revoke")]
    assert [(e.target, e.tenant_id, e.actor_kind) for e in entries] == [
        (issued["id"], tenant.pk, "api_key")
    ]


async def test_an_unknown_or_another_tenants_token_id_is_not_found(api_key, other_key):
    theirs = await issue(other_key)
    ours = await issue(api_key)
    forged = ours["id"][:-1] + ("0" if ours["id"][-1] != "0" else "1")

    for token_id in (theirs["id"], forged, "tk_nothing", "x" * 300):
        assert await revoke(api_key, token_id) == 404, token_id
    assert await ws_first_code(theirs["token"]) is None  # theirs still works
    assert not await RevokedToken.objects.aexists()


async def test_revoking_needs_the_subscribe_scope(api_key, publish_only_key):
    issued = await issue(api_key)

    assert await revoke(publish_only_key, issued["id"]) == 403
    assert await revoke("", issued["id"]) == 401


async def test_revocations_older_than_a_token_can_live_are_forgotten(api_key, tenant):
    long_ago = timezone.now() - timedelta(days=2)
    await RevokedToken.objects.acreate(tenant=tenant, token_id="tk_old", revoked_at=long_ago)
    await sync_to_async(revoked_tokens.sync)()
    assert "tk_old" not in revoked_tokens

    revoked_tokens.remember("tk_old", long_ago)
    await sync_to_async(revoked_tokens.sync)()
    assert "tk_old" not in revoked_tokens

    assert await revoke(api_key, (await issue(api_key))["id"]) == 204
    assert not await RevokedToken.objects.filter(token_id="tk_old").aexists()


def test_a_token_id_is_bound_to_its_tenant():
    token_id = tokens.token_id_new(tenant_id=1)

    assert tokens.token_id_valid(token_id, tenant_id=1)
    assert not tokens.token_id_valid(token_id, tenant_id=2)


def test_a_token_id_signed_under_a_retired_secret_stays_valid(settings):
    token_id = tokens.token_id_new(tenant_id=1)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-" + "k" * 50

    assert tokens.token_id_valid(token_id, tenant_id=1)
