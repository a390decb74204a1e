"""Provides the exceptions the client raises: one per refusal a caller handles differently."""

from typing import Any


class EventhubError(Exception):
    """Base of every error this client raises."""


class ApiError(EventhubError):
    """The hub answered with an error status; `status`, `detail` and the JSON `body` say why."""

    def __init__(
        self, status: int, detail: str, body: Any = None, retry_after: float | None = None
    ):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.body = body
        self.retry_after = retry_after


class BadRequest(ApiError):
    """400: an invalid body or field (`body` holds the field errors)."""


class Unauthorized(ApiError):
    """401: the key or token is missing, unknown, revoked or expired."""


class Forbidden(ApiError):
    """403: the key lacks the scope, or the tenant is suspended."""


class NotFound(ApiError):
    """404."""


class Conflict(ApiError):
    """409 (a request with this Idempotency-Key is still in progress) or 422 (the key was used
    with another body)."""


class PayloadTooLarge(ApiError):
    """413: the event or the body is over the hub's limit."""


class RateLimited(ApiError):
    """429 after the client's bounded retries: the tenant's rate or quota is exceeded."""


class Unavailable(ApiError):
    """503 (or 5xx) after the client's bounded retries: nothing was accepted."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Conflict,
    429: RateLimited,
}


def api_error(status: int, body: Any, retry_after: float | None = None) -> ApiError:
    """The exception for an error answer."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, str):
        detail = str(body) if body not in (None, "") else f"HTTP {status}"
    kind = _BY_STATUS.get(status, Unavailable if status >= 500 else ApiError)
    return kind(status, detail, body, retry_after)


class SubscriptionClosed(EventhubError):
    """A subscription ended for a reason reconnecting cannot mend: the hub refused it (4400 bad
    request, 4401 unauthenticated, 4403 forbidden; over SSE the HTTP status as 4000 + status),
    or the client's frames were refused (1009). `code` and `reason` come from the hub."""

    def __init__(self, code: int, reason: str):
        super().__init__(f"subscription closed ({code}): {reason}")
        self.code = code
        self.reason = reason


class EventsMissed(EventhubError):
    """Raised by a subscription's iterator when the hub could not replay what was missed
    (its welcome said `recovered: false`) and no `on_gap` callback was given.

    The subscription stays open: fetch what was missed with `history(after=last_event_id)` and
    iterate the same subscription again; live events after the gap follow.
    """

    def __init__(self, last_event_id: str | None, welcome: dict[str, Any]):
        super().__init__(f"events after {last_event_id!r} could not be replayed")
        self.last_event_id = last_event_id
        self.welcome = welcome
