"""Provides the guarantee that a consumer leaves the hub however its connection ends."""

from streams import runtime
from streams.hub import Subscriber


class HubMembershipMixin:
    """Releases the consumer's hub membership when its application instance ends for any
    reason: a clean close, a dropped network, a crash, or the server cancelling it."""

    sub: Subscriber | None = None

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.sub is not None:
                await runtime.get_hub().unsubscribe(self.sub)
