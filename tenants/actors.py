"""Provides the Actor: who made a change that the audit trail records, and from where."""

import getpass
import ipaddress
from dataclasses import dataclass

from tenants.models import ActorKind
from tenants.selectors import Principal


def _client_address(request) -> str:
    """The peer address of a request, or "" when it is not an IP address (a Unix socket).

    REMOTE_ADDR only: the settings trust no proxy for the client's address (only
    X-Forwarded-Proto), and X-Forwarded-For is whatever the client sent unless a proxy
    overwrites it, so it would let anyone write any address into the trail. Behind a proxy
    this is the proxy's address, unless daphne runs with --proxy-headers (docs/security.md).
    """
    address = request.META.get("REMOTE_ADDR") or ""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return ""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: an admin user (`kind` "admin", `name` the username), a management
    command ("command", e.g. "manage.py revoke_api_key (user root)") or an API key ("api_key",
    its prefix); `address` is the client's IP address where there is one."""

    kind: str
    name: str
    address: str = ""

    @classmethod
    def from_request(cls, request) -> "Actor":
        """The actor of a Django or DRF request: its API key when it was authenticated by one,
        else its logged-in user."""
        address = _client_address(request)
        principal = getattr(request, "auth", None)
        if isinstance(principal, Principal):
            return cls(kind=ActorKind.API_KEY.value, name=principal.prefix, address=address)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return cls(kind=ActorKind.ADMIN.value, name=user.get_username(), address=address)
        return cls(kind=ActorKind.ANONYMOUS.value, name="", address=address)

    @classmethod
    def command(cls, name: str) -> "Actor":
        """The actor of a management command run by the current OS user, e.g.
        `Actor.command("manage.py create_api_key")`."""
        try:
            user = getpass.getuser()
        except (OSError, KeyError, ImportError):
            # No login name, no USER/LOGNAME and no passwd entry (a container's arbitrary uid).
            return cls(kind=ActorKind.COMMAND.value, name=name)
        return cls(kind=ActorKind.COMMAND.value, name=f"{name} (user {user})")
