"""The plain API key (and a subscriber token) is never stored and never logged: not in any row
of any table, not in the application's logs, not in daphne's access log, even when a client
puts it in the URL."""

import asyncio
import json
import logging
import sqlite3
from pathlib import Path

import httpx
import pytest
import websockets
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from eventhub.asgi import application
from streams import runtime
from tenants.services import api_key_issue, api_key_revoke, api_keys_flush_usage
from tests.conftest import asgi_client
from tests.factories import ACTOR
from tests.processes import Process, base_env, manage
from tests.streams import test_sse_consumer as sse


def secret_parts(key: str) -> list[str]:
    """The whole key and its random part (`ehk_<prefix>_<random>`; the prefix is public)."""
    return [key, key.split("_", 2)[2]]


def assert_nowhere(text: str, secrets: list[str], where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:12]}…) appears in {where}"


def database_dump() -> str:
    """Every row of every table, as text."""
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            rows.extend(f"{table}: {row!r}" for row in cursor.fetchall())
    return "\n".join(rows)


# In-process: the database and the application's logs ------------------------------------------


async def use_everywhere(key: str, revoked_key: str) -> str:
    """Uses a key the ways a client can, right and wrong; returns a token it issued."""
    async with asgi_client(key) as client:
        token = (await client.post("/api/v1/tokens", json={"topics": ["*"]})).json()["token"]
        one = {"topic": "orders", "data": {"n": 1}}
        assert (await client.post("/api/v1/events", json=one)).status_code == 202
        retried = {"Idempotency-Key": "retry-1"}
        assert (await client.post("/api/v1/events", json=one, headers=retried)).status_code == 202
        batch = {"events": [one, one]}
        assert (await client.post("/api/v1/events/batch", json=batch)).status_code == 202
        assert (await client.post("/api/v1/events", json={"topic": "bad topic"})).status_code == 400
        assert (await client.get("/api/v1/events")).status_code == 200
        assert (await client.get("/api/v1/stats")).status_code == 200
    async with asgi_client() as anonymous:
        # Keys and tokens where they do not belong: in the URL, misspelt, revoked.
        await anonymous.get(f"/api/v1/events?token={token}&api_key={key}&key={key}")
        await anonymous.get("/api/v1/stats", headers={"Authorization": f"Bearer {key}x"})
        await anonymous.get("/api/v1/stats", headers={"Authorization": f"Bearer {revoked_key}"})
        await anonymous.get("/api/v1/stats", headers={"Authorization": f"Token {key}"})
    for query in (f"token={token}", f"token={token}&topics=bad%20topic", f"token={token}x"):
        ws = WebsocketCommunicator(application, f"/ws/v1/events?{query}")
        await ws.connect()
        await ws.receive_json_from(timeout=2)
        await ws.disconnect()
    ws = WebsocketCommunicator(
        application, "/ws/v1/events", headers=[(b"authorization", f"Bearer {key}".encode())]
    )
    await ws.connect()
    await ws.receive_json_from(timeout=2)
    await ws.disconnect()
    stream, _ = await sse.connect(token=token)
    await stream.close()
    await sse.refusal(revoked_key)
    await runtime.shutdown()  # drains the event log into the database
    return token


@pytest.mark.django_db(transaction=True)
def test_the_plain_key_is_stored_nowhere_and_logged_nowhere(tenant, caplog):
    caplog.set_level(logging.DEBUG)
    issued = api_key_issue(actor=ACTOR, tenant=tenant, name="secret keeper")
    revoked = api_key_issue(actor=ACTOR, tenant=tenant, name="revoked")
    api_key_revoke(actor=ACTOR, api_key=revoked.api_key)

    token = async_to_sync(use_everywhere)(issued.secret, revoked.secret)
    assert api_keys_flush_usage() >= 1  # last_used_at is written too

    secrets = [*secret_parts(issued.secret), *secret_parts(revoked.secret), token]
    dump = database_dump()
    assert issued.api_key.prefix in dump  # the dump is real: the key's row is in it
    assert '"orders"' in dump or "orders" in dump  # and so are the persisted events
    assert_nowhere(dump, secrets, "the database")
    # What the hub logs; httpx's records are this test's client logging its own requests.
    logged = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith(("httpx", "httpcore"))
    )
    assert logged  # the refusals above were logged
    assert_nowhere(logged, secrets, "the application's log")


@pytest.mark.filterwarnings("ignore:No directory at:UserWarning")  # no collectstatic in tests
@pytest.mark.django_db
def test_a_key_issued_in_the_admin_is_shown_once_and_stored_nowhere(tenant):
    admin = get_user_model().objects.create_superuser("admin", password=None)
    browser = Client()
    browser.force_login(admin)
    form = {"tenant": tenant.pk, "name": "from the admin", "scopes": ["publish"]}
    shown = browser.post("/admin/tenants/apikey/add/", form)
    assert shown.status_code == 200
    key = shown.context["secret"]
    assert key.startswith("ehk_")
    assert key in shown.content.decode()
    assert not list(shown.context["messages"]), "the secret must not travel as a message"

    again = browser.get("/admin/tenants/apikey/")
    assert key not in again.content.decode()
    assert_nowhere(database_dump(), secret_parts(key), "the database")


# A real server: daphne's access log, its whole output and its database file -------------------


async def client_session(web: Process, key: str) -> str:
    """A browser and a server talking to the hub, with secrets in headers and in URLs."""
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as client:
        response = await client.post("/api/v1/tokens", json={"topics": ["*"]}, headers=auth)
        token = response.json()["token"]
        event = {"topic": "orders", "data": 1}
        assert (await client.post("/api/v1/events", json=event, headers=auth)).status_code == 202
        await client.get(f"/api/v1/events?token={token}&api_key={key}&Key={key}")
        await client.get("/api/v1/stats", headers={"Authorization": f"Bearer {key}x"})
        async with client.stream("GET", f"/sse/v1/events?topics=*&token={token}") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("event: welcome"):
                    break
        for url in (f"/sse/v1/events?TOKEN={token}", f"/sse/v1/events?token={token}x"):
            assert (await client.get(url)).status_code == 401

    async with websockets.connect(f"{web.ws_url}/ws/v1/events?token={token}") as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "welcome"
    async with websockets.connect(f"{web.ws_url}/ws/v1/events?topics=a%20b&token={token}") as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["code"] == 4400
    async with websockets.connect(f"{web.ws_url}/ws/v1/events", additional_headers=auth) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "welcome"
    return token


def sqlite_dump(path: Path) -> str:
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(
            f"{t}: {row!r}" for t in tables for row in db.execute(f'SELECT * FROM "{t}"')
        )


@pytest.mark.e2e
def test_daphne_logs_and_stores_neither_keys_nor_tokens(tmp_path):
    database = tmp_path / "db.sqlite3"
    env = base_env(DATABASE_URL=f"sqlite:///{database}")
    manage(env, "migrate", "--no-input")
    manage(env, "create_tenant", "acme")
    key = manage(env, "create_api_key", "acme").strip().splitlines()[-1]
    web = Process("web", env, tmp_path).start()
    try:
        token = asyncio.run(client_session(web, key))
    finally:
        web.stop()  # graceful: the log is drained into the database first
    log = web.log()
    secrets = [*secret_parts(key), token]

    # The access log saw every request that carried a secret in its URL, redacted.
    access = [line for line in log.splitlines() if '"GET /' in line or "WSCONNECT" in line]
    with_params = [line for line in access if "token=" in line.lower() or "key=" in line.lower()]
    assert len(with_params) >= 3, log  # daphne logs a WebSocket by its path alone
    assert all("=[redacted]" in line for line in with_params), with_params
    assert_nowhere(log, secrets, "daphne's output")

    dump = sqlite_dump(database)
    assert "orders" in dump
    assert_nowhere(dump, secrets, "the database")
    for file in tmp_path.glob("db.sqlite3*"):  # the file itself, WAL included, free pages too
        content = file.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, f"a secret is in the bytes of {file.name}"
