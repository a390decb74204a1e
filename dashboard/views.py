"""Provides the dashboard pages; they render what the selectors return and call services."""

import json

from asgiref.sync import async_to_sync
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST
from rest_framework.exceptions import Throttled, ValidationError

from streams.backends import HubUnavailable
from streams.event_input import PayloadTooLarge
from streams.presence.selectors import presence_topics
from streams.publishing import publish_request
from streams.selectors import tenant_stats
from tenants.access import TENANT_SUSPENDED
from tenants.selectors import tenants_visible_to
from webhooks.selectors import webhook_endpoints_summary


def _visible_tenant(request, slug: str):
    tenant = tenants_visible_to(user=request.user).filter(slug=slug).first()
    if tenant is None:
        raise Http404
    return tenant


@login_required
@require_GET
def overview(request):
    tenants = [(t, tenant_stats(tenant_id=t.pk)) for t in tenants_visible_to(user=request.user)]
    return render(request, "dashboard/overview.html", {"tenants": tenants})


@login_required
@require_GET
def overview_stats(request):
    """The overview's live numbers, polled by the page."""
    return JsonResponse(
        {
            "tenants": [
                {"slug": t.slug, "active": t.is_active, **tenant_stats(tenant_id=t.pk)}
                for t in tenants_visible_to(user=request.user)
            ]
        }
    )


@login_required
@require_GET
def tenant_detail(request, slug: str):
    tenant = _visible_tenant(request, slug)
    return render(
        request,
        "dashboard/tenant.html",
        {
            "tenant": tenant,
            "stats": tenant_stats(tenant_id=tenant.pk),
            "webhooks": webhook_endpoints_summary(tenant_id=tenant.pk),
        },
    )


@login_required
@require_GET
def tenant_stats_json(request, slug: str):
    tenant = _visible_tenant(request, slug)
    return JsonResponse(tenant_stats(tenant_id=tenant.pk))


@login_required
@require_GET
def tenant_presence_json(request, slug: str):
    """The tenant's topics with someone present and their counts, polled by the page (a
    dashboard session watching presence is not among them)."""
    tenant = _visible_tenant(request, slug)
    try:
        return JsonResponse(presence_topics(tenant_id=tenant.pk))
    except HubUnavailable:
        return JsonResponse({"detail": "The hub is unavailable."}, status=503)


def _one_line(field_errors) -> str:
    if not isinstance(field_errors, dict):
        return (
            " ".join(map(str, field_errors))
            if isinstance(field_errors, list)
            else str(field_errors)
        )
    return "; ".join(
        f"{field}: {' '.join(map(str, errors)) if isinstance(errors, list) else errors}"
        for field, errors in field_errors.items()
    )


@login_required
@require_POST
def tenant_publish(request, slug: str):
    """The test-publish form: the API's own publish operation, with the tenant's rate."""
    tenant = _visible_tenant(request, slug)
    if not tenant.is_active:
        return JsonResponse({"detail": TENANT_SUSPENDED}, status=403)
    try:
        body = json.loads(request.body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser
        body = None
    if not isinstance(body, dict) or "topic" not in body:
        return JsonResponse({"detail": "Send JSON with topic, type and data."}, status=400)
    event = {"data": None, **body}
    if not event.get("type"):
        event["type"] = "message"
    try:
        accepted = async_to_sync(publish_request)(
            tenant_id=tenant.pk,
            rate=tenant.publish_rate,
            raw_body=json.dumps(event, separators=(",", ":")).encode(),
            path=request.path,
            idempotency_key=None,
            batch=False,
        )
    except PayloadTooLarge as too_large:
        return JsonResponse({"detail": str(too_large.detail)}, status=413)
    except ValidationError as invalid:
        # One line for the form to show, beside the field errors the API would give.
        detail = invalid.detail if isinstance(invalid.detail, dict) else {}
        return JsonResponse({"detail": _one_line(invalid.detail), **detail}, status=400)
    except Throttled:
        return JsonResponse({"detail": "Publish rate limit exceeded."}, status=429)
    except HubUnavailable:
        return JsonResponse({"detail": "The hub is unavailable."}, status=503)
    return JsonResponse(accepted, status=202)
