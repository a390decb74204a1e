"""Provides the admission of a subscriber: who it is, which topics it may have, where it resumes.

Shared by the WebSocket and SSE consumers so that both transports refuse the same requests with
the same reasons (close codes for the first, HTTP statuses for the second).
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs

from django.conf import settings
from django.db import InterfaceError, OperationalError

from streams import runtime
from streams.delivery.hub import ConnectionLimitReached, Subscriber
from streams.delivery.replay import NOT_RECOVERED, ReplayPlan, replay_plan
from streams.envelope import event_id_parse
from streams.presence.tracker import exact_topics
from streams.revoked_tokens import atoken_revoked
from streams.tokens import TokenExpired, TokenGrant, TokenInvalid, token_verify
from streams.topics import pattern_within, patterns_parse
from tenants.access import TENANT_SUSPENDED, Refused, principal_denial
from tenants.authentication import bearer_key
from tenants.selectors import (
    CredentialsUnavailable,
    Principal,
    aapi_key_principal,
    aapi_key_principal_by_id,
    atenant_visible_to,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Admission:
    tenant_id: int
    key_id: int | None
    patterns: tuple[str, ...]
    last_event_id: str | None
    max_connections: int | None
    session: tuple[int, str] | None = None  # (user id, session key) of a dashboard session
    token: TokenGrant | None = None  # when a subscriber token admitted it
    presence: bool = False  # it asked for presence (`presence=1`): a snapshot, join / leave


class Refusal(Exception):
    """Why a subscribe request is refused, for either transport."""

    def __init__(self, close_code: int, http_status: int, detail: str) -> None:
        super().__init__(detail)
        self.close_code = close_code
        self.http_status = http_status
        self.detail = detail


def _unauthenticated(detail: str) -> Refusal:
    return Refusal(4401, 401, detail)


def _forbidden(detail: str) -> Refusal:
    return Refusal(4403, 403, detail)


def _bad_request(detail: str) -> Refusal:
    return Refusal(4400, 400, detail)


def _query(scope: dict) -> dict[str, str]:
    try:
        raw = scope.get("query_string", b"").decode("ascii")
    except UnicodeDecodeError:
        raise _bad_request("The query string is not ASCII.") from None
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


def _check_principal(principal: Principal | None) -> Principal:
    denial = principal_denial(principal, "subscribe")
    if denial is not None:
        if denial.kind is Refused.UNAUTHENTICATED:
            raise _unauthenticated(denial.detail)
        raise _forbidden(denial.detail)
    assert principal is not None  # refused above
    return principal


@dataclass(frozen=True, slots=True)
class _Credential:
    tenant_id: int
    key_id: int | None  # None for a dashboard user's session
    allowed: tuple[str, ...]
    max_connections: int | None
    session: tuple[int, str] | None = None
    token: TokenGrant | None = None


def _from_principal(principal: Principal, allowed: tuple[str, ...]) -> _Credential:
    return _Credential(principal.tenant_id, principal.key_id, allowed, principal.max_connections)


async def token_admit(token: str) -> tuple[TokenGrant, Principal]:
    """Checks a subscriber token (signature, expiry, revocation, and its key and tenant as they
    are now); raises Refusal (4401 / 401, or the key's own refusal) when it does not admit."""
    try:
        grant = token_verify(token)
    except TokenExpired:
        raise _unauthenticated("The token has expired.") from None
    except TokenInvalid:
        raise _unauthenticated("The token is invalid.") from None
    if grant.token_id is not None and await atoken_revoked(grant.token_id):
        raise _unauthenticated("The token was revoked.")
    principal = _check_principal(await aapi_key_principal_by_id(key_id=grant.key_id))
    if principal.tenant_id != grant.tenant_id:
        raise _unauthenticated("The token is invalid.")
    return grant, principal


async def _authenticate(scope: dict, query: dict[str, str]) -> _Credential:
    """Returns who subscribes and the patterns it may have: by token, by API key, or (browsers
    only) by a dashboard user's session."""
    token = query.get("token")
    if token:
        grant, principal = await token_admit(token)
        return _Credential(
            principal.tenant_id,
            principal.key_id,
            grant.patterns,
            principal.max_connections,
            token=grant,
        )
    header = _header(scope, b"authorization")
    raw_key = bearer_key(header) if header else None
    if raw_key:
        return _from_principal(_check_principal(await aapi_key_principal(raw_key=raw_key)), ("*",))
    user = scope.get("user")
    # The Origin guard decides whether the session cookie may count (see eventhub.origins).
    if scope.get("session_allowed") and user is not None and user.is_authenticated:
        slug = query.get("tenant")
        if not slug:
            raise _bad_request("A dashboard session must name its tenant (tenant=SLUG).")
        tenant = await atenant_visible_to(user=user, slug=slug)
        if tenant is None:
            raise _forbidden("This user may not see that tenant.")
        if not tenant.is_active:
            raise _forbidden(TENANT_SUSPENDED)
        session = scope.get("session")
        session_key = getattr(session, "session_key", None) or ""
        return _Credential(tenant.pk, None, ("*",), tenant.max_connections, (user.pk, session_key))
    raise _unauthenticated("A token or an API key is required.")


async def subscription_admit(scope: dict, *, last_event_id_header: bool) -> Admission:
    """Checks a subscribe request; raises Refusal with the reason when it is not allowed.

    With `last_event_id_header` (SSE), a `Last-Event-ID` header wins over the parameter, as
    browsers send it when EventSource reconnects.
    """
    query = _query(scope)
    try:
        credential = await _authenticate(scope, query)
    except (CredentialsUnavailable, OperationalError, InterfaceError):
        # The database is down and the credential is not one this process read recently.
        raise Refusal(1013, 503, "The hub cannot check credentials now; retry shortly.") from None
    patterns = patterns_parse(query.get("topics"))
    if patterns is None:
        raise _bad_request("topics must be comma-separated topics or prefixes ending in '*'.")
    last_event_id = query.get("last_event_id") or None
    if last_event_id_header:
        header = _header(scope, b"last-event-id")
        if header:
            last_event_id = header.decode("latin-1").strip() or last_event_id
    if last_event_id is not None and event_id_parse(last_event_id) is None:
        raise _bad_request("last_event_id is not an event id.")
    outside = [p for p in patterns if not pattern_within(p, credential.allowed)]
    if outside:
        raise _forbidden(f"Topics not allowed for this credential: {', '.join(outside)}")
    return Admission(
        tenant_id=credential.tenant_id,
        key_id=credential.key_id,
        patterns=patterns,
        last_event_id=last_event_id,
        max_connections=credential.max_connections,
        session=credential.session,
        token=credential.token,
        presence=query.get("presence") in ("1", "true"),
    )


def iso_time(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


async def presence_snapshot(sub: Subscriber) -> dict[str, list[dict]] | None:
    """For a connection that asked for presence, who is present on each exact topic of its
    subscription (itself included), for its welcome; None when it did not ask. A topic beyond
    the presence caps lists whom it can (the API says `truncated`)."""
    if not sub.presence:
        return None
    tracker = runtime.get_hub().presence
    present: dict[str, list[dict]] = {}
    for topic in exact_topics(sub.patterns):
        try:
            snapshot = await tracker.snapshot(tenant_id=sub.tenant_id, topic=topic)
        except Exception:
            logger.warning("presence: no snapshot of %r for a welcome", topic)
            snapshot = {"users": []}
        present[topic] = [{"user": u["user"], "info": u["info"]} for u in snapshot["users"]]
    return present


def welcome(
    sub: Subscriber, *, recovered: bool, presence: dict[str, list[dict]] | None = None
) -> dict:
    """The first frame of a connection, the same on both transports. A connection opened with
    a token is told when the token expires (`token_expires_at`), so that a client knows when
    to refresh it however it got the token; one that asked for presence gets who is present
    (`presence_snapshot`)."""
    frame: dict = {
        "type": "welcome",
        "connection_id": sub.connection_id,
        "heartbeat": settings.EVENTHUB_HEARTBEAT_INTERVAL,
        "recovered": recovered,
    }
    if sub.token is not None:
        frame["token_expires_at"] = iso_time(sub.token.expires_at)
    if presence is not None:
        frame["presence"] = presence
    return frame


async def token_refresh(sub: Subscriber, token: str) -> TokenGrant:
    """Checks a token a connection sends to go on past its own token's expiry (the WebSocket
    `refresh` frame); returns its grant, or raises Refusal: 4401 when it is invalid, expired or
    revoked, 4403 when it is another tenant's, another user's, or does not allow every pattern
    of the connection."""
    if sub.token is None:
        raise _forbidden("Only a connection opened with a token can refresh it.")
    grant, principal = await token_admit(token)
    if principal.tenant_id != sub.tenant_id:
        raise _forbidden("The token is for another tenant.")
    if grant.user != sub.token.user:
        raise _forbidden("The token is for another user.")
    outside = [p for p in sub.patterns if not pattern_within(p, grant.patterns)]
    if outside:
        raise _forbidden(f"Topics not allowed by the new token: {', '.join(outside)}")
    return grant


async def subscription_start(sub: Subscriber, admission: Admission) -> ReplayPlan:
    """Joins the hub in replay mode and decides what the connection replays.

    The caller sends the welcome (`recovered` from the plan), then runs `replay_stream`, which
    sends the replay and ends by handing the connection to live delivery.
    """
    hub = runtime.get_hub()
    sub.opening, sub.pending = True, []
    try:
        await hub.subscribe(sub, max_connections=admission.max_connections)
        if admission.last_event_id is None:
            return NOT_RECOVERED
        plan = await replay_plan(
            tenant_id=admission.tenant_id,
            last_event_id=admission.last_event_id,
            patterns=admission.patterns,
        )
    except ConnectionLimitReached:
        raise Refusal(4429, 429, "Too many connections for this tenant.") from None
    except Exception:
        # The shared state (Redis) or the log is unreachable: the client should retry shortly.
        logger.exception("could not start a subscription")
        await hub.unsubscribe(sub)
        raise Refusal(1013, 503, "The hub is unavailable; retry shortly.") from None
    if plan.recovered:
        # Live events up to `until` come with the replay; those after it, of its epoch, follow.
        sub.last_seq, sub.epoch = plan.until, plan.epoch
    return plan
