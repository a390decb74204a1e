"""Provides the ASGI application: HTTP (Django, the SSE stream and the publish fast path) and
WebSocket."""

import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventhub.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import DatabaseError, connections  # noqa: E402
from django.urls import re_path  # noqa: E402

from eventhub import daphne_bodies, daphne_inbox, gctuning, malloctuning, redaction  # noqa: E402
from streams import runtime  # noqa: E402
from streams.delivery import daphne_protocol  # noqa: E402
from streams.routing import (  # noqa: E402
    ingest_urlpatterns,
    sse_urlpatterns,
    websocket_urlpatterns,
)
from tenants.demo import DEMO_USERNAME, OLD_DEMO_PASSWORD, demo_password_in_use  # noqa: E402

if not settings.DEBUG and os.path.basename(sys.argv[0]) == "daphne":
    # Serving with DEBUG off: never with the demo user's old, public password.
    try:
        refuse = demo_password_in_use()
    except DatabaseError:
        refuse = False  # not migrated yet: there is no user
    finally:
        connections.close_all()  # opened on this thread; requests use their own
    if refuse:
        raise SystemExit(
            f"Refusing to serve: the user {DEMO_USERNAME!r} still has the password "
            f"{OLD_DEMO_PASSWORD!r}. Change it: python manage.py changepassword {DEMO_USERNAME}"
        )

redaction.install()
runtime.install_shutdown_hook()
daphne_bodies.install()
daphne_inbox.install()
daphne_protocol.install()
malloctuning.install()

application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [*sse_urlpatterns, *ingest_urlpatterns(django_asgi_app), re_path(r"", django_asgi_app)]
        ),
        "websocket": URLRouter(websocket_urlpatterns),
    }
)

gctuning.install()  # last: what was loaded above is frozen out of the collector's way
