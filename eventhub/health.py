"""Provides liveness, readiness and Prometheus metrics endpoints."""

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams import metrics, runtime
from streams.redis_keys import redis_client


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
    client = redis_client(timeout=1, connect_timeout=1)
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
def metrics_view(request):
    backend = runtime.peek_backend()
    lag = backend.log_lag_seconds() if backend is not None else None
    if lag is not None:
        metrics.PERSISTENCE_LAG.set(lag)
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
