"""Provides the webhook sender: an asyncio loop in the persistence worker's process (the web
process on the embedded default) that claims due deliveries and POSTs them, signed.

Each endpoint has at most EVENTHUB_WEBHOOK_CONCURRENCY requests in flight, so a slow or failing
endpoint holds only its own slots and never delays another's deliveries. The host is resolved
and checked before every attempt, and the request goes to the address that was checked (with
the URL's Host header and TLS server name), so DNS rebinding cannot reach an internal one.
"""

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from datetime import UTC, datetime

import httpx
from channels.db import database_sync_to_async
from django.conf import settings

from streams.log.retry import Backoff
from webhooks import services
from webhooks.addresses import AddressRefused, url_address_async
from webhooks.signing import signature

logger = logging.getLogger(__name__)

# How often due deliveries are looked for when nothing wakes the sender (a retry coming due).
POLL_SECONDS = 1.0
# Deliveries claimed in one round, and in flight in the whole process.
CLAIM_LIMIT = 100
MAX_IN_FLIGHT = 500
CLAIM_COALESCE_SECONDS = 0.005
# Bytes of an answer read at most: only its status matters.
BODY_READ_MAX = 4096
USER_AGENT = "eventhub-webhooks/1"


class WebhookSender:
    """Lives on one event loop: `run` until cancelled; `wake` after new deliveries commit."""

    def __init__(self) -> None:
        self._wakeup = asyncio.Event()
        self._in_flight: defaultdict[int, int] = defaultdict(int)
        self._tasks: set[asyncio.Task] = set()
        self._claim = database_sync_to_async(services.deliveries_claim, thread_sensitive=False)
        self._record = database_sync_to_async(
            services.delivery_attempts_record, thread_sensitive=False
        )
        # Outcomes not yet recorded: written together, one transaction for many attempts.
        self._outcomes: list[services.Outcome] = []
        self._outcome_ready = asyncio.Event()

    def wake(self) -> None:
        """Called on the sender's loop when deliveries may have come due (a batch committed)."""
        self._wakeup.set()

    async def run(self) -> None:
        """Sends until cancelled; deliveries in flight then are sent again after their lease."""
        cap = settings.EVENTHUB_WEBHOOK_CONCURRENCY
        backoff = Backoff()
        async with httpx.AsyncClient(
            follow_redirects=False, timeout=settings.EVENTHUB_WEBHOOK_TIMEOUT
        ) as client:
            self._client = client
            recorder = asyncio.create_task(self._recorder())
            try:
                while True:
                    self._wakeup.clear()
                    claimed = []
                    room = MAX_IN_FLIGHT - len(self._tasks)
                    if room > 0:
                        try:
                            claimed = await self._claim(
                                free={e: cap - n for e, n in self._in_flight.items()},
                                saturated=[e for e, n in self._in_flight.items() if n >= cap],
                                default_free=cap,
                                limit=min(CLAIM_LIMIT, room),
                            )
                            backoff.reset()
                        except Exception:
                            logger.exception("claiming webhook deliveries failed")
                            await backoff.wait()
                            continue
                    for delivery in claimed:
                        self._in_flight[delivery.endpoint_id] += 1
                        task = asyncio.create_task(self._attempt(delivery))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                    if len(claimed) < CLAIM_LIMIT:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(POLL_SECONDS):
                                await self._wakeup.wait()
                        # Attempts ending together are followed by one claim, not one each.
                        await asyncio.sleep(CLAIM_COALESCE_SECONDS)
            finally:
                recorder.cancel()
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _attempt(self, delivery: services.Claimed) -> None:
        at = datetime.now(UTC)
        started = time.perf_counter()
        try:
            status_code, error = await self._post(delivery)
            duration_ms = int((time.perf_counter() - started) * 1000)
            self._outcomes.append(services.Outcome(delivery, at, status_code, error, duration_ms))
            self._outcome_ready.set()
        finally:
            self._in_flight[delivery.endpoint_id] -= 1
            if self._in_flight[delivery.endpoint_id] <= 0:
                del self._in_flight[delivery.endpoint_id]
            self._wakeup.set()

    async def _recorder(self) -> None:
        """Records the outcomes of attempts as they end, many in one transaction. One that
        cannot be recorded is retried a while; then its lease runs out and it is sent again
        (at least once)."""
        backoff = Backoff()
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            outcomes, self._outcomes = self._outcomes, []
            try:
                await self._record(outcomes=outcomes)
                backoff.reset()
            except Exception:
                logger.exception("recording %d webhook attempts failed", len(outcomes))
                if backoff.delay <= 30:
                    self._outcomes[:0] = outcomes
                    self._outcome_ready.set()
                await backoff.wait()

    async def _post(self, delivery: services.Claimed) -> tuple[int | None, str]:
        """POSTs one delivery; returns (status code or None, error text or "")."""
        try:
            address = await url_address_async(delivery.url)
        except AddressRefused as exc:
            return None, f"not sent: {exc}"
        url = httpx.URL(delivery.url)
        timestamp = int(time.time())
        headers = {
            # The URL's own host, though the connection goes to the checked address.
            "host": url.netloc.decode("ascii"),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(
                signature(secret, delivery.webhook_id, timestamp, delivery.body)
                for secret in delivery.secrets
            ),
        }
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        timeout = settings.EVENTHUB_WEBHOOK_TIMEOUT
        try:
            async with asyncio.timeout(timeout):
                async with self._client.stream(
                    "POST",
                    url.copy_with(host=address),
                    content=delivery.body.encode(),
                    headers=headers,
                    extensions=extensions,
                ) as response:
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read >= BODY_READ_MAX:
                            break
                    code = response.status_code
        except (TimeoutError, httpx.TimeoutException):
            return None, f"no answer within {timeout:g} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300]
        return code, "" if 200 <= code < 300 else f"HTTP {code}"
