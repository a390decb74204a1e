"""Provides the ASGI application: HTTP (Django, the SSE stream and the publish fast path) and
WebSocket."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventhub.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from eventhub import daphne_bodies, gctuning, redaction  # noqa: E402
from eventhub.origins import OriginGuard  # noqa: E402
from eventhub.sessions import SessionWhenCookie  # noqa: E402
from streams import runtime  # noqa: E402
from streams.routing import (  # noqa: E402
    ingest_urlpatterns,
    sse_urlpatterns,
    websocket_urlpatterns,
)

redaction.install()
runtime.install_shutdown_hook()
daphne_bodies.install()

application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [*sse_urlpatterns, *ingest_urlpatterns(django_asgi_app), re_path(r"", django_asgi_app)]
        ),
        "websocket": OriginGuard(SessionWhenCookie(URLRouter(websocket_urlpatterns))),
    }
)

gctuning.install()  # last: what was loaded above is frozen out of the collector's way
