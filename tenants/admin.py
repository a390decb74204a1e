"""Provides the Django admin for tenants and API keys."""

from django import forms
from django.contrib import admin
from django.template.response import TemplateResponse

from streams.selectors import tenant_stats
from tenants import services
from tenants.models import SCOPES, ApiKey, Tenant


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
        if change:
            services.tenant_update(tenant=obj)
            return
        super().save_model(request, obj, form, change)

    @admin.display(description="Live connections")
    def live_connections(self, tenant) -> str:
        connections = tenant_stats(tenant_id=tenant.pk)["connections"]
        return f"{connections['websocket']} ws · {connections['sse']} sse"

    # permissions=["change"]: without it Django offers an action to anyone who may see the
    # changelist, a view-only staff user included.
    @admin.action(description="Suspend selected tenants", permissions=["change"])
    def suspend(self, request, queryset):
        for tenant in queryset:
            services.tenant_set_active(tenant=tenant, active=False)

    @admin.action(description="Resume selected tenants", permissions=["change"])
    def resume(self, request, queryset):
        for tenant in queryset:
            services.tenant_set_active(tenant=tenant, active=True)


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

    def get_readonly_fields(self, request, obj=None):
        # A key stays with the tenant it was issued for.
        return [*self.readonly_fields, "tenant"] if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            services.api_key_update(
                api_key=obj, name=obj.name, scopes=obj.scopes, expires_at=obj.expires_at
            )
            return
        issued = services.api_key_issue(
            tenant=obj.tenant, name=obj.name, scopes=obj.scopes or SCOPES, expires_at=obj.expires_at
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
        for api_key in queryset:
            services.api_key_revoke(api_key=api_key)
