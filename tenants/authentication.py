"""Provides DRF authentication by `Authorization: Bearer <api key>`."""

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from tenants import selectors, services
from tenants.access import Refused, principal_denial
from tenants.selectors import Principal


def bearer_key(header: bytes) -> str | None:
    """Returns the credential of a `Bearer` Authorization header, or None when there is none."""
    parts = header.split()
    if not parts or parts[0].lower() != b"bearer":
        return None
    if len(parts) != 2:
        return ""
    try:
        return parts[1].decode("ascii")
    except UnicodeDecodeError:
        return ""


AUTHENTICATE_HEADER = 'Bearer realm="api"'


class KeyUser:
    """The request.user of a key-authenticated request: no Django user, only a principal."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, principal: Principal) -> None:
        self.principal = principal


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticates a request by API key; returns None when no Bearer header is present."""

    def authenticate(self, request):
        raw_key = bearer_key(get_authorization_header(request))
        if raw_key is None:
            return None
        principal = selectors.api_key_principal(raw_key=raw_key) if raw_key else None
        return KeyUser(principal_usable(principal)), principal

    def authenticate_header(self, request) -> str:
        return AUTHENTICATE_HEADER


async def abearer_principal(header: bytes) -> Principal:
    """The async twin of ApiKeyAuthentication for a request that carries a Bearer header, for
    the ingest path in the event loop; raises AuthenticationFailed as it does."""
    raw_key = bearer_key(header)
    principal = await selectors.aapi_key_principal(raw_key=raw_key) if raw_key else None
    return principal_usable(principal)


def principal_usable(principal: Principal | None) -> Principal:
    """Returns the principal of a key that may be used now, noting its use; raises
    AuthenticationFailed for an unknown, revoked or expired key."""
    denial = principal_denial(principal)
    if denial is not None and denial.kind is Refused.UNAUTHENTICATED:
        raise exceptions.AuthenticationFailed(denial.detail)
    assert principal is not None  # an unknown key is refused above
    # A suspended tenant or a missing scope is the permission's to refuse (403, not 401).
    services.api_key_mark_used(key_id=principal.key_id)
    return principal
