"""Provides the HTTP URLs: API, health, schema, admin and dashboard."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from eventhub import asyncapi, health

urlpatterns = [
    path("api/v1/", include("streams.urls")),
    path("api/v1/", include("webhooks.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/asyncapi.json", asyncapi.asyncapi_view, name="asyncapi"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    # Login and logout only: the password reset and change pages need SMTP (a reset POST
    # without it is a 500) and build links from the request's Host.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", include("dashboard.urls")),
]

handler400 = "eventhub.exceptions.bad_request"
handler403 = "eventhub.exceptions.permission_denied"
handler404 = "eventhub.exceptions.not_found"
handler500 = "eventhub.exceptions.server_error"
