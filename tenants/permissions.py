"""Provides DRF permissions: an API key of an active tenant, with the scope a view names."""

from rest_framework import exceptions
from rest_framework.permissions import BasePermission

from tenants.access import principal_denial
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
    denial = principal_denial(principal, scope)
    if denial is not None:
        raise exceptions.PermissionDenied(denial.detail)
