"""Provides a real HTTP receiver of webhooks on loopback, for tests and the bench: it records
each request and answers with the status (after the delay) set for its path."""

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str
    status: int = 200  # what the receiver answered
    at: float = field(default_factory=time.time)


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 resets connections under a burst


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: dict[str, tuple[int, float]] = {}  # path -> (status, delay)
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length).decode()
                status, delay = receiver.answers.get(self.path, (200, 0.0))
                if delay:
                    time.sleep(delay)
                with receiver._changed:
                    receiver.received.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            status,
                        )
                    )
                    receiver._changed.notify_all()
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> "Receiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def to(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, count: int, within: float = 10.0) -> list[Received]:
        """Blocks until `path` got `count` requests; AssertionError after `within` seconds."""
        deadline = time.monotonic() + within
        with self._changed:
            while len(self.to(path)) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{path} got {len(self.to(path))} of {count} webhooks"
                self._changed.wait(left)
            return self.to(path)
