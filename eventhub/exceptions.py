"""Provides JSON errors everywhere: DRF's handler plus the cases Django would answer in HTML."""

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from streams.backends import HubUnavailable, LogBacklogFull
from tenants.selectors import CredentialsUnavailable

DATABASE_UNREACHABLE = "The database is unreachable; retry shortly."


def _unavailable(detail: str, retry_after: int) -> Response:
    response = Response({"detail": detail}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    response["Retry-After"] = str(retry_after)
    return response


def api_exception_handler(exc, context):
    """DRF's handler, plus 413 for a body over the size cap (Django raises it while parsing)
    and 503 with Retry-After for what is unreachable (Redis, the database, a full log
    backlog): a client can tell an outage from its own mistake, and none of them is a 500."""
    if isinstance(exc, LogBacklogFull):
        return _unavailable(
            "The event log is behind (its database is unreachable or no worker runs); "
            "nothing was accepted.",
            5,
        )
    if isinstance(exc, CredentialsUnavailable | OperationalError | InterfaceError):
        return _unavailable(DATABASE_UNREACHABLE, 5)
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


class DatabaseUnavailableMiddleware:
    """Answers 503 with Retry-After, not 500, when a page (the admin, the dashboard) fails
    because the database or Redis is unreachable."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        """Called by Django when a view raised."""
        if isinstance(exception, OperationalError | InterfaceError):
            detail = DATABASE_UNREACHABLE
        elif isinstance(exception, HubUnavailable):
            detail = "The hub cannot reach its shared state (Redis); retry shortly."
        else:
            return None
        response = json_error(request, 503, detail)
        response["Retry-After"] = "5"
        return response


def not_found(request, exception=None):
    return json_error(request, 404, "Not found.")


def server_error(request):
    return json_error(request, 500, "Internal server error.")


def bad_request(request, exception=None):
    return json_error(request, 400, "Bad request.")


def permission_denied(request, exception=None):
    return json_error(request, 403, "Forbidden.")
