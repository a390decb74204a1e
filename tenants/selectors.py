"""Provides the reads on tenants and API keys, with the process cache that keeps them off the
publish path."""

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, get_user_model
from django.contrib.sessions.models import Session
from django.db import DatabaseError
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from tenants.keys import KEY_PREFIX, key_hash, key_looks_whole
from tenants.models import ApiKey, Tenant

logger = logging.getLogger(__name__)

_CACHE_MAX = 10_000
# Session engines whose sessions are rows of django_session, so that one query checks many.
_DATABASE_SESSION_ENGINES = (
    "django.contrib.sessions.backends.db",
    "django.contrib.sessions.backends.cached_db",
)


@dataclass(frozen=True, slots=True)
class Principal:
    """What a valid-looking API key stands for, as cached by the process."""

    key_id: int
    prefix: str
    tenant_id: int
    tenant_slug: str
    tenant_active: bool
    scopes: frozenset[str]
    expires_at: datetime | None
    revoked: bool
    max_connections: int | None
    publish_rate: int | None

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def usable(self) -> bool:
        return not self.revoked and not self.expired


_cache: dict[str, tuple[Principal | None, float]] = {}
_lock = threading.Lock()


# Counts the clears: a lookup that read the database before a clear must not store what it read
# after it (it may be the row as it was before a revocation).
_generation = 0


def api_key_cache_clear() -> None:
    """Forgets every cached key; called by the services that revoke keys or suspend tenants."""
    global _generation
    with _lock:
        _generation += 1
        _cache.clear()


def _principal_from(api_key: ApiKey) -> Principal:
    tenant = api_key.tenant
    return Principal(
        key_id=api_key.pk,
        prefix=api_key.prefix,
        tenant_id=tenant.pk,
        tenant_slug=tenant.slug,
        tenant_active=tenant.is_active,
        scopes=frozenset(api_key.scopes),
        expires_at=api_key.expires_at,
        revoked=api_key.revoked_at is not None,
        max_connections=tenant.max_connections,
        publish_rate=tenant.publish_rate,
    )


class CredentialsUnavailable(Exception):
    """Raised by the key look-ups when the database cannot answer and the process knows the
    key from no recent enough look-up: the caller answers 503, the client retries."""


def _cached(digest: str) -> tuple[bool, Principal | None]:
    entry = _cache.get(digest)
    if entry is not None and entry[1] > time.monotonic():
        return True, entry[0]
    return False, None


# After a look-up failed, keys known from before are served from memory for this long without
# asking the database again: each try waits for the pool's timeout while it is down.
_OUTAGE_BACKOFF_SECONDS = 5.0
_database_down_until = 0.0


def _known_while_down(digest: str) -> tuple[bool, Principal | None]:
    """(True, what was read before) while a recent look-up found the database down."""
    if time.monotonic() >= _database_down_until:
        return False, None
    if _read_recently(digest):
        return True, _cache[digest][0]
    return False, None


def _read_recently(digest: str) -> bool:
    """Whether the cache holds what a look-up read within EVENTHUB_KEY_STALE_SECONDS."""
    entry = _cache.get(digest)
    if entry is None:
        return False
    read_at = entry[1] - settings.EVENTHUB_KEY_CACHE_SECONDS
    return read_at + settings.EVENTHUB_KEY_STALE_SECONDS > time.monotonic()


def _stale(digest: str, error: DatabaseError) -> Principal | None:
    """What the process last read for a key, while the database cannot answer: a database
    outage must not refuse every publisher and subscriber the hub knows (the publish path
    needs no database otherwise). Only for EVENTHUB_KEY_STALE_SECONDS after that read;
    CredentialsUnavailable beyond, or for a key it never read."""
    global _database_down_until
    _database_down_until = time.monotonic() + _OUTAGE_BACKOFF_SECONDS
    if _read_recently(digest):
        logger.warning("database unreachable (%s); using a key as read before", error)
        return _cache[digest][0]
    raise CredentialsUnavailable("The database is unreachable; retry shortly.") from error


def _remember(digest: str, principal: Principal | None, generation: int) -> None:
    """Caches what a lookup read, unless the cache was cleared since it began (`generation`)."""
    with _lock:
        if generation != _generation:
            return
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[digest] = (principal, time.monotonic() + settings.EVENTHUB_KEY_CACHE_SECONDS)


def api_key_principal(*, raw_key: str) -> Principal | None:
    """Returns who a key stands for (revoked and expired ones included), or None if unknown.

    The database is read at most once per key per cache period, so a busy publisher costs no
    query per request.
    """
    digest = key_hash(raw_key)
    hit, principal = _cached(digest)
    if not hit:
        hit, principal = _known_while_down(digest)
    if hit:
        return principal
    generation = _generation
    try:
        api_key = ApiKey.objects.select_related("tenant").filter(hashed_secret=digest).first()
    except DatabaseError as error:
        return _stale(digest, error)
    principal = _principal_from(api_key) if api_key else None
    _remember(digest, principal, generation)
    return principal


async def aapi_key_principal(*, raw_key: str) -> Principal | None:
    """The async twin of api_key_principal, for consumers."""
    hit, principal = _cached(key_hash(raw_key))
    if hit:
        return principal
    return await database_sync_to_async(api_key_principal)(raw_key=raw_key)


def api_key_principal_by_id(*, key_id: int) -> Principal | None:
    """Returns the current state of a key by id (a token's issuing key, checked when a browser
    subscribes with the token); read at most once per key per cache period, as by key."""
    slot = f"id:{key_id}"
    hit, principal = _cached(slot)
    if not hit:
        hit, principal = _known_while_down(slot)
    if hit:
        return principal
    generation = _generation
    try:
        api_key = ApiKey.objects.select_related("tenant").filter(pk=key_id).first()
    except DatabaseError as error:
        return _stale(slot, error)
    principal = _principal_from(api_key) if api_key else None
    _remember(slot, principal, generation)
    return principal


async def aapi_key_principal_by_id(*, key_id: int) -> Principal | None:
    """The async twin of api_key_principal_by_id: no thread hop while the key is cached (a
    reconnecting crowd of browsers costs one query per key, not one per browser)."""
    hit, principal = _cached(f"id:{key_id}")
    if hit:
        return principal
    # Consumers read through channels' database_sync_to_async: outside a request, only it hands
    # a connection back (to the pool, or closed when it broke) the way a request's end does.
    return await database_sync_to_async(api_key_principal_by_id)(key_id=key_id)


def tenant_list() -> QuerySet[Tenant]:
    return Tenant.objects.all()


def tenants_visible_to(*, user) -> QuerySet[Tenant]:
    """Staff see every tenant; other users the tenants they are members of."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return Tenant.objects.none()
    if user.is_staff:
        return Tenant.objects.all()
    return Tenant.objects.filter(members=user)


def tenant_visible_to(*, user, slug: str) -> Tenant | None:
    return tenants_visible_to(user=user).filter(slug=slug).first()


atenant_visible_to = database_sync_to_async(tenant_visible_to)


def tenant_get(*, slug: str) -> Tenant | None:
    return Tenant.objects.filter(slug=slug).first()


def api_key_find(*, prefix_or_key: str) -> ApiKey | None:
    """Finds a key by its visible prefix or by the whole key."""
    if key_looks_whole(prefix_or_key):
        return ApiKey.objects.filter(hashed_secret=key_hash(prefix_or_key)).first()
    return ApiKey.objects.filter(prefix=prefix_or_key.removeprefix(KEY_PREFIX)).first()


def credentials_revoked(*, key_ids: set[int], tenant_ids: set[int]) -> tuple[set[int], set[int]]:
    """Of the given keys and tenants, returns (keys no longer usable to subscribe: revoked,
    expired or without the `subscribe` scope; tenants suspended); one query each, run every few
    seconds by each hub to close connections that lost their right. The rule of
    `tenants.access.principal_denial` for "subscribe", as queries over many keys at once."""
    now = timezone.now()
    usable = {
        pk
        for pk, scopes in ApiKey.objects.filter(
            pk__in=key_ids, revoked_at__isnull=True, tenant__is_active=True
        )
        .exclude(expires_at__lte=now)
        .values_list("pk", "scopes")
        if "subscribe" in scopes
    }
    active = set(
        Tenant.objects.filter(pk__in=tenant_ids, is_active=True).values_list("pk", flat=True)
    )
    return key_ids - usable, tenant_ids - active


def _session_hash_current(user, session_hash: str | None) -> bool:
    """Whether a session's stored auth hash still matches the user's, as Django's own
    `auth.get_user` decides it (SECRET_KEY, then SECRET_KEY_FALLBACKS): a password change
    makes every other session of the user stop authenticating."""
    if not session_hash:
        return False
    if constant_time_compare(session_hash, user.get_session_auth_hash()):
        return True
    return any(
        constant_time_compare(session_hash, user._get_session_auth_hash(secret=fallback))
        for fallback in settings.SECRET_KEY_FALLBACKS
    )


def session_grants_revoked(
    *, grants: set[tuple[int, int, str]]
) -> tuple[set[tuple[int, int, str]], set[tuple[int, int, str]], set[tuple[int, int, str]]]:
    """Of the given (user, tenant, session key) grants of dashboard subscriptions, returns
    (forbidden, ended, logged_out): the user was deactivated or lost staff status and
    membership; the session itself is over (logout, expiry, or a new key after logging in
    again, when the user may well still be signed in); or the session no longer
    authenticates its user because the password changed (Django's remedy for a stolen
    session). Run every few seconds by each hub, with `credentials_revoked`.
    """
    if not grants:
        return set(), set(), set()
    now = timezone.now()
    user_ids = {user_id for user_id, _, _ in grants}
    users = {u.pk: u for u in get_user_model().objects.filter(pk__in=user_ids, is_active=True)}
    staff = {pk: user.is_staff for pk, user in users.items()}
    members = set(
        Tenant.members.through.objects.filter(
            user_id__in=user_ids, tenant_id__in={tenant_id for _, tenant_id, _ in grants}
        ).values_list("user_id", "tenant_id")
    )
    live_sessions: dict[str, str | None] | None = None
    if settings.SESSION_ENGINE in _DATABASE_SESSION_ENGINES:
        live_sessions = {
            row.session_key: row.get_decoded().get(HASH_SESSION_KEY)
            for row in Session.objects.filter(
                session_key__in={key for _, _, key in grants}, expire_date__gt=now
            )
        }
    forbidden, ended, logged_out = set(), set(), set()
    for grant in grants:
        user_id, tenant_id, session_key = grant
        if user_id not in staff or not (staff[user_id] or (user_id, tenant_id) in members):
            forbidden.add(grant)
        elif live_sessions is not None and session_key not in live_sessions:
            ended.add(grant)
        elif live_sessions is not None and not _session_hash_current(
            users[user_id], live_sessions[session_key]
        ):
            logged_out.add(grant)
    return forbidden, ended, logged_out
