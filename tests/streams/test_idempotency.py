"""Publishing with an Idempotency-Key: a retry gets the first answer and publishes nothing."""

import pytest
from channels.testing import WebsocketCommunicator

from eventhub.asgi import application
from tests.conftest import asgi_client

pytestmark = pytest.mark.django_db(transaction=True)


async def subscribe(key: str) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(
        application, "/ws/v1/events", headers=[(b"authorization", f"Bearer {key}".encode())]
    )
    await ws.connect()
    assert (await ws.receive_json_from(timeout=2))["type"] == "welcome"
    return ws


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/events", {"topic": "orders", "data": 1}),
        ("/api/v1/events/batch", {"events": [{"topic": "orders", "data": 1}]}),
    ],
)
async def test_a_retry_with_the_same_key_gets_the_first_answer_and_one_delivery(
    api_key, path, body
):
    ws = await subscribe(api_key)
    async with asgi_client(api_key) as client:
        headers = {"Idempotency-Key": "order-1"}
        first = await client.post(path, json=body, headers=headers)
        retry = await client.post(path, json=body, headers=headers)
        assert first.status_code == retry.status_code == 202
        assert retry.json() == first.json()
        other = await client.post(path, json=body, headers={"Idempotency-Key": "order-2"})
        assert other.status_code == 202
    seqs = [(await ws.receive_json_from(timeout=2))["seq"] for _ in range(2)]
    assert seqs == [1, 2]
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()


async def test_a_key_reused_with_another_body_is_refused(api_key):
    async with asgi_client(api_key) as client:
        headers = {"Idempotency-Key": "k"}
        assert (await client.post("/api/v1/events", json={"topic": "a", "data": 1},
                                  headers=headers)).status_code == 202  # fmt: skip
        reused = await client.post("/api/v1/events", json={"topic": "a", "data": 2},
                                   headers=headers)  # fmt: skip
        assert reused.status_code == 422
        assert "detail" in reused.json()


async def test_a_failed_first_attempt_does_not_hold_the_key(api_key):
    async with asgi_client(api_key) as client:
        headers = {"Idempotency-Key": "k"}
        bad = await client.post("/api/v1/events", json={"topic": "bad topic", "data": 1},
                                headers=headers)  # fmt: skip
        assert bad.status_code == 400
        good = await client.post("/api/v1/events", json={"topic": "a", "data": 1},
                                 headers=headers)  # fmt: skip
        assert good.status_code == 202


async def test_keys_are_per_tenant(api_key, other_key):
    async with asgi_client(api_key) as mine, asgi_client(other_key) as theirs:
        headers = {"Idempotency-Key": "same"}
        body = {"topic": "a", "data": 1}
        first = (await mine.post("/api/v1/events", json=body, headers=headers)).json()
        second = (await theirs.post("/api/v1/events", json=body, headers=headers)).json()
        assert first["id"] != second["id"] or first["seq"] == second["seq"] == 1
        assert second["seq"] == 1
