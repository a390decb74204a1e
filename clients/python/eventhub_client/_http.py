"""Provides what the blocking and the asyncio clients share: request bodies, the retry policy
and the reading of answers. Neither sends anything itself."""

import json
import random
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from eventhub_client.errors import api_error

# The hub's defaults (EVENTHUB_MAX_BATCH, EVENTHUB_MAX_BODY_BYTES); a hub configured lower needs
# the client's `max_batch` / `max_batch_bytes` set to match.
MAX_BATCH = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024 - 1024  # a little room for the envelope `{"events": [...]}`
HISTORY_PAGE = 1000

# Statuses after which the same request (same Idempotency-Key) may be sent again: 429 rate
# limited, 503 nothing accepted (contract v2, Faults), 409 the first attempt still in progress.
RETRIED = frozenset({409, 429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How long a publish keeps trying: at most `total_wait` seconds of waiting in all, each
    wait the answer's Retry-After (or a backoff from `first_delay` when it has none)."""

    total_wait: float = 30.0
    first_delay: float = 0.5
    max_delay: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return max(0.0, retry_after)
        base = min(self.max_delay, self.first_delay * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)


def auth_headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def event_body(topic: str, data: Any, type: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"topic": topic, "data": data}
    if type is not None:
        body["type"] = type
    return body


def batch_items(events: Iterable[Mapping[str, Any] | tuple]) -> list[dict[str, Any]]:
    """Normalises `publish_batch`'s events: dicts `{"topic", "data", "type"?}` or tuples
    `(topic, data[, type])`."""
    items = []
    for event in events:
        if isinstance(event, tuple):
            topic, data, *rest = event
            items.append(event_body(topic, data, rest[0] if rest else None))
        else:
            items.append(dict(event))
    return items


def batch_chunks(
    items: list[dict[str, Any]], max_batch: int, max_bytes: int
) -> Iterator[list[dict[str, Any]]]:
    """Splits a batch into requests the hub accepts: at most `max_batch` events and about
    `max_bytes` of JSON each (an event alone over it goes alone, and gets its 413)."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for item in items:
        item_size = len(json.dumps(item, separators=(",", ":"))) + 1
        if chunk and (len(chunk) >= max_batch or size + item_size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        yield chunk


def token_body(
    topics: Iterable[str] | str, ttl: int, user: str | None, info: Mapping[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"topics": [topics] if isinstance(topics, str) else list(topics)}
    body["ttl"] = ttl
    if user is not None:
        body["user"] = user
    if info is not None:
        body["info"] = dict(info)
    return body


def history_params(topic: str | None, after: str | None, limit: int) -> dict[str, str]:
    params = {"limit": str(limit)}
    if topic is not None:
        params["topic"] = topic
    if after is not None:
        params["after"] = after
    return params


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: the backoff decides


def body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def checked(response: httpx.Response, expected: int) -> Any:
    """The JSON body of an answer with the expected status; raises the matching ApiError."""
    if response.status_code == expected:
        return response.json() if response.content else None
    raise api_error(response.status_code, body_of(response), retry_after(response))
