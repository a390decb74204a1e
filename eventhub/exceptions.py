"""Provides JSON errors everywhere: DRF's handler plus the cases Django would answer in HTML."""

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from streams.backends import HubUnavailable


def api_exception_handler(exc, context):
    """DRF's handler, plus 413 for a body over the size cap (Django raises it while parsing)."""
    if isinstance(exc, HubUnavailable):
        response = Response(
            {"detail": "The hub cannot reach its shared state (Redis); nothing was accepted."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        response["Retry-After"] = "1"
        return response
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": "Request body too large."}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        )
    response = exception_handler(exc, context)
    if response is not None and response.status_code == 429:
        wait = getattr(exc, "wait", None)
        response["Retry-After"] = str(max(1, int(wait + 0.999))) if wait else "1"
    return response


def json_error(request, status_code: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status_code)


def not_found(request, exception=None):
    return json_error(request, 404, "Not found.")


def server_error(request):
    return json_error(request, 500, "Internal server error.")


def bad_request(request, exception=None):
    return json_error(request, 400, "Bad request.")


def permission_denied(request, exception=None):
    return json_error(request, 403, "Forbidden.")
