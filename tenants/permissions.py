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
        principal_permit(principal, getattr(view, "required_scope", None))
        return True


def principal_permit(principal: Principal, scope: str | None) -> None:
    """Raises PermissionDenied unless the key's tenant is active and the key holds `scope`."""
    if not principal.tenant_active:
        raise exceptions.PermissionDenied("This tenant is suspended.")
    if scope and scope not in principal.scopes:
        raise exceptions.PermissionDenied(f"This API key lacks the '{scope}' scope.")
