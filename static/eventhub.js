// Eventhub JavaScript client: a dependency-free ES module served by the hub at /static/eventhub.js.
//
//   import { EventhubClient } from "https://hub.example.com/static/eventhub.js";
//   const hub = new EventhubClient({ url: "https://hub.example.com", topics: ["orders.*"],
//                                    token: async () => (await fetch("/my-token")).text() });
//   hub.on("event", (event) => console.log(event.topic, event.data));
//   hub.connect();
//
// It connects over WebSocket (default) or Server-Sent Events, answers the server's pings,
// reconnects with exponential backoff and jitter, resumes from the last event id (the hub
// replays what was missed, once and in order), and drops anything it has already seen.
// Given a `token` function, it gets a fresh token before the current one expires: over a
// WebSocket it sends it in a `refresh` frame (no reconnect); over SSE it opens a new stream
// with it and closes the old one once the new one is welcomed (no gap).
//
// Presence: with `presence: true` the client asks for presence (`presence=1`) and keeps who is
// present on each exact topic (a pattern without `*`) of its subscription, from each welcome's
// snapshot and the `join` / `leave` frames after it (needs a token that carries `user`):
//
//   const hub = new EventhubClient({ url, topics: ["room.42"], token, presence: true });
//   hub.on("presence", (change) => render(hub.presence("room.42")));
//   // change: {type: "snapshot", topic, users: [{user, info}]} at each welcome (the list is
//   //         replaced: a reconnect leaves no stale entry), then
//   //         {type: "join", topic, user, info} / {type: "leave", topic, user, info}
//   hub.presence("room.42"); // [{user, info}, …] now

const FATAL_CLOSE_CODES = new Set([4400, 4401, 4403]);

export class EventhubClient {
  /**
   * @param {object} options
   * @param {string} [options.url] base URL of the hub (default: this page's origin)
   * @param {"websocket"|"sse"} [options.transport]
   * @param {string[]} [options.topics] patterns such as "orders.*" (default: every topic)
   * @param {string|(() => Promise<string|{token: string}>|string)} [options.token] subscriber
   *   token, or a function fetching a fresh one (a string, or the JSON of POST /api/v1/tokens)
   *   before each connection and before the current token expires
   * @param {string} [options.tenant] tenant slug, for a logged-in dashboard session instead of a token
   * @param {string} [options.lastEventId] resume after this event
   * @param {number} [options.minDelay] first reconnect delay in ms (default 500)
   * @param {number} [options.maxDelay] longest reconnect delay in ms (default 30000)
   * @param {boolean} [options.presence] keep who is present on each exact topic (`presence()`,
   *   "presence" events)
   */
  constructor(options = {}) {
    this.options = { transport: "websocket", topics: ["*"], minDelay: 500, maxDelay: 30000, ...options };
    this.baseUrl = (options.url || globalThis.location?.origin || "").replace(/\/$/, "");
    this.lastEventId = options.lastEventId || null;
    this.lastSeq = 0;
    this.epoch = null;
    this.state = "idle";
    this.attempt = 0;
    this.heartbeat = 15;
    this.handlers = { event: [], welcome: [], state: [], error: [], refreshed: [], presence: [] };
    this._present = new Map(); // topic -> Map(user -> info), with `presence: true`
    this._socket = null;
    this._source = null;
    this._takeover = null; // {old, oldEnded}: an SSE stream read until its replacement is welcomed
    this._watchdog = null;
    this._retryTimer = null;
    this._refreshTimer = null;
    this._closedByUser = false;
  }

  /**
   * Registers a handler for "event", "welcome", "state", "error", "refreshed" (a new token
   * took over: `{expires_at}`) or "presence" (`{type: "snapshot", topic, users}` at each
   * welcome, then `{type: "join"|"leave", topic, user, info}`); returns an unsubscribe.
   */
  on(name, handler) {
    (this.handlers[name] ||= []).push(handler);
    return () => {
      this.handlers[name] = this.handlers[name].filter((h) => h !== handler);
    };
  }

  /** Who is present on an exact topic of the subscription now: `[{user, info}, …]`. */
  presence(topic) {
    return [...(this._present.get(topic) || new Map())].map(([user, info]) => ({ user, info }));
  }

  _emit(name, value) {
    for (const handler of this.handlers[name] || []) {
      try {
        handler(value);
      } catch (err) {
        console.error("eventhub handler failed", err);
      }
    }
  }

  _setState(state, detail) {
    if (this.state === state && !detail) return;
    this.state = state;
    this._emit("state", { state, ...detail });
  }

  /** Opens the connection (and keeps it open until close()). */
  connect() {
    this._closedByUser = false;
    this._open();
    return this;
  }

  /** Closes the connection for good. */
  close() {
    this._closedByUser = true;
    clearTimeout(this._retryTimer);
    clearTimeout(this._refreshTimer);
    this._clearWatchdog();
    this._teardown(1000);
    this._setState("closed", { code: 1000, reason: "closed by the client" });
  }

  async _token() {
    let token = this.options.token;
    if (typeof token === "function") token = await token();
    if (token && typeof token === "object") token = token.token; // POST /api/v1/tokens JSON
    return token;
  }

  async _url(path) {
    const params = new URLSearchParams();
    params.set("topics", this.options.topics.join(","));
    const token = await this._token();
    if (token) params.set("token", token);
    if (this.options.tenant) params.set("tenant", this.options.tenant);
    if (this.lastEventId) params.set("last_event_id", this.lastEventId);
    if (this.options.presence) params.set("presence", "1");
    return `${this.baseUrl}${path}?${params}`;
  }

  async _open() {
    this._setState(this.attempt ? "reconnecting" : "connecting", { attempt: this.attempt });
    let url;
    try {
      url = await this._url(this.options.transport === "sse" ? "/sse/v1/events" : "/ws/v1/events");
    } catch (err) {
      this._emit("error", { reason: "could not get a token", error: err });
      this._scheduleReconnect();
      return;
    }
    if (this._closedByUser) return;
    if (this.options.transport === "sse") this._openSse(url);
    else this._openWebSocket(url.replace(/^http/, "ws"));
  }

  _openWebSocket(url) {
    const socket = new WebSocket(url);
    this._socket = socket;
    let lastError = null;
    let welcomed = false;
    socket.onmessage = (message) => {
      this._armWatchdog();
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (frame.type === "ping") socket.send('{"type":"pong"}');
      else if (frame.type === "welcome") {
        welcomed = true;
        this._welcome(frame);
      } else if (frame.type === "event") this._event(frame);
      else if (frame.type === "join" || frame.type === "leave") this._presenceChange(frame);
      else if (frame.type === "refreshed") this._refreshed(frame);
      else if (frame.type === "error") lastError = frame;
    };
    socket.onclose = (close) => {
      if (this._socket !== socket) return;
      this._socket = null;
      this._clearWatchdog();
      clearTimeout(this._refreshTimer);
      const info = { code: close.code, reason: lastError?.detail || close.reason || "" };
      if (this._closedByUser) return;
      // A token that expired (or whose refresh failed) on a connection it had opened is
      // replaced when the client can fetch another; one refused at connect is final.
      const renewable = close.code === 4401 && welcomed && typeof this.options.token === "function";
      if (FATAL_CLOSE_CODES.has(close.code) && !renewable) {
        this._emit("error", info);
        this._setState("closed", info);
        return;
      }
      this._scheduleReconnect(info, close.code === 4429 ? 4 : 1);
    };
  }

  _openSse(url) {
    // Read with fetch rather than EventSource: EventSource only surfaces events whose type a
    // listener names in advance, hides the `: ping` comments (so no heartbeat watch), and
    // reconnects on its own schedule. This reader sees every event and every ping.
    const controller = new AbortController();
    this._source = controller;
    const headers = { Accept: "text/event-stream" };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    const fail = (info) => {
      const takeover = this._takeover;
      if (takeover?.old === controller) {
        takeover.oldEnded = true; // its replacement is on its way
        return;
      }
      if (this._source !== controller) return;
      if (takeover) {
        this._abandonTakeover(takeover, info);
        return;
      }
      this._source = null;
      this._clearWatchdog();
      if (this._closedByUser) return;
      if (FATAL_CLOSE_CODES.has(info.code)) {
        this._emit("error", info);
        this._setState("closed", info);
      } else {
        this._scheduleReconnect(info, info.code === 4429 ? 4 : 1);
      }
    };
    fetch(url, { headers, signal: controller.signal, credentials: "include", cache: "no-store" })
      .then(async (response) => {
        if (!response.ok) {
          let detail = "";
          try {
            detail = (await response.json()).detail || "";
          } catch {
            /* not JSON */
          }
          fail({ code: 4000 + response.status, status: response.status, reason: detail });
          return;
        }
        this._armWatchdog();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            this._sseBlock(buffer.slice(0, end), controller);
            buffer = buffer.slice(end + 2);
          }
        }
        fail({ code: 1006, reason: "stream ended" });
      })
      .catch((err) => {
        if (err?.name !== "AbortError") fail({ code: 1006, reason: String(err) });
      });
  }

  /** The stream meant to take over failed: the old one goes on, or the client reconnects. */
  _abandonTakeover(takeover, info) {
    if (this._takeover !== takeover) return;
    this._takeover = null;
    this._emit("error", { ...info, reason: `token refresh failed: ${info.reason}` });
    if (takeover.oldEnded) {
      this._source = null;
      this._scheduleReconnect(info);
    } else {
      this._source = takeover.old; // until its token expires; then it reconnects
    }
  }

  _welcomeSse(frame, controller) {
    if (controller !== this._source) return;
    const takeover = this._takeover;
    if (takeover) this._presenceSnapshot(frame); // the new stream's list is the current one
    if (!takeover) {
      this._welcome(frame);
      return;
    }
    // The new stream is live: the old one can go, nothing falls between them. To the page
    // this is a refresh, as on a WebSocket, not a new connection.
    this._takeover = null;
    takeover.old.abort();
    this.heartbeat = frame.heartbeat || this.heartbeat;
    this._armWatchdog();
    this._refreshed({ expires_at: frame.token_expires_at });
    if (frame.recovered === false && this.lastEventId) this._emit("welcome", frame);
  }

  _sseBlock(block, controller) {
    // Any block, a `: ping` comment included, proves the stream alive.
    if (controller === this._source || controller === this._takeover?.old) this._armWatchdog();
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) type = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (!data.length) return;
    const frame = JSON.parse(data.join("\n"));
    if (type === "welcome") this._welcomeSse(frame, controller);
    else if (type === "join" || type === "leave") {
      // Either stream's while they overlap: a join of one present, a leave of one gone, is
      // dropped.
      if (controller === this._source || controller === this._takeover?.old) {
        this._presenceChange(frame);
      }
    } else this._event(frame); // from either stream while they overlap: seen ones are dropped
  }

  _welcome(frame) {
    this.attempt = 0;
    this.heartbeat = frame.heartbeat || this.heartbeat;
    this._setState("open", { recovered: frame.recovered, connectionId: frame.connection_id });
    this._presenceSnapshot(frame);
    this._emit("welcome", frame);
    this._armWatchdog();
    this._scheduleRefresh(frame.token_expires_at);
  }

  _refreshed(frame) {
    this._emit("refreshed", { expires_at: frame.expires_at });
    this._scheduleRefresh(frame.expires_at);
  }

  /**
   * Plans the next token refresh: a fifth of the token's life before it ends (at most 30 s
   * before), and at least 2 s before (at most half its life): a short-lived token's fifth is too
   * thin a margin for fetching the next one from a busy server.
   */
  _scheduleRefresh(expiresAt) {
    clearTimeout(this._refreshTimer);
    if (!expiresAt || typeof this.options.token !== "function") return;
    const left = Date.parse(expiresAt) - Date.now();
    const margin = Math.min(30000, Math.max(left / 5, Math.min(left / 2, 2000)));
    const delay = Math.max(0, left - margin);
    this._refreshTimer = setTimeout(() => this._refresh(expiresAt), delay);
  }

  async _refresh(expiresAt) {
    if (this._closedByUser) return;
    if (this.options.transport === "sse") {
      await this._takeOver();
      return;
    }
    const socket = this._socket;
    let token;
    try {
      token = await this._token();
    } catch (err) {
      if (socket !== this._socket) return;
      this._emit("error", { reason: "could not refresh the token", error: err });
      const left = Date.parse(expiresAt) - Date.now();
      if (left > 2000) this._refreshTimer = setTimeout(() => this._refresh(expiresAt), left / 2);
      return; // past the expiry the server closes (4401) and the client reconnects
    }
    if (socket !== this._socket || socket?.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "refresh", token }));
  }

  /**
   * A stream cannot take a new token: a new stream opens with it (resuming from the last id),
   * and the old one is read until the new one is welcomed. While they overlap the tenant has
   * one connection more (a tenant at its limit gets 429 then: the old stream goes on).
   */
  async _takeOver() {
    if (!this._source || this._takeover) return;
    const takeover = { old: this._source, oldEnded: false };
    this._takeover = takeover;
    let url;
    try {
      url = await this._url("/sse/v1/events");
    } catch (err) {
      this._abandonTakeover(takeover, { code: 0, reason: `could not get a token (${err})` });
      return;
    }
    // Torn down, reconnected or closed meanwhile: that path owns the connection now.
    if (this._takeover !== takeover || this._source !== takeover.old || this._closedByUser) {
      return;
    }
    this._openSse(url);
  }

  _event(frame) {
    if (frame.type !== "event") return;
    const epoch = String(frame.id).split("-").slice(1).join("-");
    if (epoch === this.epoch && frame.seq <= this.lastSeq) return; // already seen
    this.epoch = epoch;
    this.lastSeq = frame.seq;
    this.lastEventId = frame.id;
    this._emit("event", frame);
  }

  /** A welcome's presence replaces the lists: whoever left while the client was away is gone. */
  _presenceSnapshot(frame) {
    if (!frame.presence) return;
    this._present = new Map();
    for (const [topic, users] of Object.entries(frame.presence)) {
      this._present.set(topic, new Map(users.map(({ user, info }) => [user, info || {}])));
    }
    for (const topic of this._present.keys()) {
      this._emit("presence", { type: "snapshot", topic, users: this.presence(topic) });
    }
  }

  _presenceChange(frame) {
    const users = this._present.get(frame.topic);
    if (!users) return; // not a topic of this subscription's snapshot
    if (frame.type === "join") {
      if (users.has(frame.user)) return;
      users.set(frame.user, frame.info || {});
      this._emit("presence", { type: "join", topic: frame.topic, user: frame.user, info: frame.info || {} });
    } else {
      if (!users.has(frame.user)) return;
      const info = users.get(frame.user);
      users.delete(frame.user);
      this._emit("presence", { type: "leave", topic: frame.topic, user: frame.user, info });
    }
  }

  _armWatchdog() {
    if (!this._socket && !this._source) return;
    this._clearWatchdog();
    this._watchdog = setTimeout(() => {
      this._emit("error", { code: 4408, reason: "no heartbeat from the server" });
      this._teardown(4000);
      this._scheduleReconnect({ code: 4408, reason: "heartbeat missed" });
    }, this.heartbeat * 2500);
  }

  _clearWatchdog() {
    clearTimeout(this._watchdog);
    this._watchdog = null;
  }

  _teardown(code) {
    const socket = this._socket;
    this._socket = null;
    if (socket) {
      try {
        socket.close(code);
      } catch {
        /* already closed */
      }
    }
    const source = this._source;
    this._source = null;
    if (source) source.abort();
    const takeover = this._takeover;
    this._takeover = null;
    if (takeover) takeover.old.abort();
  }

  _scheduleReconnect(info = {}, factor = 1) {
    if (this._closedByUser) return;
    this.attempt += 1;
    const base = Math.min(this.options.maxDelay, this.options.minDelay * 2 ** (this.attempt - 1));
    const delay = Math.min(this.options.maxDelay, base * factor) * (0.5 + Math.random() / 2);
    this._setState("reconnecting", { ...info, attempt: this.attempt, delay: Math.round(delay) });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._open(), delay);
  }
}
