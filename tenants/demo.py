"""Provides what is left of the demo admin's old password: `make run` used to create `admin`
with the password `admin` in db.sqlite3, a file the Procfile's web process (DEBUG off) may
serve later. Now it gets a random password, printed once; a database that still has the old
one fails `check --deploy` (tenants.E001) and stops daphne from serving with DEBUG off."""

from django.contrib.auth import get_user_model

DEMO_USERNAME = "admin"
OLD_DEMO_PASSWORD = "admin"


def demo_password_in_use() -> bool:
    """True when the demo user still has the password `make run` used to give it (one
    password hash: the user is looked up by name)."""
    user = get_user_model().objects.filter(username=DEMO_USERNAME).first()
    return user is not None and user.check_password(OLD_DEMO_PASSWORD)
