"""Provides liveness, readiness and Prometheus metrics endpoints."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams import metrics, runtime
from streams.redis_keys import redis_client

logger = logging.getLogger(__name__)


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
async def metrics_view(request):
    """Prometheus text. Async so that it runs on the serving loop, where the loop's own gauges
    can be read (`runtime.sample_loop_gauges`) and the engine lives."""
    runtime.sample_loop_gauges()
    # The log's backlog as the engine knows it: with Redis, every process reports the same
    # truth (the worker's stream), not what this process happened to count.
    try:
        pending, lag = await runtime.get_backend().log_backlog()
    except Exception as error:
        # Redis is down: the gauges keep their last values; /readyz says why.
        logger.warning("could not read the log's backlog for /metrics: %s", error)
    else:
        metrics.PERSISTENCE_PENDING.set(pending)
        metrics.PERSISTENCE_LAG.set(lag)
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
