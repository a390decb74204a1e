"""Provides subscriber tokens: signed, expiring grants of topic patterns for browsers, each with
an id of its own (by which one token is revoked) and, optionally, who holds it (`user`, `info`)."""

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core import signing
from django.utils.crypto import constant_time_compare, salted_hmac

SALT = "eventhub.subscriber-token.v1"
ID_SALT = "eventhub.subscriber-token-id.v1"
ID_PREFIX = "tk_"


def _id_mac(tenant_id: int, nonce: str, secret: str | bytes | None = None) -> str:
    return salted_hmac(ID_SALT, f"{tenant_id}:{nonce}", secret=secret).hexdigest()[:16]


def token_id_new(*, tenant_id: int) -> str:
    """A new token id: random, and signed for its tenant, so that an id the hub never issued,
    or another tenant's, is told apart from a real one without storing every token issued."""
    nonce = secrets.token_hex(8)
    return f"{ID_PREFIX}{nonce}{_id_mac(tenant_id, nonce)}"


def token_id_valid(token_id: str, *, tenant_id: int) -> bool:
    """Whether the hub issued this id for this tenant (under SECRET_KEY or a fallback)."""
    body = token_id.removeprefix(ID_PREFIX)
    if len(token_id) != len(ID_PREFIX) + 32 or not token_id.startswith(ID_PREFIX):
        return False
    nonce, mac = body[:16], body[16:]
    keys = [None, *settings.SECRET_KEY_FALLBACKS]
    return any(constant_time_compare(mac, _id_mac(tenant_id, nonce, secret)) for secret in keys)


@dataclass(frozen=True, slots=True)
class TokenGrant:
    tenant_id: int
    key_id: int
    patterns: tuple[str, ...]
    expires_at: float
    token_id: str | None = None  # None for a token issued before tokens had ids
    user: str | None = None
    info: dict[str, Any] | None = field(default=None, compare=False)


def token_sign(
    *,
    tenant_id: int,
    key_id: int,
    patterns: list[str],
    ttl: int,
    user: str | None = None,
    info: dict[str, Any] | None = None,
) -> tuple[str, str, float]:
    """Returns (token, its id, expiry as a UNIX time); the token holds no secret, only ids,
    patterns and the holder's `user` / `info` (readable by whoever holds the token)."""
    expires_at = round(time.time() + ttl, 3)  # as the token holds it: to the millisecond
    token_id = token_id_new(tenant_id=tenant_id)
    payload: dict[str, Any] = {
        "t": tenant_id,
        "k": key_id,
        "p": patterns,
        "e": expires_at,
        "i": token_id,
    }
    if user is not None:
        payload["u"] = user
    if info is not None:
        payload["n"] = info
    return signing.dumps(payload, salt=SALT, compress=True), token_id, expires_at


class TokenInvalid(Exception):
    pass


class TokenExpired(TokenInvalid):
    pass


def token_verify(token: str) -> TokenGrant:
    """Checks a token's signature and expiry; raises TokenInvalid or TokenExpired."""
    try:
        payload = signing.loads(token, salt=SALT)
        info = payload.get("n")
        user = payload.get("u")
        token_id = payload.get("i")
        if not isinstance(info, dict | None) or not isinstance(user, str | None):
            raise TypeError("malformed claims")
        grant = TokenGrant(
            tenant_id=int(payload["t"]),
            key_id=int(payload["k"]),
            patterns=tuple(payload["p"]),
            expires_at=float(payload["e"]),
            token_id=str(token_id) if token_id is not None else None,
            user=user,
            info=info,
        )
    except (signing.BadSignature, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TokenInvalid("invalid token") from exc
    if grant.expires_at <= time.time():
        raise TokenExpired("token expired")
    return grant
