"""Provides the reads of the streams app that ask the running process: a tenant's live stats
over every process of the hub. The log's reads are in `streams.log.reads`."""

from asgiref.sync import async_to_sync
from redis.exceptions import RedisError

from streams import runtime
from streams.backends import HubUnavailable


async def atenant_stats(*, tenant_id: int) -> dict:
    """Live numbers of one tenant, over every process of the hub; raises HubUnavailable when
    the shared state (Redis) cannot be reached."""
    hub = runtime.get_hub()
    local = hub.count(tenant_id)
    backend = runtime.get_backend()
    try:
        connections = await backend.connections(tenant_id, local)
        return {"connections": connections} | await backend.stats(tenant_id)
    except RedisError as error:
        raise HubUnavailable(str(error)) from error


def tenant_stats(*, tenant_id: int) -> dict:
    return async_to_sync(atenant_stats)(tenant_id=tenant_id)
