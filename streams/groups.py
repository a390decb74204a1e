"""Provides the channel-layer group names; tenant isolation rides on tenant_group."""

GROUP_PREFIX = "eventhub.tenant."


def tenant_group(tenant_id: int) -> str:
    """The group holding one channel per process that has subscribers of this tenant.

    Built from the numeric primary key only, so no tenant-controlled text can reach another
    tenant's group; the result always matches `^[a-zA-Z\\d\\-_.]+$` and is under 100 characters.
    """
    if not isinstance(tenant_id, int) or isinstance(tenant_id, bool) or tenant_id < 1:
        raise ValueError(f"tenant id must be a positive integer, got {tenant_id!r}")
    return f"{GROUP_PREFIX}{tenant_id}"


# Every process's hub is in this group from its start: what all of them must learn at once,
# whatever tenants they serve (a revoked subscriber token).
HUBS_GROUP = "eventhub.hubs"
