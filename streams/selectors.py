"""Provides the reads of the streams app that ask the running process: a tenant's live stats
over every process of the hub. The log's reads are in `streams.log.reads`."""

from asgiref.sync import async_to_sync

from streams import runtime


async def atenant_stats(*, tenant_id: int) -> dict:
    """Live numbers of one tenant, over every process of the hub."""
    hub = runtime.get_hub()
    local = hub.count(tenant_id)
    backend = runtime.get_backend()
    return {"connections": await backend.connections(tenant_id, local)} | await backend.stats(
        tenant_id
    )


def tenant_stats(*, tenant_id: int) -> dict:
    return async_to_sync(atenant_stats)(tenant_id=tenant_id)
