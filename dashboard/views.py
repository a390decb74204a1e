"""Provides the dashboard pages: they only render what the selectors return."""

from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404
from django.shortcuts import render

from streams.selectors import tenant_stats
from tenants.selectors import tenant_get, tenant_list


@staff_member_required
def overview(request):
    tenants = [(tenant, tenant_stats(tenant_id=tenant.pk)) for tenant in tenant_list()]
    return render(request, "dashboard/overview.html", {"tenants": tenants})


@staff_member_required
def tenant_detail(request, slug: str):
    tenant = tenant_get(slug=slug)
    if tenant is None:
        raise Http404
    return render(
        request,
        "dashboard/tenant.html",
        {"tenant": tenant, "stats": tenant_stats(tenant_id=tenant.pk)},
    )
