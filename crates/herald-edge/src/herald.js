// herald.js: a resilient browser client for Herald's SSE stream, served by
// the edge at GET /herald.js. No build step, no dependencies.
//
//   const herald = new Herald("/v1/events", { getToken, topics: ["news"] });
//   herald.on("message", (e) => show(e.type, e.data, e.lastEventId));
//   herald.on("herald.reset", () => refetchState());
//   herald.on("herald.disconnect", (e) => JSON.parse(e.data).reason);
//   herald.onstate = (state) => badge(state); // connecting, open, retrying, closed
//   herald.close();
//
// Why it exists: a browser's EventSource reconnects by itself after a
// dropped stream, but gives up for good on any refusal (a non-200, or a 200
// that is not text/event-stream: an expired token's 401, a proxy's 502).
// Herald re-creates the stream then, with capped exponential backoff and
// full jitter, and carries the last event id as `last_event_id` (a new
// EventSource does not send Last-Event-ID). It renews the token through
// `getToken()` before `exp` and re-creates the stream with it, so a stream
// never reaches the edge's close at `exp`.
//
// When the app ends the stream (herald-publish's Control API: Disconnect,
// Revoke), the last event is `herald.disconnect` with data
// `{"reason": …, "reconnect": …}`. With `reconnect: false` (a logout, a
// ban, a revoked token) Herald closes for good, as close() does: the
// `herald.disconnect` handlers see the event, then the state turns
// `closed`. With `reconnect: true` the browser reconnects by itself.
//
// Options:
//   getToken        async () => JWT. Called before the token expires and
//                   after a refusal. Without it and without `token`, no
//                   token is sent: the edge reads the `herald_token` cookie.
//   token           first token (else getToken() is called first).
//   topics          topic names to follow besides the user's own stream.
//   lastEventId     resume after this id.
//   withCredentials send cookies cross-origin (EventSource's own option).
//   minDelay, maxDelay  backoff bounds in ms (1000, 30000).
//   refreshMargin   renew this many ms before `exp` (30000; at most half
//                   the token's remaining life).
"use strict";

class Herald {
  constructor(url, options = {}) {
    this.url = url;
    this.options = options;
    this.token = options.token || null;
    this.lastEventId = options.lastEventId || "";
    this.state = "idle";
    this.onstate = null;
    this.source = null;
    // type -> Set of handlers; `herald.disconnect` is always listened
    // for, since it may say not to come back.
    this.listeners = new Map([["herald.disconnect", new Set()]]);
    this.failures = 0; // refusals since the last open stream
    this.opened = false; // whether the current source ever opened
    this.timer = null; // the next re-create
    this.refreshTimer = null; // the next token renewal
    this.closed = false;
    this.connect(!this.token && typeof options.getToken === "function");
  }

  // Calls `handler(event)` for each event of `type` (`message` for events
  // without a type); `event.type`, `event.data`, `event.lastEventId`.
  on(type, handler) {
    if (!this.listeners.has(type)) {
      this.listeners.set(type, new Set());
      if (this.source) this.listen(this.source, type);
    }
    this.listeners.get(type).add(handler);
    return this;
  }

  off(type, handler) {
    const set = this.listeners.get(type);
    if (set) set.delete(handler);
    return this;
  }

  // Stops everything: the stream, the retries, the renewals.
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.refreshTimer);
    if (this.source) this.source.close();
    this.source = null;
    this.setState("closed");
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    if (typeof this.onstate === "function") this.onstate(state);
  }

  // Opens a new EventSource, first renewing the token if `renew`.
  async connect(renew) {
    if (this.closed) return;
    clearTimeout(this.timer);
    if (!this.source) this.setState("connecting");
    if (renew) {
      try {
        this.token = await this.options.getToken();
      } catch (error) {
        return this.renewalFailed();
      }
      if (this.closed) return;
      clearTimeout(this.timer); // a retry scheduled while we waited
    }
    if (this.source) this.source.close();
    this.setState("connecting");
    const source = new EventSource(this.streamUrl(), {
      withCredentials: !!this.options.withCredentials,
    });
    this.source = source;
    this.opened = false;
    source.onopen = () => {
      if (source !== this.source) return;
      this.opened = true;
      this.failures = 0;
      this.setState("open");
    };
    source.onerror = () => {
      if (source !== this.source) return;
      if (source.readyState === EventSource.CLOSED) {
        this.retry();
      } else {
        this.setState("connecting"); // the browser reconnects by itself
      }
    };
    for (const type of this.listeners.keys()) this.listen(source, type);
    this.scheduleRefresh();
  }

  listen(source, type) {
    source.addEventListener(type, (event) => {
      if (source !== this.source) return;
      if (event.lastEventId) this.lastEventId = event.lastEventId;
      try {
        for (const handler of this.listeners.get(type) || []) handler(event);
      } finally {
        // Even when a handler throws.
        if (type === "herald.disconnect") this.disconnected(event);
      }
    });
  }

  // The server ended the stream on the app's order: for good when it says
  // not to reconnect (the browser would, and so would retry()).
  disconnected(event) {
    let data = null;
    try {
      data = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    if (data && data.reconnect === false) this.close();
  }

  // The browser gave up: re-create the stream after a jittered backoff,
  // with a new token if the refused one may be the reason.
  retry() {
    if (this.closed) return;
    if (this.source) this.source.close();
    this.source = null;
    this.failures += 1;
    this.setState("retrying");
    // A refusal is not visible to EventSource code (no status), so renew
    // whenever the token is near expiry or the attempt never opened.
    const renew =
      typeof this.options.getToken === "function" &&
      (!this.opened || this.expiresWithin(this.margin()));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(renew), this.backoff());
  }

  // getToken() failed: a stream still open keeps running while renewal is
  // tried again after a backoff; without one, the stream is retried.
  renewalFailed() {
    if (this.closed) return;
    if (!this.source || this.source.readyState === EventSource.CLOSED) return this.retry();
    this.failures += 1;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => this.connect(true), this.backoff());
  }

  // Full jitter over a doubling cap: a crowd of clients spreads out.
  backoff() {
    const min = this.options.minDelay ?? 1000;
    const max = this.options.maxDelay ?? 30000;
    const cap = Math.min(max, min * 2 ** Math.min(Math.max(this.failures - 1, 0), 20));
    return Math.random() * cap;
  }

  // Renews the token a margin before its `exp`, then re-creates the stream
  // with it and the last id (the edge ends a stream at `exp`).
  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    const exp = this.expiry();
    if (exp === null || typeof this.options.getToken !== "function") return;
    // An expired token is refused and renewed by retry(), with backoff.
    if (exp <= Date.now()) return;
    const wait = Math.max(1000, exp - this.margin() - Date.now());
    this.refreshTimer = setTimeout(() => this.connect(true), wait);
  }

  margin() {
    const exp = this.expiry();
    const left = exp === null ? Infinity : Math.max(0, exp - Date.now());
    return Math.min(this.options.refreshMargin ?? 30000, left / 2);
  }

  expiresWithin(ms) {
    const exp = this.expiry();
    return exp !== null && exp - Date.now() <= ms;
  }

  // The token's `exp` in ms, or null when there is none to read.
  expiry() {
    if (!this.token) return null;
    try {
      const part = this.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const exp = JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "="))).exp;
      return typeof exp === "number" ? exp * 1000 : null;
    } catch (error) {
      return null;
    }
  }

  streamUrl() {
    const url = new URL(this.url, location.href);
    for (const topic of this.options.topics || []) url.searchParams.append("topic", topic);
    if (this.token) url.searchParams.set("access_token", this.token);
    if (this.lastEventId) url.searchParams.set("last_event_id", this.lastEventId);
    return url.toString();
  }
}

window.Herald = Herald;
