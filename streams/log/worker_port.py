"""Provides the persistence worker's own HTTP port: `/metrics` (its Prometheus registry: what it
persisted, its batches and errors, the log's backlog) and `/healthz` (200 while its loop goes
round), so that a worker, which serves no web requests, is watched like a web process."""

import json
import logging
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

logger = logging.getLogger(__name__)

# A loop that has not gone round for this long is stuck: a read from Redis blocks for 1 s at
# most, a batch write for the database's timeouts, a retry waits 30 s at most.
STUCK_AFTER_SECONDS = 120.0


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass  # every scrape would be a line in the worker's log


class WorkerPort:
    """Serves the worker's port from a thread of its own, off the worker's event loop (a
    scrape never waits for a batch, nor a batch for a scrape)."""

    def __init__(self) -> None:
        self.last_round = time.monotonic()
        self.redis_ok = False
        self._metrics = make_wsgi_app()
        self._server: ThreadingWSGIServer | None = None

    def went_round(self, *, redis_ok: bool) -> None:
        """Called by the worker each time round its loop, after a batch or a failed try."""
        self.last_round = time.monotonic()
        self.redis_ok = redis_ok

    def _app(self, environ, start_response):
        if environ.get("PATH_INFO") == "/healthz":
            stuck = time.monotonic() - self.last_round > STUCK_AFTER_SECONDS
            status = "503 Service Unavailable" if stuck else "200 OK"
            body = json.dumps({"status": "stuck" if stuck else "ok", "redis": self.redis_ok})
            start_response(status, [("Content-Type", "application/json")])
            return [body.encode()]
        if environ.get("PATH_INFO") == "/metrics":
            return self._metrics(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics and /healthz only\n"]

    def start(self, host: str, port: int) -> int:
        """Listens on host:port (0: any free port) and returns the port; raises OSError when it
        cannot (the port is taken)."""
        self._server = make_server(
            host, port, self._app, ThreadingWSGIServer, handler_class=_QuietHandler
        )
        thread = threading.Thread(
            target=self._server.serve_forever, name="eventhub-worker-port", daemon=True
        )
        thread.start()
        return self._server.server_port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
