"""Provides the reads of presence: who is present on a tenant's exact topic, over every process
of the hub (`GET /api/v1/presence`)."""

from asgiref.sync import async_to_sync
from redis.exceptions import RedisError

from streams import runtime
from streams.backends import HubUnavailable


async def apresence_get(*, tenant_id: int, topic: str) -> dict:
    """`{"topic", "connections", "users": [{"user", "info", "connections"}]}`, with
    `"truncated": true` when the presence caps left users unlisted; raises HubUnavailable when
    the shared state (Redis) cannot be reached."""
    try:
        snapshot = await runtime.get_hub().presence.snapshot(tenant_id=tenant_id, topic=topic)
    except RedisError as error:
        raise HubUnavailable(str(error)) from error
    result = {"topic": topic, "connections": snapshot["connections"], "users": snapshot["users"]}
    if snapshot["truncated"]:
        result["truncated"] = True
    return result


def presence_get(*, tenant_id: int, topic: str) -> dict:
    return async_to_sync(apresence_get)(tenant_id=tenant_id, topic=topic)
