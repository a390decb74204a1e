"""Provides Client, the blocking client: publish, batch publish, history and tokens."""

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpx

from eventhub_client import _http
from eventhub_client.errors import api_error


class Client:
    """A publisher's client over one HTTP connection pool.

    >>> hub = Client("http://127.0.0.1:8000", key="ehk_...")
    >>> hub.publish("orders.created", {"id": 42}, type="created")["id"]
    """

    def __init__(
        self,
        url: str,
        *,
        key: str,
        timeout: float = 10.0,
        retry: _http.RetryPolicy | None = None,
        max_batch: int = _http.MAX_BATCH,
        max_batch_bytes: int = _http.MAX_BATCH_BYTES,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = retry or _http.RetryPolicy()
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self._own_http = http is None
        self._http = http or httpx.Client(timeout=timeout, trust_env=False)
        self._headers = _http.auth_headers(key)

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish(
        self,
        topic: str,
        data: Any,
        type: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Publishes one event; returns the hub's 202 body (`id`, `seq`, `topic`, `type`,
        `received_at`). Retried after 429/503 with the same Idempotency-Key (generated when not
        given), so the event is published once whatever the retries."""
        body = _http.event_body(topic, data, type)
        return self._send("/api/v1/events", body, idempotency_key)

    def publish_batch(
        self,
        events: Iterable[Mapping[str, Any] | tuple],
        idempotency_key: str | None = None,
    ) -> list[dict[str, Any]]:
        """Publishes events (`{"topic", "data", "type"?}` dicts or `(topic, data[, type])`
        tuples) in order, in as many requests as the hub's batch limit needs; returns every
        202 item in order. Each request is all or nothing; a list split over several requests
        is not (an error raised on the second leaves the first published)."""
        accepted: list[dict[str, Any]] = []
        chunks = _http.batch_chunks(_http.batch_items(events), self.max_batch, self.max_batch_bytes)
        for index, chunk in enumerate(chunks):
            key = f"{idempotency_key}:{index}" if idempotency_key else None
            accepted += self._send("/api/v1/events/batch", {"events": chunk}, key)["events"]
        return accepted

    def history(
        self, topic: str | None = None, after: str | None = None, *, page_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Iterates the persisted log, oldest first, following every page: each event as
        subscribers get it (`id`, `seq`, `topic`, `event`, `data`, `ts`)."""
        url: str | None = f"{self.url}/api/v1/events"
        params: dict[str, str] | None = _http.history_params(topic, after, page_size)
        while url:
            page = _http.checked(self._http.get(url, params=params, headers=self._headers), 200)
            yield from page["results"]
            url, params = page["next"], None

    def token(
        self,
        topics: Iterable[str] | str,
        ttl: int = 3600,
        user: str | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Issues a subscriber token; returns the 201 body (`token`, `id`, `expires_at`)."""
        body = _http.token_body(topics, ttl, user, info)
        response = self._http.post(f"{self.url}/api/v1/tokens", json=body, headers=self._headers)
        return _http.checked(response, 201)

    def revoke_token(self, token_id: str) -> None:
        """Revokes a token by its id: its connections close (4403)."""
        response = self._http.delete(f"{self.url}/api/v1/tokens/{token_id}", headers=self._headers)
        _http.checked(response, 204)

    def _send(self, path: str, body: dict[str, Any], key: str | None) -> Any:
        headers = dict(self._headers, **{"Idempotency-Key": key or _http.new_idempotency_key()})
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.post(f"{self.url}{path}", json=body, headers=headers)
            except httpx.TransportError:
                # Safe to send again: the Idempotency-Key makes a second arrival a replay.
                delay = self.retry.delay(attempt, None)
                if waited + delay > self.retry.total_wait:
                    raise
            else:
                if response.status_code == 202:
                    return response.json()
                after = _http.retry_after(response)
                delay = self.retry.delay(attempt, after)
                if (
                    response.status_code not in _http.RETRIED
                    or waited + delay > self.retry.total_wait
                ):
                    raise api_error(response.status_code, _http.body_of(response), after)
            time.sleep(delay)
            waited += delay
