"""The clients' retry policy, against a scripted transport: what a publisher sees when the hub
answers 503 (Redis down: nothing accepted) or 429, and when the network fails."""

import httpx
import pytest
from eventhub_client import AsyncClient, Client, RetryPolicy, Unavailable

ACCEPTED = {"id": "1-abc", "seq": 1, "topic": "t", "type": "message", "received_at": "…"}


class Hub:
    """Answers each request with the next of `answers`; keeps every request."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def keys(self) -> list[str]:
        return [r.headers["Idempotency-Key"] for r in self.requests]


def unavailable(after: str = "0") -> httpx.Response:
    return httpx.Response(503, json={"detail": "try later"}, headers={"Retry-After": after})


def test_a_publish_answered_503_is_retried_with_the_same_idempotency_key():
    hub = Hub(unavailable(), httpx.ConnectError("refused"), httpx.Response(202, json=ACCEPTED))
    http = httpx.Client(transport=httpx.MockTransport(hub))
    retry = RetryPolicy(first_delay=0.01)

    with Client("http://hub", key="k", http=http, retry=retry) as client:
        assert client.publish("t", {}) == ACCEPTED

    assert len(hub.keys) == 3
    assert len(set(hub.keys)) == 1


def test_each_publish_gets_its_own_key_unless_given_one():
    hub = Hub(*[httpx.Response(202, json=ACCEPTED) for _ in range(3)])
    http = httpx.Client(transport=httpx.MockTransport(hub))

    with Client("http://hub", key="k", http=http) as client:
        client.publish("t", 1)
        client.publish("t", 2)
        client.publish("t", 3, idempotency_key="mine")

    assert hub.keys[0] != hub.keys[1]
    assert hub.keys[2] == "mine"


def test_the_retries_stop_at_the_total_wait_with_a_clear_error():
    hub = Hub(unavailable("0.2"), unavailable("0.2"), unavailable("0.2"))
    http = httpx.Client(transport=httpx.MockTransport(hub))

    with (
        Client("http://hub", key="k", http=http, retry=RetryPolicy(total_wait=0.3)) as client,
        pytest.raises(Unavailable) as raised,
    ):
        client.publish("t", {})

    assert len(hub.requests) == 2
    assert raised.value.retry_after == 0.2
    assert raised.value.detail == "try later"


async def test_the_async_client_retries_the_same_way():
    limited = httpx.Response(429, json={"detail": "slow down"}, headers={"Retry-After": "0"})
    hub = Hub(limited, httpx.Response(202, json={"events": [ACCEPTED]}))
    http = httpx.AsyncClient(transport=httpx.MockTransport(hub))

    async with AsyncClient("http://hub", key="k", http=http) as client:
        assert await client.publish_batch([("t", 1)]) == [ACCEPTED]
    await http.aclose()

    assert len(set(hub.keys)) == 1
    assert hub.requests[0].url.path == "/api/v1/events/batch"
