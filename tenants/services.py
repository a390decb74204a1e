"""Provides the writes on tenants and their API keys."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from tenants import selectors
from tenants.keys import key_generate, key_hash
from tenants.models import SCOPES, ApiKey, Tenant


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    secret: str  # the whole key, shown once and never stored


def tenant_create(
    *,
    slug: str,
    name: str = "",
    max_connections: int | None = None,
    publish_rate: int | None = None,
) -> Tenant:
    tenant = Tenant(
        slug=slug, name=name or slug, max_connections=max_connections, publish_rate=publish_rate
    )
    tenant.full_clean()
    tenant.save()
    return tenant


def _forget_cached_keys() -> None:
    """Empties this process's key cache now and again when the surrounding transaction commits:
    a request served in between (the admin saves inside a transaction) may have cached the row
    as it was before."""
    selectors.api_key_cache_clear()
    transaction.on_commit(selectors.api_key_cache_clear)


def tenant_set_active(*, tenant: Tenant, active: bool) -> Tenant:
    tenant.is_active = active
    tenant.save(update_fields=["is_active"])
    _forget_cached_keys()
    return tenant


def tenant_update(*, tenant: Tenant) -> Tenant:
    """Saves a tenant as edited (in the admin): its active flag and limits, which the cached
    principals of its keys carry, apply in this process at once."""
    tenant.save()
    _forget_cached_keys()
    return tenant


def _scopes_checked(scopes: Iterable[str]) -> list[str]:
    """The scopes as stored (sorted, once each); ValueError names any unknown one."""
    checked = sorted(set(scopes))
    unknown = set(checked) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
    return checked


def api_key_issue(
    *,
    tenant: Tenant,
    name: str = "",
    scopes: Iterable[str] = SCOPES,
    expires_at: datetime | None = None,
) -> IssuedKey:
    scopes = _scopes_checked(scopes)
    prefix, raw_key = key_generate()
    api_key = ApiKey.objects.create(
        tenant=tenant,
        name=name,
        prefix=prefix,
        hashed_secret=key_hash(raw_key),
        scopes=scopes,
        expires_at=expires_at,
    )
    return IssuedKey(api_key=api_key, secret=raw_key)


def api_key_update(
    *, api_key: ApiKey, name: str, scopes: Iterable[str], expires_at: datetime | None
) -> ApiKey:
    """Changes what a key is called, may do and until when; takes effect in this process at
    once (its key cache is emptied), in others within EVENTHUB_KEY_CACHE_SECONDS, and on live
    connections of every process at their next credential check."""
    scopes = _scopes_checked(scopes)
    api_key.name, api_key.scopes, api_key.expires_at = name, scopes, expires_at
    api_key.save(update_fields=["name", "scopes", "expires_at"])
    _forget_cached_keys()
    return api_key


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    with transaction.atomic():
        if api_key.revoked_at is None:
            api_key.revoked_at = timezone.now()
            api_key.save(update_fields=["revoked_at"])
    _forget_cached_keys()
    return api_key


_used: dict[int, datetime] = {}


def api_key_mark_used(*, key_id: int) -> None:
    """Notes a key's use in memory; api_keys_flush_usage writes it later, off the request path."""
    _used[key_id] = timezone.now()


def api_keys_flush_usage() -> int:
    """Writes the last-used times noted since the previous flush; returns how many keys."""
    if not _used:
        return 0
    used = dict(_used)
    _used.clear()
    for key_id, when in used.items():
        ApiKey.objects.filter(pk=key_id).update(last_used_at=when)
    return len(used)
