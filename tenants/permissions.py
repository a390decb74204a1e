"""Provides DRF permissions: an API key of an active tenant, with the scope a view names."""

from rest_framework import exceptions
from rest_framework.permissions import BasePermission

from tenants.selectors import Principal


class HasApiKey(BasePermission):
    """Grants access to requests authenticated by a key of an active tenant holding the view's
    `required_scope` (if it names one)."""

    def has_permission(self, request, view) -> bool:
        principal = request.auth
        if not isinstance(principal, Principal):
            raise exceptions.NotAuthenticated("An API key is required (Authorization: Bearer).")
        if not principal.tenant_active:
            raise exceptions.PermissionDenied("This tenant is suspended.")
        scope = getattr(view, "required_scope", None)
        if scope and scope not in principal.scopes:
            raise exceptions.PermissionDenied(f"This API key lacks the '{scope}' scope.")
        return True
