"""Provides the settings of a small Django project using the Eventhub outbox, as a user's
project would: the app installed, the hub's URL and key, its own database (SQLite, or
PostgreSQL when OUTBOX_DATABASE_URL names one)."""

import os
from urllib.parse import urlparse

SECRET_KEY = "outbox-test-project-not-a-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "eventhub_client.django"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_url = urlparse(os.environ.get("OUTBOX_DATABASE_URL", "sqlite:///outbox.sqlite3"))
if _url.scheme.startswith("postgres"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _url.path.lstrip("/"),
            "USER": _url.username or "postgres",
            "HOST": _url.hostname or "127.0.0.1",
            "PORT": str(_url.port or 5432),
        }
    }
else:
    DATABASES = {
        # sqlite:///relative.db or sqlite:////absolute/path.db, as dj-database-url reads them
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _url.path[1:]}
    }

EVENTHUB_URL = os.environ.get("EVENTHUB_URL", "http://127.0.0.1:8000")
EVENTHUB_KEY = os.environ.get("EVENTHUB_KEY", "")
EVENTHUB_OUTBOX_LEASE = float(os.environ.get("EVENTHUB_OUTBOX_LEASE", "60"))
EVENTHUB_RETRY_WAIT = 2.0
