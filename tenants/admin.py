"""Provides the Django admin for tenants, API keys and the audit trail (read-only)."""

from django import forms
from django.contrib import admin
from django.template.response import TemplateResponse

from streams.selectors import tenant_stats
from tenants import services
from tenants.actors import Actor
from tenants.models import SCOPES, ApiKey, AuditEntry, Tenant

_SHORT_CHANGES = 80


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "is_active",
        "live_connections",
        "max_connections",
        "publish_rate",
        "created_at",
    ]
    list_filter = ["is_active"]
    search_fields = ["slug", "name"]
    filter_horizontal = ["members"]
    actions = ["suspend", "resume"]

    def save_model(self, request, obj, form, change):
        actor = Actor.from_request(request)
        # The members are given to the service, which records them; save_related sets them
        # again afterwards, the same set, which changes nothing.
        members = form.cleaned_data.get("members")
        if change:
            services.tenant_update(actor=actor, tenant=obj, members=members)
            return
        tenant = services.tenant_create(
            actor=actor,
            slug=obj.slug,
            name=obj.name,
            is_active=obj.is_active,
            max_connections=obj.max_connections,
            publish_rate=obj.publish_rate,
            members=members or (),
        )
        obj.pk, obj.name, obj.created_at = tenant.pk, tenant.name, tenant.created_at

    def delete_model(self, request, obj):
        """Called by the delete page: deleted through the service, which records it."""
        services.tenant_delete(actor=Actor.from_request(request), tenant=obj)

    def delete_queryset(self, request, queryset):
        """Called by the "delete selected" action: each tenant recorded, as on its own page."""
        actor = Actor.from_request(request)
        for tenant in queryset:
            services.tenant_delete(actor=actor, tenant=tenant)

    @admin.display(description="Live connections")
    def live_connections(self, tenant) -> str:
        try:
            connections = tenant_stats(tenant_id=tenant.pk)["connections"]
        except Exception:  # Redis is down: the list of tenants still shows
            return "unavailable"
        return f"{connections['websocket']} ws · {connections['sse']} sse"

    # permissions=["change"]: without it Django offers an action to anyone who may see the
    # changelist, a view-only staff user included.
    @admin.action(description="Suspend selected tenants", permissions=["change"])
    def suspend(self, request, queryset):
        actor = Actor.from_request(request)
        for tenant in queryset:
            services.tenant_set_active(actor=actor, tenant=tenant, active=False)

    @admin.action(description="Resume selected tenants", permissions=["change"])
    def resume(self, request, queryset):
        actor = Actor.from_request(request)
        for tenant in queryset:
            services.tenant_set_active(actor=actor, tenant=tenant, active=True)


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(s, s) for s in SCOPES],
        initial=list(SCOPES),
        widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = ApiKey
        fields = ["tenant", "name", "scopes", "expires_at"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = [
        "prefix",
        "tenant",
        "name",
        "scopes",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["tenant"]
    search_fields = ["prefix", "name", "tenant__slug"]
    readonly_fields = ["prefix", "hashed_secret", "created_at", "last_used_at", "revoked_at"]
    fields = ["tenant", "name", "scopes", "expires_at", *readonly_fields]
    actions = ["revoke"]

    def delete_model(self, request, obj):
        """Called by the delete page: deleted through the service, which records it."""
        services.api_key_delete(actor=Actor.from_request(request), api_key=obj)

    def delete_queryset(self, request, queryset):
        """Called by the "delete selected" action: each key recorded, as on its own page."""
        actor = Actor.from_request(request)
        for api_key in queryset:
            services.api_key_delete(actor=actor, api_key=api_key)

    def get_readonly_fields(self, request, obj=None):
        # A key stays with the tenant it was issued for.
        return [*self.readonly_fields, "tenant"] if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        actor = Actor.from_request(request)
        if change:
            services.api_key_update(
                actor=actor,
                api_key=obj,
                name=obj.name,
                scopes=obj.scopes,
                expires_at=obj.expires_at,
            )
            return
        issued = services.api_key_issue(
            actor=actor,
            tenant=obj.tenant,
            name=obj.name,
            scopes=obj.scopes or SCOPES,
            expires_at=obj.expires_at,
        )
        obj.pk, obj.prefix = issued.api_key.pk, issued.api_key.prefix
        request.eventhub_issued_secret = issued.secret  # shown by response_add, once

    def response_add(self, request, obj, post_url_continue=None):
        """Called after a key is added: shows its secret in this response, once. Not through
        `messages`, whose default storage is a cookie the browser sends back (signed, but
        readable), and not on any later page."""
        secret = getattr(request, "eventhub_issued_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        context = {**self.admin_site.each_context(request), "api_key": obj, "secret": secret}
        response = TemplateResponse(request, "admin/tenants/apikey/issued.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request, queryset):
        actor = Actor.from_request(request)
        for api_key in queryset:
            services.api_key_revoke(actor=actor, api_key=api_key)


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit trail, read-only: entries are written by the services alone and never changed
    or deleted by the app (to view them, a user needs the view permission or superuser)."""

    list_display = [
        "at",
        "actor",
        "actor_address",
        "action",
        "tenant_slug",
        "target",
        "short_changes",
    ]
    list_filter = ["action", "actor_kind", "tenant"]
    search_fields = ["target", "actor_name", "tenant_slug"]
    date_hierarchy = "at"

    # View only, for superusers and users with the view permission: the change page shows every
    # field read-only, and no action (not even delete_selected) is offered.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Actor", ordering="actor_name")
    def actor(self, entry) -> str:
        return f"{entry.get_actor_kind_display()}: {entry.actor_name}"

    @admin.display(description="Changes")
    def short_changes(self, entry) -> str:
        parts = []
        for field, change in (entry.changes or {}).items():
            if not (isinstance(change, list) and len(change) == 2):
                parts.append(f"{field}={change!r}")  # not a [before, after] pair
            elif change[0] is None:
                parts.append(f"{field}={change[1]!r}")
            else:
                parts.append(f"{field}: {change[0]!r} → {change[1]!r}")
        text = "; ".join(parts)
        return text if len(text) <= _SHORT_CHANGES else text[: _SHORT_CHANGES - 1] + "…"
