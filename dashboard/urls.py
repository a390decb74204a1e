"""Provides the dashboard URLs."""

from django.urls import path

from dashboard import views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("<slug:slug>/", views.tenant_detail, name="tenant"),
]
