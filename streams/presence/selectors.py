"""Provides the reads of presence: who is present on a tenant's exact topic, over every process
of the hub (`GET /api/v1/presence`), and a tenant's topics with someone present (the
dashboard's counts)."""

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


async def apresence_topics(*, tenant_id: int, limit: int = 50) -> dict:
    """The tenant's topics with someone present, busiest first, at most `limit`:
    `{"topics": [{"topic", "connections", "users"}], "truncated"}` (the dashboard's counts);
    raises HubUnavailable when the shared state (Redis) cannot be reached."""
    try:
        return await runtime.get_hub().presence.present_topics(tenant_id=tenant_id, limit=limit)
    except RedisError as error:
        raise HubUnavailable(str(error)) from error


def presence_topics(*, tenant_id: int, limit: int = 50) -> dict:
    return async_to_sync(apresence_topics)(tenant_id=tenant_id, limit=limit)
