"""Provides the one rule of what makes an API key usable: known, not revoked, not expired, of
an active tenant, holding the scope asked for. DRF's authentication and permission, the
subscribers' admission and the hub's re-checks all ask it, so that every door refuses the same
keys with the same words."""

from dataclasses import dataclass
from enum import Enum

from tenants.selectors import Principal


class Refused(Enum):
    """Which kind of refusal: the key itself is no good (401, 4401), or it is good but may not
    do this (403, 4403)."""

    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True, slots=True)
class Denial:
    kind: Refused
    detail: str


def principal_denial(principal: Principal | None, scope: str | None = None) -> Denial | None:
    """Why the key may not be used now for `scope` (any scope when None), or None when it may;
    the first rule it breaks, in the order a client should fix them."""
    if principal is None:
        return Denial(Refused.UNAUTHENTICATED, "Unknown API key.")
    if principal.revoked:
        return Denial(Refused.UNAUTHENTICATED, "This API key has been revoked.")
    if principal.expired:
        return Denial(Refused.UNAUTHENTICATED, "This API key has expired.")
    if not principal.tenant_active:
        return Denial(Refused.FORBIDDEN, TENANT_SUSPENDED)
    if scope and scope not in principal.scopes:
        return Denial(Refused.FORBIDDEN, f"This API key lacks the '{scope}' scope.")
    return None


TENANT_SUSPENDED = "This tenant is suspended."
