"""Provides the tenants app's system checks (registered when the app is ready)."""

from django.core.checks import Error, Tags, register
from django.db import DatabaseError

from tenants.demo import DEMO_USERNAME, OLD_DEMO_PASSWORD, demo_password_in_use


@register(Tags.security, deploy=True)
def demo_admin_password(app_configs, **kwargs) -> list[Error]:
    """Run by `check --deploy`: fails while the demo user has its old, public password."""
    try:
        in_use = demo_password_in_use()
    except DatabaseError:
        return []  # not migrated yet: no user to check
    if not in_use:
        return []
    return [
        Error(
            f"The user {DEMO_USERNAME!r} still has the password {OLD_DEMO_PASSWORD!r}, which "
            "anyone can guess.",
            hint=f"Change it: python manage.py changepassword {DEMO_USERNAME}",
            id="tenants.E001",
        )
    ]
