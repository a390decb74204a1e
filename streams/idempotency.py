"""Provides idempotent publishing: a request retried with the same `Idempotency-Key` within
24 hours gets the first response, and its events are delivered and logged once."""

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable

from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError

from streams import runtime

TTL_SECONDS = 24 * 3600
WAIT_FOR_FIRST_SECONDS = 10.0
MAX_KEY_LENGTH = 255


class IdempotencyConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "A request with this Idempotency-Key is still being processed."


class IdempotencyMismatch(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was used with a different request body."


def _slot(key: str, path: str) -> str:
    return hashlib.sha256(f"{path}\n{key}".encode()).hexdigest()


async def idempotent(
    *,
    tenant_id: int,
    key: str | None,
    path: str,
    body: bytes,
    produce: Callable[[], Awaitable[dict]],
) -> tuple[dict, bool]:
    """Runs `produce` once per (tenant, path, key); returns (response body, replayed).

    Without a key, just runs `produce`. A retry while the first is still running waits for it;
    a retry with another body is refused (422).
    """
    if key is None:
        return await produce(), False
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ValidationError({"Idempotency-Key": ["Must be 1 to 255 printable characters."]})
    backend = runtime.get_backend()
    slot = _slot(key, path)
    fingerprint = hashlib.sha256(body).hexdigest()
    deadline = time.monotonic() + WAIT_FOR_FIRST_SECONDS
    while True:
        stored = await backend.idempotency_claim(tenant_id, slot, fingerprint, TTL_SECONDS)
        if stored is None:
            break  # this request owns the key
        stored_fingerprint, response = stored
        if stored_fingerprint != fingerprint:
            raise IdempotencyMismatch
        if response is not None:
            return json.loads(response), True
        if time.monotonic() > deadline:
            raise IdempotencyConflict
        await asyncio.sleep(0.05)
    try:
        response = await produce()
    except BaseException:
        await backend.idempotency_release(tenant_id, slot)
        raise
    await backend.idempotency_save(tenant_id, slot, fingerprint, json.dumps(response), TTL_SECONDS)
    return response, False
