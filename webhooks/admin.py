"""Provides the Django admin for webhook endpoints (secret shown once, rotation) and their
deliveries with every attempt (a dead one can be sent again)."""

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse

from streams.topics import pattern_valid
from tenants.actors import Actor
from webhooks import services
from webhooks.addresses import AddressRefused, url_address
from webhooks.models import (
    KINDS,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)


class EndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https")
    topics = forms.CharField(initial="*", help_text="Topic patterns, comma-separated.")
    kinds = forms.MultipleChoiceField(
        choices=[(k, k) for k in KINDS], initial=["event"], widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["tenant", "url", "topics", "kinds", "active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["topics"] = ",".join(self.instance.topics)

    def clean_url(self):
        url = self.cleaned_data["url"]
        try:
            url_address(url)
        except AddressRefused as exc:
            raise forms.ValidationError(str(exc)) from exc
        return url

    def clean_topics(self):
        topics = [t.strip() for t in self.cleaned_data["topics"].split(",") if t.strip()]
        bad = [t for t in topics if not pattern_valid(t)]
        if not topics or bad:
            raise forms.ValidationError("Give topic patterns such as orders.* or *.")
        return topics


def _secret_page(request, admin_site, endpoint, secret, *, rotated):
    context = {
        **admin_site.each_context(request),
        "endpoint": endpoint,
        "secret": secret,
        "rotated": rotated,
    }
    response = TemplateResponse(request, "admin/webhooks/secret.html", context)
    response["Cache-Control"] = "no-store"
    return response


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = ["url", "tenant", "kinds", "topics", "active", "disabled_reason", "created_at"]
    list_filter = ["active", "tenant"]
    search_fields = ["url"]
    readonly_fields = ["disabled_reason", "failing_since", "created_at"]
    actions = ["rotate_secret", "enable"]

    def save_model(self, request, obj, form, change):
        if change:
            obj.save()
            return
        created = services.webhook_endpoint_create(
            tenant_id=obj.tenant_id,
            url=obj.url,
            topics=obj.topics,
            kinds=obj.kinds,
            actor=Actor.from_request(request),
        )
        obj.pk = created.endpoint.pk
        request.eventhub_webhook_secret = created.secret  # shown by response_add, once

    def response_add(self, request, obj, post_url_continue=None):
        """Called after an endpoint is added: shows its secret in this response, once."""
        secret = getattr(request, "eventhub_webhook_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        return _secret_page(request, self.admin_site, obj, secret, rotated=False)

    def delete_model(self, request, obj):
        services.webhook_endpoint_delete(endpoint=obj, actor=Actor.from_request(request))

    def delete_queryset(self, request, queryset):
        actor = Actor.from_request(request)
        for endpoint in queryset:
            services.webhook_endpoint_delete(endpoint=endpoint, actor=actor)

    @admin.action(description="Rotate the secret (one endpoint)", permissions=["change"])
    def rotate_secret(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one endpoint.", messages.WARNING)
            return None
        endpoint = queryset.get()
        secret = services.webhook_secret_rotate(
            endpoint=endpoint, actor=Actor.from_request(request)
        )
        return _secret_page(request, self.admin_site, endpoint, secret, rotated=True)

    @admin.action(description="Enable selected endpoints", permissions=["change"])
    def enable(self, request, queryset):
        for endpoint in queryset:
            services.webhook_endpoint_enable(endpoint=endpoint)


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ["at", "status_code", "error", "duration_ms"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "webhook_id",
        "type",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["status", "type"]
    search_fields = ["webhook_id", "endpoint__url"]
    list_select_related = ["endpoint"]
    inlines = [AttemptInline]
    actions = ["resend"]
    readonly_fields = [
        "endpoint",
        "webhook_id",
        "type",
        "body",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "created_at",
    ]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Send selected dead deliveries again", permissions=["change"])
    def resend(self, request, queryset):
        actor = Actor.from_request(request)
        dead = queryset.filter(status=DeliveryStatus.DEAD).select_related("endpoint")
        n = 0
        for delivery in dead:
            services.webhook_delivery_resend(delivery=delivery, actor=actor)
            n += 1
        self.message_user(request, f"{n} dead deliveries will be sent again.")
