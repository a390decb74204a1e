"""Provides the writes on tenants and their API keys, each recorded in the audit trail."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from tenants import selectors
from tenants.actors import Actor
from tenants.keys import key_generate, key_hash
from tenants.models import SCOPES, ApiKey, AuditAction, AuditEntry, Tenant

if TYPE_CHECKING:
    # The user model as django-stubs resolves AUTH_USER_MODEL; at run time, whatever it is.
    from django.contrib.auth.models import User

# What tenant_update compares and records; `members` apart (a set of users).
_TENANT_FIELDS = ("slug", "name", "max_connections", "publish_rate")
_API_KEY_FIELDS = ("name", "scopes", "expires_at")


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    secret: str  # the whole key, shown once and never stored


def audit_record(
    *,
    actor: Actor,
    action: str,
    tenant: Tenant | None = None,
    tenant_id: int | None = None,
    target: str = "",
    changes: dict[str, Any] | None = None,
) -> AuditEntry:
    """Records one change in the audit trail and returns its entry. Call it inside the
    transaction that makes the change, so that the change and its entry commit together.

    Give exactly one of `tenant` and `tenant_id` (a caller that holds only a principal, such
    as an API view, has the id); an id whose tenant is gone leaves the entry without one.
    `action` is one of tenants.models.AuditAction; `target` names what was acted on (a key
    prefix, a token id); `changes` maps each field to [before, after], before None for what
    was created.
    """
    if (tenant is None) == (tenant_id is None):
        raise TypeError("audit_record takes exactly one of tenant and tenant_id")
    if tenant_id is not None:
        tenant = Tenant.objects.filter(pk=tenant_id).first()
    return AuditEntry.objects.create(
        actor_kind=actor.kind,
        actor_name=actor.name,
        actor_address=actor.address or None,
        action=action,
        tenant=tenant,
        tenant_slug=tenant.slug if tenant is not None else "",
        target=target,
        changes=changes or {},
    )


def _usernames(users: Iterable["User"]) -> list[str]:
    return sorted(user.get_username() for user in users)


def tenant_create(
    *,
    actor: Actor,
    slug: str,
    name: str = "",
    is_active: bool = True,
    max_connections: int | None = None,
    publish_rate: int | None = None,
    members: Iterable["User"] = (),
) -> Tenant:
    """Creates a tenant (ValidationError when a field is invalid or the slug is taken)."""
    tenant = Tenant(
        slug=slug,
        name=name or slug,
        is_active=is_active,
        max_connections=max_connections,
        publish_rate=publish_rate,
    )
    tenant.full_clean()
    members = list(members)
    with transaction.atomic():
        tenant.save()
        tenant.members.set(members)
        changes = {
            field: [None, getattr(tenant, field)] for field in (*_TENANT_FIELDS, "is_active")
        }
        if members:
            changes["members"] = [None, _usernames(members)]
        audit_record(actor=actor, action=AuditAction.TENANT_CREATE, tenant=tenant, changes=changes)
    return tenant


def _forget_cached_keys() -> None:
    """Empties this process's key cache now and again when the surrounding transaction commits:
    a request served in between (the admin saves inside a transaction) may have cached the row
    as it was before."""
    selectors.api_key_cache_clear()
    transaction.on_commit(selectors.api_key_cache_clear)


def _record_active(*, actor: Actor, tenant: Tenant, was_active: bool) -> None:
    action = AuditAction.TENANT_RESUME if tenant.is_active else AuditAction.TENANT_SUSPEND
    changes = {"is_active": [was_active, tenant.is_active]}
    audit_record(actor=actor, action=action, tenant=tenant, changes=changes)


def tenant_delete(*, actor: Actor, tenant: Tenant) -> None:
    """Deletes a tenant with its keys, its log and its revocations, and records it (the entry
    keeps the tenant's slug; the tenant's earlier entries stay too, with their slug)."""
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=AuditAction.TENANT_DELETE,
            tenant=tenant,
            target=tenant.slug,
            changes={"keys": [tenant.api_keys.count(), None]},
        )
        tenant.delete()
    _forget_cached_keys()


def tenant_set_active(*, actor: Actor, tenant: Tenant, active: bool) -> Tenant:
    """Suspends or resumes a tenant; one that already is as asked is left as it is, and
    nothing is recorded."""
    with transaction.atomic():
        rows = Tenant.objects.select_for_update().values_list("is_active", flat=True)
        was_active = rows.get(pk=tenant.pk)
        tenant.is_active = active
        if was_active == active:
            return tenant
        tenant.save(update_fields=["is_active"])
        _record_active(actor=actor, tenant=tenant, was_active=was_active)
        _forget_cached_keys()
    return tenant


def tenant_update(
    *, actor: Actor, tenant: Tenant, members: Iterable["User"] | None = None
) -> Tenant:
    """Saves a tenant as edited (in the admin), and its members when given: its active flag
    and limits, which the cached principals of its keys carry, apply in this process at once.

    Records what differs from the row in the database: a change of `is_active` as a suspend
    or resume, the rest as one update; an edit that changes nothing records nothing.
    """
    with transaction.atomic():
        before = Tenant.objects.select_for_update().get(pk=tenant.pk)
        changes: dict[str, Any] = {
            field: [getattr(before, field), getattr(tenant, field)]
            for field in _TENANT_FIELDS
            if getattr(before, field) != getattr(tenant, field)
        }
        if members is not None:
            members = list(members)
            old, new = _usernames(before.members.all()), _usernames(members)
            if old != new:
                changes["members"] = [old, new]
        tenant.save()
        if members is not None:
            tenant.members.set(members)
        if before.is_active != tenant.is_active:
            _record_active(actor=actor, tenant=tenant, was_active=before.is_active)
        if changes:
            audit_record(
                actor=actor, action=AuditAction.TENANT_UPDATE, tenant=tenant, changes=changes
            )
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
    actor: Actor,
    tenant: Tenant,
    name: str = "",
    scopes: Iterable[str] = SCOPES,
    expires_at: datetime | None = None,
) -> IssuedKey:
    scopes = _scopes_checked(scopes)
    prefix, raw_key = key_generate()
    with transaction.atomic():
        api_key = ApiKey.objects.create(
            tenant=tenant,
            name=name,
            prefix=prefix,
            hashed_secret=key_hash(raw_key),
            scopes=scopes,
            expires_at=expires_at,
        )
        audit_record(
            actor=actor,
            action=AuditAction.API_KEY_ISSUE,
            tenant=tenant,
            target=prefix,
            changes={field: [None, getattr(api_key, field)] for field in _API_KEY_FIELDS},
        )
    return IssuedKey(api_key=api_key, secret=raw_key)


def api_key_update(
    *,
    actor: Actor,
    api_key: ApiKey,
    name: str,
    scopes: Iterable[str],
    expires_at: datetime | None,
) -> ApiKey:
    """Changes what a key is called, may do and until when; takes effect in this process at
    once (its key cache is emptied), in others within EVENTHUB_KEY_CACHE_SECONDS, and on live
    connections of every process at their next credential check. Records what differs from
    the row in the database; an edit that changes nothing records (and saves) nothing."""
    scopes = _scopes_checked(scopes)
    api_key.name, api_key.scopes, api_key.expires_at = name, scopes, expires_at
    with transaction.atomic():
        before = ApiKey.objects.select_for_update().select_related("tenant").get(pk=api_key.pk)
        changes = {
            field: [getattr(before, field), getattr(api_key, field)]
            for field in _API_KEY_FIELDS
            if getattr(before, field) != getattr(api_key, field)
        }
        if not changes:
            return api_key
        api_key.save(update_fields=list(_API_KEY_FIELDS))
        audit_record(
            actor=actor,
            action=AuditAction.API_KEY_UPDATE,
            tenant=before.tenant,
            target=api_key.prefix,
            changes=changes,
        )
        _forget_cached_keys()
    return api_key


def api_key_revoke(*, actor: Actor, api_key: ApiKey) -> ApiKey:
    """Revokes a key; one that is revoked already keeps its revocation time, and nothing is
    recorded."""
    with transaction.atomic():
        before = ApiKey.objects.select_for_update().select_related("tenant").get(pk=api_key.pk)
        if before.revoked_at is not None:
            api_key.revoked_at = before.revoked_at
        else:
            api_key.revoked_at = timezone.now()
            api_key.save(update_fields=["revoked_at"])
            audit_record(
                actor=actor,
                action=AuditAction.API_KEY_REVOKE,
                tenant=before.tenant,
                target=api_key.prefix,
                changes={"revoked_at": [None, api_key.revoked_at]},
            )
    _forget_cached_keys()
    return api_key


def api_key_delete(*, actor: Actor, api_key: ApiKey) -> None:
    """Deletes a key (its connections close at their next credential check, as on a
    revocation) and records it with its prefix."""
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=AuditAction.API_KEY_DELETE,
            tenant_id=api_key.tenant_id,
            target=api_key.prefix,
        )
        api_key.delete()
    _forget_cached_keys()


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
