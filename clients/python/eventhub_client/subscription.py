"""Provides Subscription: one logical subscription over WebSocket or SSE that reconnects,
resumes from the last event id and hands each event to the caller exactly once, in order.

A background task owns the connection (so that pings are answered while the caller works on an
event) and queues what it reads; the iterator takes from that queue. The queue is bounded: a
caller that falls behind stops the reading, and the hub, whose buffer then fills, closes the
connection as a slow consumer (4008), after which the task resumes from the last queued id.
"""

import asyncio
import contextlib
import inspect
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from eventhub_client.errors import EventsMissed, RateLimited, SubscriptionClosed, Unavailable

TokenSource = str | Callable[[], Any]  # a token, or a (coroutine) function returning one
GapCallback = Callable[[str | None, dict[str, Any]], Any]

# Failures that may pass: the hub (or whatever serves the token function) restarting, a network
# blip, a proxy answering for a moment.
TRANSIENT = (OSError, TimeoutError, httpx.HTTPError, ConnectionClosed, RateLimited, Unavailable)

# Refusals that a reconnect would only repeat (contract, "Subscribing"); 1009: our own frame
# was too large. Over SSE the HTTP status is reported as 4000 + status.
FATAL_CODES = frozenset({4400, 4401, 4403, 1009})
TOO_MANY_CONNECTIONS = 4429
TOKEN_REFRESH = 4000  # not from the hub: the SSE stream is replaced to take a new token
PONG = '{"type":"pong"}'
OPEN_TIMEOUT = 10.0
FIRST_HEARTBEAT = 15.0  # until the welcome says the hub's interval
MISSED_HEARTBEATS = 2.5  # this many intervals without a frame: the connection is dead


@dataclass(frozen=True)
class _Gap:
    last_event_id: str | None
    welcome: dict[str, Any]


_END = object()


def _expires_in(expires_at: str | None) -> float | None:
    if not expires_at:
        return None
    try:
        moment = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() - time.time()


def refresh_delay(expires_at: str | None) -> float | None:
    """Seconds until a token is renewed: a fifth of its remaining life before it ends, at
    most 30 s before (as static/eventhub.js)."""
    left = _expires_in(expires_at)
    if left is None:
        return None
    return max(0.0, left - min(30.0, left / 5))


class Subscription:
    """An async iterator of event objects; see AsyncClient.subscribe. Close it with
    `await sub.aclose()` or use it as `async with`. `last_event_id` is the id of the last
    event handed to the caller; `welcome` the last welcome frame; `reconnects` how many
    connections followed the first."""

    def __init__(
        self,
        *,
        url: str,
        key: str | None,
        token: TokenSource | None,
        topics: list[str],
        last_event_id: str | None,
        transport: str,
        on_gap: GapCallback | None,
        min_delay: float,
        max_delay: float,
        buffer: int,
    ) -> None:
        self._url = url
        self._key = key
        self._token = token
        self._topics = topics
        self._transport = transport
        self._on_gap = on_gap
        self._min_delay = min_delay
        self._max_delay = max_delay
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(1, buffer))
        self._task: asyncio.Task[None] | None = None
        self._done = False
        self.last_event_id = last_event_id
        self._resume_id = last_event_id  # the last event queued: where a reconnect resumes
        self._epoch, self._seq = self._position(last_event_id)
        self.welcome: dict[str, Any] | None = None
        self.reconnects = -1
        self._welcome_seen = asyncio.Event()

    # The caller's side -----------------------------------------------------------------

    def __aiter__(self) -> "Subscription":
        if self._task is None and not self._done:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __anext__(self) -> dict[str, Any]:
        self.__aiter__()
        while True:
            if self._done and self._queue.empty():
                raise StopAsyncIteration
            item = await self._queue.get()
            if item is _END:
                self._done = True
                raise StopAsyncIteration
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if isinstance(item, _Gap):
                if self._on_gap is None:
                    raise EventsMissed(item.last_event_id, item.welcome)
                result = self._on_gap(item.last_event_id, item.welcome)
                if inspect.isawaitable(result):
                    await result
                continue
            self.last_event_id = item["id"]
            return item

    async def welcomed(self) -> dict[str, Any]:
        """Starts the subscription if need be and returns once the hub has welcomed it (the
        welcome frame): from then on, every event published is delivered."""
        self.__aiter__()
        await self._welcome_seen.wait()
        assert self.welcome is not None
        return self.welcome

    async def aclose(self) -> None:
        """Closes the connection and ends the iteration."""
        self._done = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_END)

    async def __aenter__(self) -> "Subscription":
        return self.__aiter__()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # The connection's side -------------------------------------------------------------

    @staticmethod
    def _position(event_id: str | None) -> tuple[str | None, int]:
        if not event_id:
            return None, 0
        seq, _, epoch = event_id.partition("-")
        return (epoch, int(seq)) if seq.isdigit() else (None, 0)

    async def _accept(self, frame: dict[str, Any]) -> None:
        """Queues an event unless it was queued already (a replay overlapping what came live).
        Ids are `<seq>-<epoch>`: within an epoch seq only grows."""
        epoch, seq = self._position(frame.get("id"))
        if epoch is not None and epoch == self._epoch and seq <= self._seq:
            return
        self._epoch, self._seq = epoch, seq
        self._resume_id = frame["id"]
        await self._queue.put(frame)

    async def _welcomed(self, frame: dict[str, Any]) -> None:
        self.welcome = frame
        self.reconnects += 1
        self._welcome_seen.set()
        if self._resume_id is not None and frame.get("recovered") is False:
            await self._queue.put(_Gap(self._resume_id, frame))

    async def _current_token(self) -> str | None:
        token = self._token
        if callable(token):
            token = token()
            if inspect.isawaitable(token):
                token = await token
        if isinstance(token, dict):
            token = token["token"]
        return token

    async def _query(self, token: str | None) -> str:
        params = {"topics": ",".join(self._topics)}
        if token:
            params["token"] = token
        if self._resume_id:
            params["last_event_id"] = self._resume_id
        return urlencode(params)

    def _headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key and not token else {}

    async def _run(self) -> None:
        """Connects, reads until the connection ends, and reconnects after a backoff, until
        closed or refused for good."""
        attempt = 0
        try:
            while True:
                welcomed_before = self.reconnects
                try:
                    token = await self._current_token() if self._token is not None else None
                    if self._transport == "sse":
                        code = await self._sse_once(token)
                    else:
                        code = await self._ws_once(token)
                except SubscriptionClosed as closed:
                    await self._queue.put(closed)
                    return
                except TRANSIENT as error:
                    code = 4408 if isinstance(error, TimeoutError) else 1006
                except InvalidStatus as error:
                    status = error.response.status_code
                    if 400 <= status < 500 and status != 429:
                        await self._queue.put(SubscriptionClosed(4000 + status, str(error)))
                        return
                    code = 4429 if status == 429 else 1006
                except InvalidHandshake:
                    code = 1006  # not a WebSocket answer (a proxy's error page): try again
                if self.reconnects > welcomed_before:
                    attempt = 0  # it was up: the next try starts from the shortest delay
                if code == TOKEN_REFRESH:
                    continue
                attempt += 1
                await asyncio.sleep(
                    self._backoff(attempt, 4 if code == TOO_MANY_CONNECTIONS else 1)
                )
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug or a malformed frame: the caller hears of it
            await self._queue.put(error)

    def _backoff(self, attempt: int, factor: float) -> float:
        base = min(self._max_delay, self._min_delay * 2 ** (attempt - 1))
        return min(self._max_delay, base * factor) * (0.5 + random.random() / 2)

    def _fatal(self, code: int, welcomed: bool) -> bool:
        # A token that expired (or failed to refresh) on a connection it had opened is
        # replaced when there is a function to get another; one refused at connect is final.
        renewable = code == 4401 and welcomed and callable(self._token)
        return code in FATAL_CODES and not renewable

    async def _ws_once(self, token: str | None) -> int:
        """One WebSocket connection; returns its close code, or raises SubscriptionClosed."""
        base = self._url.replace("http", "ws", 1)
        url = f"{base}/ws/v1/events?{await self._query(token)}"
        welcomed = False
        error: dict[str, Any] = {}
        refresher: asyncio.Task[None] | None = None
        try:
            async with connect(
                url,
                additional_headers=self._headers(token),
                open_timeout=OPEN_TIMEOUT,
                ping_interval=None,  # the hub's own heartbeat frames say it is alive
                close_timeout=2,
                max_size=None,  # events are bounded by the hub (EVENTHUB_MAX_EVENT_BYTES)
            ) as ws:
                heartbeat = FIRST_HEARTBEAT
                try:
                    while True:
                        raw = await asyncio.wait_for(ws.recv(), heartbeat * MISSED_HEARTBEATS)
                        frame = json.loads(raw)
                        kind = frame.get("type")
                        if kind == "event":
                            await self._accept(frame)
                        elif kind == "ping":
                            await ws.send(PONG)
                        elif kind == "welcome":
                            welcomed = True
                            heartbeat = float(frame.get("heartbeat") or heartbeat)
                            await self._welcomed(frame)
                            refresher = self._plan_refresh(
                                ws, frame.get("token_expires_at"), refresher
                            )
                        elif kind == "refreshed":
                            refresher = self._plan_refresh(ws, frame.get("expires_at"), refresher)
                        elif kind == "error":
                            error = frame
                except ConnectionClosed as closed:
                    code = closed.rcvd.code if closed.rcvd is not None else 1006
                    reason = error.get("detail") or (closed.rcvd.reason if closed.rcvd else "")
                    if self._fatal(code, welcomed):
                        raise SubscriptionClosed(code, reason) from None
                    return code
                except TimeoutError:
                    return 4408  # no frame for MISSED_HEARTBEATS intervals: reconnect
        finally:
            if refresher is not None:
                refresher.cancel()

    def _plan_refresh(
        self, ws: ClientConnection, expires_at: str | None, previous: asyncio.Task[None] | None
    ) -> asyncio.Task[None] | None:
        if previous is not None:
            previous.cancel()
        delay = refresh_delay(expires_at)
        if delay is None or not callable(self._token):
            return None

        async def refresh() -> None:
            await asyncio.sleep(delay)
            try:
                token = await self._current_token()
            except Exception:
                return  # past the expiry the hub closes with 4401 and the client reconnects
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps({"type": "refresh", "token": token}))

        return asyncio.get_running_loop().create_task(refresh())

    async def _sse_once(self, token: str | None) -> int:
        """One SSE stream; returns how it ended as a close code, or raises SubscriptionClosed."""
        headers = {"Accept": "text/event-stream", **self._headers(token)}
        if self._resume_id:
            headers["Last-Event-ID"] = self._resume_id
        url = f"{self._url}/sse/v1/events?{await self._query(token)}"
        timeout = httpx.Timeout(OPEN_TIMEOUT, read=None)  # reads are bounded below
        async with (
            httpx.AsyncClient(timeout=timeout, trust_env=False) as http,
            http.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code != 200:
                body = await response.aread()
                try:
                    reason = json.loads(body).get("detail", "")
                except (ValueError, AttributeError):
                    reason = body.decode(errors="replace")
                code = 4000 + response.status_code
                if self._fatal(code, welcomed=False) or response.status_code == 404:
                    raise SubscriptionClosed(code, reason)
                return code
            return await self._read_sse(response.aiter_lines())

    async def _read_sse(self, lines: Any) -> int:
        heartbeat = FIRST_HEARTBEAT
        refresh_at: float | None = None
        kind, data = "message", []
        while True:
            wait = heartbeat * MISSED_HEARTBEATS
            if refresh_at is not None:
                wait = min(wait, max(0.0, refresh_at - time.monotonic()))
            try:
                line = await asyncio.wait_for(anext(lines), wait)
            except StopAsyncIteration:
                return 1006  # the stream ended (server restart, token expiry): resume
            except TimeoutError:
                if refresh_at is not None and time.monotonic() >= refresh_at:
                    # A stream cannot take a new token: a new one opens with it, resuming from
                    # the last id, so nothing is missed or repeated.
                    return TOKEN_REFRESH
                return 4408
            if line.startswith(":"):
                continue  # `: ping`, which the bounded read above already counted
            if line:
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    kind = value
                elif field == "data":
                    data.append(value)
                continue
            if data:
                frame = json.loads("\n".join(data))
                if kind == "welcome":
                    heartbeat = float(frame.get("heartbeat") or heartbeat)
                    await self._welcomed(frame)
                    delay = refresh_delay(frame.get("token_expires_at"))
                    if delay is not None and callable(self._token):
                        refresh_at = time.monotonic() + delay
                elif frame.get("type") == "event":
                    await self._accept(frame)
            kind, data = "message", []
