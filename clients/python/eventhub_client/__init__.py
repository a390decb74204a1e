"""Provides the Eventhub client: Client (blocking) and AsyncClient (asyncio, with subscribe),
and the exceptions they raise."""

from eventhub_client._http import RetryPolicy
from eventhub_client.aio import AsyncClient
from eventhub_client.client import Client
from eventhub_client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    EventhubError,
    EventsMissed,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SubscriptionClosed,
    Unauthorized,
    Unavailable,
)
from eventhub_client.subscription import Subscription

__all__ = [
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "EventhubError",
    "EventsMissed",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RetryPolicy",
    "Subscription",
    "SubscriptionClosed",
    "Unauthorized",
    "Unavailable",
]
