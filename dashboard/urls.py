"""Provides the dashboard URLs."""

from django.urls import path

from dashboard import views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("stats.json", views.overview_stats, name="overview-stats"),
    path("<slug:slug>/", views.tenant_detail, name="tenant"),
    path("<slug:slug>/stats.json", views.tenant_stats_json, name="tenant-stats"),
    path("<slug:slug>/presence.json", views.tenant_presence_json, name="tenant-presence"),
    path("<slug:slug>/publish", views.tenant_publish, name="tenant-publish"),
]
