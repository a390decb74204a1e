"""Provides the consumer for WebSocket handshakes to paths that have no route."""

import logging

from channels.generic.websocket import AsyncWebsocketConsumer

logger = logging.getLogger(__name__)


class NotFoundWebsocketConsumer(AsyncWebsocketConsumer):
    """Refuses the handshake (daphne answers 403) instead of letting URLRouter raise, which
    daphne would turn into a 500."""

    async def connect(self) -> None:
        """Called on the handshake; refuses it before accepting."""
        # %r: a client's path, logged with its control characters escaped (no forged lines).
        logger.info("websocket refused: no route for %r", self.scope.get("path"))
        await self.close()
