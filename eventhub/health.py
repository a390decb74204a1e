"""Provides liveness, readiness and Prometheus metrics endpoints."""

import redis.asyncio
from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams import metrics, runtime


@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


async def _layer_ok() -> bool:
    layer = get_channel_layer()
    if isinstance(layer, InMemoryChannelLayer):
        return True
    client = redis.asyncio.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


@require_GET
def readyz(request):
    checks = {"database": _database_ok(), "channel_layer": async_to_sync(_layer_ok)()}
    ready = all(checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )


@require_GET
async def metrics_view(request):
    """Prometheus text. Async so that it runs on the serving loop, where the loop's own gauges
    can be read (`runtime.sample_loop_gauges`)."""
    runtime.sample_loop_gauges()
    backend = runtime.peek_backend()
    lag = backend.log_lag_seconds() if backend is not None else None
    if lag is not None:
        metrics.PERSISTENCE_LAG.set(lag)
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
