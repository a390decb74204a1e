"""Provides subscriber tokens: signed, expiring grants of topic patterns for browsers."""

import time
from dataclasses import dataclass

from django.core import signing

SALT = "eventhub.subscriber-token.v1"


@dataclass(frozen=True, slots=True)
class TokenGrant:
    tenant_id: int
    key_id: int
    patterns: tuple[str, ...]
    expires_at: float


def token_sign(*, tenant_id: int, key_id: int, patterns: list[str], ttl: int) -> tuple[str, float]:
    """Returns (token, expiry as a UNIX time); the token holds no secret, only ids and patterns."""
    expires_at = time.time() + ttl
    token = signing.dumps(
        {"t": tenant_id, "k": key_id, "p": patterns, "e": round(expires_at, 3)}, salt=SALT
    )
    return token, expires_at


class TokenInvalid(Exception):
    pass


class TokenExpired(TokenInvalid):
    pass


def token_verify(token: str) -> TokenGrant:
    """Checks a token's signature and expiry; raises TokenInvalid or TokenExpired."""
    try:
        payload = signing.loads(token, salt=SALT)
        grant = TokenGrant(
            tenant_id=int(payload["t"]),
            key_id=int(payload["k"]),
            patterns=tuple(payload["p"]),
            expires_at=float(payload["e"]),
        )
    except (signing.BadSignature, KeyError, TypeError, ValueError) as exc:
        raise TokenInvalid("invalid token") from exc
    if grant.expires_at <= time.time():
        raise TokenExpired("token expired")
    return grant
