/*!
 * torchannel.js: the browser client of torchannels (real-time channels for Tornado).
 *
 * No dependencies and no build step. Load it as a plain <script> (it defines
 * the global `TorChannels`, and `$.torChannels` when jQuery is loaded first),
 * require() it under CommonJS, or import torchannel.mjs.
 *
 *   const subscriptions = $.torChannels({url: '/channels'});
 *   const token = subscriptions.subscribe('news', (msg) => { ... });
 *   subscriptions.unsubscribe(token);
 *
 * The wire protocol is docs/protocol.md; the API is docs/client.md.
 * Licensed under the Apache License 2.0.
 */
// asModule (the `this === undefined` below): `this` is undefined at the top
// of an ES module only; a classic script's is the global object, a CommonJS
// module's its exports.
(function (root, asModule, factory) {
  'use strict';
  const api = factory(root);
  if (typeof module === 'object' && module && module.exports) {
    module.exports = api;
  } else if (asModule) {
    // Evaluated as an ES module, which is how torchannel.mjs imports it: a
    // classic script cannot `export`, so the API waits under a private key
    // that torchannel.mjs takes and deletes. No global name is defined.
    root[Symbol.for('torchannels.api')] = api;
  } else {
    root.TorChannels = api;
  }
  if (root.jQuery) api.registerJQuery(root.jQuery);
})(typeof globalThis !== 'undefined' ? globalThis : typeof self !== 'undefined' ? self : this, this === undefined, (root) => {
  'use strict';

  const VERSION = '0.1.0';

  // ---- Codes: mirrored from the server (errors.py, frames.py, docs/protocol.md) ----

  /** The `type` of every frame the server sends. */
  const FrameType = Object.freeze({
    MESSAGE: 'message',
    SUBSCRIBED: 'subscribed',
    UNSUBSCRIBED: 'unsubscribed', // WebSocket only
    RESET: 'reset',
    ERROR: 'error',
    CONNECTED: 'connected',
    PING: 'ping',
    RECONNECT: 'reconnect',
    PRESENCE: 'presence', // joins and leaves of a join_leave channel
    PRESENCE_PAGE: 'presence_page', // WebSocket only: the answer to a `presence` command
    DISCONNECT: 'disconnect', // the last frame of a connection the server ends on purpose
    PUBLISHED: 'published', // WebSocket only: the answer to a `publish` command that was stored
    PUBLISH_ERROR: 'publish_error' // WebSocket only: the answer to a `publish` command that was refused
  });

  /** Why a `reset` frame says a position cannot be served. */
  const ResetReason = Object.freeze({
    EPOCH_CHANGED: 'epoch_changed',
    HISTORY_TRIMMED: 'history_trimmed',
    POSITION_AHEAD: 'position_ahead'
  });

  /** `code` of error frames (a channel refused) and of HTTP 400 answers (a bad request). */
  const ErrorCode = Object.freeze({
    // error frames
    FORBIDDEN: 'forbidden',
    TOKEN_REQUIRED: 'token_required',
    TOKEN_EXPIRED: 'token_expired',
    TOKEN_MALFORMED: 'token_malformed',
    TOKEN_BAD_SIGNATURE: 'token_bad_signature',
    TOKEN_NOT_YET_VALID: 'token_not_yet_valid',
    TOKEN_BAD_ALGORITHM: 'token_bad_algorithm',
    TOKEN_UNKNOWN_KEY: 'token_unknown_key', // the token's `kid` names no key of the hub's JWKS
    TOKEN_BAD_AUDIENCE: 'token_bad_audience',
    TOKEN_BAD_ISSUER: 'token_bad_issuer',
    TOKEN_UNSUPPORTED: 'token_unsupported', // the hub was started without a token secret
    INVALID_INFO: 'invalid_info', // the token's `info` claim is not a JSON object of at most 1 KiB
    TOKEN_REVOKED: 'token_revoked', // the token was revoked (POST /api/revoke)
    UNSUBSCRIBED: 'unsubscribed', // the server no longer delivers the channel (POST /api/unsubscribe)
    // HTTP 400 answers
    UNKNOWN_TRANSPORT: 'unknown_transport',
    INVALID_CHANNEL: 'invalid_channel',
    MALFORMED_CURSOR: 'malformed_cursor',
    TOO_MANY_CHANNELS: 'too_many_channels',
    NO_CHANNELS: 'no_channels',
    REQUEST_TOO_LARGE: 'request_too_large',
    BAD_PARAMETER: 'bad_parameter',
    BAD_MESSAGE: 'bad_message', // WebSocket: a client command the server cannot read
    // presence reads (client.presence())
    PRESENCE_DISABLED: 'presence_disabled',
    INVALID_CURSOR: 'invalid_cursor',
    INVALID_LIMIT: 'invalid_limit',
    // publishing (client.publish()): publish_error frames and HTTP answers to a POST
    BAD_JSON: 'bad_json', // HTTP 400: the body is not a JSON object with channel and data
    INVALID_MESSAGE: 'invalid_message', // data is not an object, carries a reserved key, or is not JSON-able
    PUBLISH_FORBIDDEN: 'publish_forbidden', // the channel's `publish` option does not let this client publish
    PUBLISH_TOO_LARGE: 'publish_too_large', // HTTP 413: data over the server's max_client_publish_bytes
    RATE_LIMITED: 'rate_limited', // HTTP 429: too many publishes; try again after retry_after seconds
    PROXY_UNAVAILABLE: 'proxy_unavailable', // HTTP 503: the publish backend did not answer; try again later
    PROXY_ERROR: 'proxy_error', // HTTP 503: the publish backend answered something unreadable
    BROKER_UNAVAILABLE: 'broker_unavailable', // HTTP 503: the broker could not store it; try again later
    // the publish API (POST /api/publish, with the API key; never a client's answer)
    INVALID_IDEMPOTENCY_KEY: 'invalid_idempotency_key', // HTTP 400: not 1-128 printable ASCII characters
    // HTTP 503
    SHUTTING_DOWN: 'shutting_down'
  });

  /** `reason` of `reconnect` frames. */
  const ReconnectReason = Object.freeze({
    BYTE_LIMIT: 'byte_limit',
    SLOW_CONSUMER: 'slow_consumer',
    SHUTDOWN: 'shutdown',
    TOKEN_EXPIRED: 'token_expired',
    BROKER_UNAVAILABLE: 'broker_unavailable' // history could not be read: resume after a pause
  });

  /** `reason` of `disconnect` frames (and of WebSocket closes 4003, 4004). */
  const DisconnectReason = Object.freeze({
    DISCONNECTED_BY_SERVER: 'disconnected_by_server', // POST /api/disconnect
    TOKEN_REVOKED: 'token_revoked' // POST /api/revoke revoked the token behind the connection
  });

  /** WebSocket close codes the server uses. */
  const CloseCode = Object.freeze({
    NORMAL: 1000,
    GOING_AWAY: 1001, // server going away: reconnect at once
    MESSAGE_TOO_BIG: 1009, // a client command was too big
    TRY_AGAIN_LATER: 1013, // the server's broker failed: reconnect after a pause
    SLOW_CONSUMER: 4001, // the client fell behind: reconnect at once with positions
    EXPIRED: 4002, // the authorization behind the socket lapsed
    DISCONNECT: 4003, // the server ended the connection: do not reconnect
    DISCONNECT_RECONNECT: 4004 // the server ended the connection: reconnect at once
  });

  /** Every transport, in the order the client tries them. */
  const TRANSPORTS = Object.freeze(['websocket', 'sse', 'stream', 'longpoll', 'poll']);

  /** The SSE event name of `error` frames (EventSource has an `error` event of its own). */
  const SSE_CHANNEL_ERROR = 'channel_error';

  const CHANNEL_RE = /^[A-Za-z0-9_\-.:/@#$]{1,128}$/;

  function checkChannel(channel) {
    if (typeof channel !== 'string' || !CHANNEL_RE.test(channel)) {
      throw new TypeError(`torchannels: invalid channel name ${JSON.stringify(channel)}` +
        ': use 1-128 characters from A-Z a-z 0-9 _ - . : / @ # $');
    }
  }

  const DEFAULTS = {
    url: '/channels',
    websocketUrl: null,
    transports: TRANSPORTS,
    transport: null,
    onReset: null,
    minReconnectDelay: 500,
    maxReconnectDelay: 10000,
    reconnectingDelay: 1000, // ms a lost connection may take to come back before the state says 'reconnecting'
    connectTimeout: 5000, // ms to wait for `connected` on a streaming transport
    maxPingDelay: 10000, // ms a ping may be late before the connection counts as dead
    pollInterval: 2000,
    longpollTimeout: 25, // s, sent as `timeout`; the server caps it to its own maximum
    requestTimeout: 10000, // ms a poll answer may take beyond the long-poll hold
    ping: null, // s: the keep-alive interval to ask streams for (`ping`); null: the server's
    probeDelay: 15000, // ms before the first probe of a better transport after a step-down
    maxProbeDelay: 300000, // ms: the longest pause between probes
    withCredentials: false,
    token: null, // a subscription token, sent as the `token` query parameter
    getToken: null // () => token or Promise of one: called for a fresh token when it lapses
  };

  // ---- Small helpers ----

  /**
   * Full-jitter exponential backoff, as centrifuge-js: a delay in
   * [min, min(max, min + min * 2^attempt)], uniformly at random.
   */
  function backoff(attempt, min, max, random) {
    const step = Math.min(attempt, 31);
    const jitter = Math.floor((random || Math.random)() * Math.min(max, min * Math.pow(2, step)));
    return Math.min(max, min + jitter);
  }

  function parseJSON(text) {
    try {
      return JSON.parse(text);
    } catch (e) {
      return undefined;
    }
  }

  /** `url` with the query parameter `token` (replacing any it had), or as it is without a token. */
  function withToken(url, token) {
    if (!token) return url;
    const q = url.indexOf('?');
    const query = q < 0 ? [] : url.slice(q + 1).split('&').filter((p) => p && p.split('=')[0] !== 'token');
    query.push(`token=${encodeURIComponent(token)}`);
    return `${q < 0 ? url : url.slice(0, q)}?${query.join('&')}`;
  }

  /** `url` with more query parameters (strings `name=value`, encoded already). */
  function withQuery(url, query) {
    return query.length ? url + (url.indexOf('?') < 0 ? '?' : '&') + query.join('&') : url;
  }

  /** The subscribe request of the HTTP transports (docs/protocol.md); `extra`: more parameters. */
  function httpUrl(base, transport, params, extra) {
    const query = [`transport=${transport}`, ...params.channels.map((c) => `channel=${encodeURIComponent(c)}`)];
    if (params.cursor) query.push(`cursor=${encodeURIComponent(params.cursor)}`);
    return withQuery(withToken(base, params.auth), query.concat(extra || []));
  }

  /** The `ping` parameter asking a stream for a shorter keep-alive, when the client wants one. */
  function pingQuery(host) {
    const ping = host.ping();
    return ping ? [`ping=${ping}`] : [];
  }

  /** The default WebSocket URL: the HTTP url + "/ws", as ws:/wss:. */
  function websocketUrl(url, location) {
    const q = url.indexOf('?');
    const path = `${(q < 0 ? url : url.slice(0, q)).replace(/\/+$/, '')}/ws`;
    const full = path + (q < 0 ? '' : url.slice(q));
    if (/^wss?:/i.test(full)) return full;
    if (/^https?:/i.test(full)) return full.replace(/^http/i, 'ws');
    if (!location || !location.href || typeof URL !== 'function') return null;
    const abs = new URL(full, location.href);
    abs.protocol = abs.protocol === 'https:' ? 'wss:' : 'ws:';
    return abs.href;
  }

  /** Every dependency on the environment, injectable through the options. */
  function environment(o) {
    // Browsers refuse `window.fetch` & co. called on another object.
    const unbound = (fn) => fn && ((...args) => fn(...args));
    const win = o.window !== undefined ? o.window : (typeof root.addEventListener === 'function' ? root : null);
    return {
      fetch: unbound(o.fetch || root.fetch),
      EventSource: o.EventSource || root.EventSource,
      WebSocket: o.WebSocket || root.WebSocket,
      setTimeout: unbound(o.setTimeout || root.setTimeout),
      clearTimeout: unbound(o.clearTimeout || root.clearTimeout),
      random: o.random || Math.random,
      now: o.now || Date.now,
      window: win,
      document: o.document !== undefined ? o.document
        : (root.document && typeof root.document.addEventListener === 'function' ? root.document : null),
      location: o.location !== undefined ? o.location : root.location,
      AbortController: o.AbortController || root.AbortController,
      TextDecoder: o.TextDecoder || root.TextDecoder
    };
  }

  function supported(name, env, wsUrl) {
    if (name === 'websocket') return !!(env.WebSocket && wsUrl);
    if (name === 'sse') return !!env.EventSource;
    if (name === 'stream') return !!(env.fetch && env.TextDecoder);
    return !!env.fetch;
  }

  // ---- The retry policy ----
  //
  // A transport that ends tells the client how to go on by naming one of
  // these as the `retry` of what it reports (none: Retry.AUTO). `next(index,
  // {candidates, worked})` is the index of the transport to try after the one
  // at `index` ended (`worked`: it connected at least once); past the last
  // one the client starts over from the first. It pauses (full-jitter
  // backoff) before trying the same transport again or starting over, unless
  // the policy says `now`.

  const same = (i) => i;
  const stepDown = (i) => i + 1;

  const Retry = Object.freeze({
    /** The server asked for a new connection at once (WebSocket close 1001, 4001). */
    NOW: Object.freeze({name: 'now', now: true, next: same}),
    /** The server answered: another transport would hear the same. This one, after a pause. */
    SAME: Object.freeze({name: 'same', next: same}),
    /** This transport cannot work here (not offered, not supported): the next one, at once. */
    NEXT: Object.freeze({name: 'next', next: stepDown}),
    /** A buffering proxy: long-poll, skipping the streaming transports the proxy would buffer too. */
    LONGPOLL: Object.freeze({
      name: 'longpoll',
      next: (i, c) => {
        const longpoll = c.candidates.indexOf('longpoll');
        return longpoll > i ? longpoll : i + 1;
      }
    }),
    /** No hint: step down while the transport never worked; keep one that did, after a pause. */
    AUTO: Object.freeze({name: 'auto', next: (i, c) => (c.worked ? i : i + 1)}),
    /** The connection's token lapsed: renew it when the client can, otherwise as AUTO. */
    TOKEN: Object.freeze({name: 'token', renewToken: true, next: (i, c) => (c.worked ? i : i + 1)})
  });

  /**
   * The candidate transports, the one being tried, and the failures since the
   * last connection (the backoff attempt): Retry applied.
   */
  class Fallback {
    constructor(candidates) {
      this.candidates = candidates;
      this.index = 0;
      this.failures = 0;
      this.worked = new Set(); // transports that connected at least once
    }

    get current() {
      return this.candidates[this.index];
    }

    connected(name) {
      this.worked.add(name);
      this.failures = 0;
    }

    /** The current transport ended under `retry`: move to the next one; true to pause first. */
    advance(retry) {
      const name = this.current;
      const next = retry.next(this.index, {candidates: this.candidates, worked: this.worked.has(name)});
      const wrapped = next >= this.candidates.length;
      const pause = !retry.now && (wrapped || next === this.index);
      this.index = wrapped ? 0 : next;
      return pause;
    }

    /** Back online: as fresh, from the first transport unless one has worked. */
    reset() {
      this.failures = 0;
      if (!this.worked.size) this.index = 0;
    }

    /** A new start (after close() or idle): the best transport first, nothing remembered. */
    restart() {
      this.index = 0;
      this.failures = 0;
      this.worked.clear();
    }

    /** The streaming transports better than the current one, best first: what a step-up probes. */
    better() {
      return this.candidates.slice(0, this.index).filter((name) => STREAMING.indexOf(name) >= 0);
    }
  }

  /** The transports that open with a `connected` frame: what a step-up probe can test. */
  const STREAMING = Object.freeze(['websocket', 'sse', 'stream']);

  /** A failed HTTP answer. The server's own refusals carry {"error": code, "message": text}. */
  function httpFailure(status, text) {
    const body = parseJSON(text);
    if (body && typeof body.error === 'string') {
      return {
        reason: 'refused',
        code: body.error,
        message: body.message,
        status,
        // A server without this transport: try the next one. Otherwise the
        // server spoke, and another transport would hear the same.
        retry: body.error === ErrorCode.UNKNOWN_TRANSPORT ? Retry.NEXT : Retry.SAME
      };
    }
    return {reason: 'http_error', code: status, status, message: `HTTP ${status}`};
  }

  /** What a request that got no answer at all reports: fetch() rejected, EventSource failed at once. */
  const UNREACHABLE = 'blocked or unreachable';
  /** What a connection that was answered, then cut, reports. */
  const LOST = 'connection lost';
  /** What a WebSocket closed before it opened reports (the browser hides the HTTP answer). */
  const WS_UNREACHABLE = 'refused or unreachable';

  // Each end of a connection is said twice: in plain words a page can show a
  // user (the `reason` of `state` and `transport_failed` events), and in
  // technical detail for a developer (their `detail`, the `error` event's
  // `message`).

  /** Plain words for the reasons and codes a transport ends with. */
  const PLAIN = Object.freeze({
    [UNREACHABLE]: 'server unreachable',
    [WS_UNREACHABLE]: 'server unreachable',
    [LOST]: LOST,
    closed: 'connection closed by the server',
    offline: 'offline',
    connect_timeout: 'server not responding',
    timeout: 'server not responding',
    ping_timeout: 'connection timed out',
    bad_frame: 'unreadable answer from the server',
    bad_answer: 'unreadable answer from the server',
    unsupported: 'not supported by this browser',
    shutdown: 'server restarting',
    [ErrorCode.SHUTTING_DOWN]: 'server restarting',
    [ReconnectReason.TOKEN_EXPIRED]: 'access expired',
    [ReconnectReason.BROKER_UNAVAILABLE]: 'server temporarily unavailable',
    [ReconnectReason.BYTE_LIMIT]: 'server renewed the connection',
    [ReconnectReason.SLOW_CONSUMER]: 'connection too slow',
    [ErrorCode.UNKNOWN_TRANSPORT]: 'not offered by the server',
    [DisconnectReason.DISCONNECTED_BY_SERVER]: 'disconnected by the server',
    [DisconnectReason.TOKEN_REVOKED]: 'access revoked'
  });

  /** Plain words for the WebSocket close codes (any other: closed by the server). */
  const CLOSE_PLAIN = Object.freeze({
    [CloseCode.GOING_AWAY]: PLAIN.shutdown,
    [CloseCode.MESSAGE_TOO_BIG]: 'message too big',
    [CloseCode.TRY_AGAIN_LATER]: PLAIN[ReconnectReason.BROKER_UNAVAILABLE],
    [CloseCode.SLOW_CONSUMER]: PLAIN[ReconnectReason.SLOW_CONSUMER],
    [CloseCode.EXPIRED]: PLAIN[ReconnectReason.TOKEN_EXPIRED],
    1006: LOST
  });

  /** Plain words for an HTTP status that ended a request. */
  function httpPlain(status) {
    if (status === 401 || status === 403) return `access denied (${status})`;
    if (status === 404) return 'not found (404)';
    if (status === 502 || status === 503 || status === 504) return `server unavailable (${status})`;
    return status >= 500 ? `server error (${status})` : `request refused (${status})`;
  }

  /**
   * A transport's end (what host.end() gets) as {reason: plain words, detail:
   * technical words}. The reporter may give either ready-made (`plain`,
   * `detail`): the WebSocket knows its close codes, the client its timeouts.
   */
  function explain(info) {
    let plain = info.plain;
    let detail = info.detail;
    if (info.reason === 'refused') {
      plain = plain || (info.status === 401 || info.status === 403 ? httpPlain(info.status)
        : PLAIN[info.code] || httpPlain(info.status));
      detail = detail || `HTTP ${info.status} ${info.code}${info.message ? `: ${info.message}` : ''}`;
    } else if (info.reason === 'http_error') {
      plain = plain || httpPlain(info.status);
      detail = detail || `HTTP ${info.status}`;
    }
    return {reason: plain || PLAIN[info.reason] || LOST, detail: detail || info.reason || LOST};
  }

  /** How the client goes on after each WebSocket close code (any other: Retry.AUTO). */
  const CLOSE_RETRY = Object.freeze({
    [CloseCode.GOING_AWAY]: Retry.NOW,
    [CloseCode.SLOW_CONSUMER]: Retry.NOW,
    [CloseCode.EXPIRED]: Retry.TOKEN,
    [CloseCode.MESSAGE_TOO_BIG]: Retry.SAME
  });

  /**
   * Splits a text stream into lines as it arrives. Only the new text is
   * scanned for newlines and only the unfinished line is kept, so a long
   * catch-up costs time in proportion to its size, however it is chunked.
   */
  class LineSplitter {
    constructor() {
      this._tail = []; // pieces of the line not finished yet
    }

    /** The lines that `text` completes, in order. */
    push(text) {
      const lines = [];
      let start = 0;
      for (let end = text.indexOf('\n'); end >= 0; end = text.indexOf('\n', start)) {
        const piece = text.slice(start, end);
        if (this._tail.length) {
          this._tail.push(piece);
          lines.push(this._tail.join(''));
          this._tail = [];
        } else {
          lines.push(piece);
        }
        start = end + 1;
      }
      if (start < text.length) this._tail.push(start ? text.slice(start) : text);
      return lines;
    }
  }

  // ---- Transports ----
  //
  // One object per connection attempt, every kind behind one small
  // interface, as centrifuge-js's transports:
  //   new T(host, name); t.open(); t.close(); t.name;
  //   t.auth: the subscription token its current request or socket carries;
  //   t.streaming: the server opens with a `connected` frame (watched by connectTimeout);
  //   t.seesPings: the client sees the server's pings (watched by maxPingDelay);
  //   t.inBand: t.subscribe(channels, cursor) / t.unsubscribe(channels) on the open connection.
  // The host is all a transport knows of the client:
  //   host.env, host.opts, host.url, host.wsUrl;
  //   host.params(): {channels, cursor, auth} for a request made now;
  //   host.token(): the subscription token now;
  //   host.hold(): the long-poll hold to ask for (s, or null); host.ping(): the keep-alive to ask for (s, or null);
  //   host.frame(t, frame): every frame, in order;
  //   host.end(t, info): the end, reported once: {reason, code?, status?, message?, plain?, detail?, age?, error?,
  //     retry?: Retry.*, disconnect?} (plain, detail: words for it, see explain(); age: ms a long-poll request
  //     was held; disconnect: {reason, reconnect}, the server ended it on purpose, as a `disconnect` frame says);
  //   host.answered(t): a poll answer came without a lapsed token;
  //   host.clientId(): the client id to send back on poll requests (null: none yet);
  //   host.client(id): a poll answer named the client id.
  // The host ignores all of it from a transport that is no longer current.

  class Transport {
    constructor(host, name) {
      this.host = host;
      this.name = name;
      this.auth = null;
      this.closed = false;
    }

    get streaming() { return false; }

    get seesPings() { return false; }

    get inBand() { return false; }

    /** Connect, or make the first request. */
    open() {
      throw new Error(`torchannels: ${this.name} does not open`);
    }

    /** Stop for good (the client's choice): nothing is reported after this. */
    close() {
      if (this.closed) return;
      this.closed = true;
      this._release();
    }

    /** Free what open() took: abort the request, close the socket. Called once, by close(). */
    _release() {}

    _frame(frame) {
      if (!this.closed) this.host.frame(this, frame);
    }

    /** A frame as JSON text (`wrap`: the type of a frame whose `data` the text is). */
    _text(text, wrap) {
      if (this.closed) return;
      const value = parseJSON(text);
      if (value === undefined) return this._end({reason: 'bad_frame'});
      this._frame(wrap ? {type: wrap, data: value} : value);
    }

    _end(info) {
      if (this.closed) return;
      this.host.end(this, info);
      this.close();
    }
  }

  /** The transports over fetch(): the channels and the cursor ride in each request's query. */
  class HttpTransport extends Transport {
    constructor(host, name) {
      super(host, name);
      this._abort = null;
    }

    /** fetch() the subscribe URL for the channels and positions of this moment. */
    _fetch(extra) {
      const {env, opts, url} = this.host;
      const controller = env.AbortController ? new env.AbortController() : null;
      const params = this.host.params();
      this.auth = params.auth;
      this._abort = controller;
      return env.fetch(httpUrl(url, this.name, params, extra), {
        signal: controller ? controller.signal : undefined,
        credentials: opts.withCredentials ? 'include' : 'same-origin'
      });
    }

    _release() {
      if (this._abort) this._abort.abort();
    }
  }

  /** poll and longpoll: one JSON document per request, {"cursor", "frames"}. */
  class PollTransport extends HttpTransport {
    constructor(host, name) {
      super(host, name);
      this.hold = name === 'longpoll';
      this._answered = false;
      this._timer = null;
    }

    open() {
      const {env, opts} = this.host;
      // The server holds min(timeout, its longpoll_timeout), so the hold
      // never outlasts the deadline below.
      const hold = this.hold ? this.host.hold() : null;
      const limit = opts.requestTimeout + (this.hold ? (hold || 25) * 1000 : 0);
      this._timer = env.setTimeout(() => this._end({reason: 'timeout', detail: `no answer within ${limit} ms`}), limit);
      const sent = env.now();
      // The client id the server gave: sent back, so that polls are one client (presence).
      const client = this.host.clientId();
      const extra = client ? [`client=${encodeURIComponent(client)}`] : [];
      if (hold) extra.push(`timeout=${hold}`);
      this._fetch(extra)
        .then((res) => res.text().then((text) => this._answer(res, text, env.now() - sent)))
        .catch((err) => {
          // No answer: nothing was reached (or the browser blocked it, CORS),
          // unless a held request was cut after a while.
          const age = env.now() - sent;
          this._end({reason: this.hold && age >= 1000 ? LOST : UNREACHABLE, age, error: err});
        });
    }

    _answer(res, text, age) {
      if (this.closed) return;
      const {env, opts} = this.host;
      env.clearTimeout(this._timer);
      if (!res.ok) return this._end(Object.assign(httpFailure(res.status, text), {age}));
      const doc = parseJSON(text);
      if (!doc || !Array.isArray(doc.frames)) return this._end({reason: 'bad_answer'});
      if (typeof doc.client === 'string') this.host.client(doc.client);
      if (!this._answered) {
        this._answered = true;
        this._frame({type: FrameType.CONNECTED, transport: this.name});
      }
      for (const frame of doc.frames) {
        if (this.closed) return;
        this._frame(frame);
      }
      if (this.closed) return;
      this.host.answered(this);
      if (this.hold) this.open();
      else this._timer = env.setTimeout(() => this.open(), opts.pollInterval);
    }

    _release() {
      this.host.env.clearTimeout(this._timer);
      super._release();
    }
  }

  /** stream: fetch + ReadableStream, one JSON frame per line. */
  class StreamTransport extends HttpTransport {
    constructor(host, name) {
      super(host, name);
      this._reader = null;
    }

    get streaming() { return true; }

    get seesPings() { return true; }

    open() {
      this._fetch(pingQuery(this.host))
        .then((res) => {
          if (this.closed) return;
          if (!res.ok) return res.text().then((text) => this._end(httpFailure(res.status, text)));
          if (!res.body || typeof res.body.getReader !== 'function') {
            return this._end({reason: 'unsupported', retry: Retry.NEXT});
          }
          this._read(res.body.getReader(), new this.host.env.TextDecoder());
        })
        .catch((err) => this._end({reason: UNREACHABLE, error: err}));
    }

    _read(reader, decoder) {
      const lines = new LineSplitter();
      this._reader = reader;
      const pump = () => {
        // Not returned: a stream lives long, and a chain of returned
        // promises would keep every chunk's promise alive until it ends.
        reader.read().then((chunk) => {
          if (this.closed) return;
          const text = chunk.done ? decoder.decode() : decoder.decode(chunk.value, {stream: true});
          for (const line of lines.push(text)) {
            if (this.closed) return;
            if (line.trim()) this._text(line);
          }
          if (chunk.done) this._end({reason: 'closed'});
          else if (!this.closed) pump();
        }).catch((err) => this._end({reason: LOST, error: err}));
      };
      pump();
    }

    _release() {
      super._release();
      if (this._reader) this._reader.cancel().catch(() => {});
    }
  }

  /** The named SSE events that carry a whole frame (message frames are default events). */
  const SSE_EVENTS = [FrameType.CONNECTED, FrameType.SUBSCRIBED, FrameType.RESET, FrameType.RECONNECT,
    FrameType.PING, FrameType.PRESENCE, FrameType.DISCONNECT, SSE_CHANNEL_ERROR];

  /** sse: a browser EventSource; the client, not the browser, reconnects. */
  class SSETransport extends Transport {
    constructor(host, name) {
      super(host, name);
      this._es = null;
    }

    get streaming() { return true; }

    get seesPings() { return true; } // `ping` events

    open() {
      const {env, opts, url} = this.host;
      const params = this.host.params();
      this.auth = params.auth;
      // ids=0: the server leaves out the `id:` lines; the client resumes from
      // its own cursor and never lets EventSource reconnect with Last-Event-ID.
      const es = this._es = new env.EventSource(httpUrl(url, this.name, params, ['ids=0', ...pingQuery(this.host)]),
        {withCredentials: !!opts.withCredentials});
      let heard = false; // an event came: the server was reached
      const named = (event) => {
        heard = true;
        this._text(event.data);
      };
      for (const type of SSE_EVENTS) es.addEventListener(type, named);
      // Message frames are default events whose data is the message itself.
      es.addEventListener('message', (event) => {
        heard = true;
        this._text(event.data, FrameType.MESSAGE);
      });
      // EventSource's own error event: the connection failed or ended. (The
      // server's error frames are `channel_error` events.) It carries no
      // status: before any event, the request was refused, blocked or not
      // answered at all.
      es.addEventListener('error', () => this._end(heard ? {reason: LOST}
        : {reason: UNREACHABLE, detail: 'EventSource failed before any event (blocked or unreachable)'}));
    }

    _release() {
      if (this._es) this._es.close();
    }
  }

  /** websocket: one socket; channels join and leave in-band. */
  class WebSocketTransport extends Transport {
    constructor(host, name) {
      super(host, name);
      this._ws = null;
      this._ready = false; // open: commands can be sent
      // Channels we sent `unsubscribe` for and whose answer is still on its
      // way: frames for them belong to the old subscription.
      this._leaving = new Map();
    }

    get streaming() { return true; }

    get seesPings() { return true; }

    get inBand() { return true; }

    open() {
      const host = this.host;
      // The socket's token is the one in its URL, for its whole life.
      this.auth = host.token();
      const ws = this._ws = new host.env.WebSocket(withQuery(withToken(host.wsUrl, this.auth), pingQuery(host)));
      ws.onopen = () => {
        if (this.closed) return;
        this._ready = true;
        const p = host.params();
        this.subscribe(p.channels, p.cursor);
      };
      ws.onmessage = (event) => this._text(event.data);
      ws.onclose = (event) => {
        if (event.code === CloseCode.DISCONNECT || event.code === CloseCode.DISCONNECT_RECONNECT) {
          // The server ended the socket on purpose. Its `disconnect` frame,
          // when it came first, was acted on already (this socket is closed
          // then); a close without it says the same.
          const reason = event.reason || DisconnectReason.DISCONNECTED_BY_SERVER;
          return this._end({reason: 'disconnect', code: event.code,
            disconnect: {reason, reconnect: event.code === CloseCode.DISCONNECT_RECONNECT},
            detail: `close ${event.code}${event.reason ? `: ${event.reason}` : ''}`});
        }
        if (!this._ready) {
          // Closed before it opened: browsers hide the HTTP answer (a 403 from
          // the origin check, a 404, a proxy without Upgrade) behind 1006.
          return this._end({reason: WS_UNREACHABLE, code: event.code, message: event.reason,
            detail: `close ${event.code} before open (refused or unreachable)`});
        }
        const retry = CLOSE_RETRY[event.code];
        const reason = retry === Retry.TOKEN ? ReconnectReason.TOKEN_EXPIRED : event.code === 1006 ? LOST : 'closed';
        this._end({reason, code: event.code, message: event.reason, retry,
          plain: CLOSE_PLAIN[event.code] || PLAIN.closed,
          detail: `close ${event.code}${event.reason ? `: ${event.reason}` : ''}`});
      };
      ws.onerror = () => {}; // onclose follows, with the code
    }

    subscribe(channels, cursor) {
      if (!this._ready || !channels.length) return;
      const command = {type: 'subscribe', channels};
      if (cursor) command.cursor = cursor;
      this._ws.send(JSON.stringify(command));
    }

    /** Open: commands can be sent. */
    get ready() {
      return this._ready && !this.closed;
    }

    /** Send a command (a `presence` read, a `publish`); only when ready. */
    send(command) {
      this._ws.send(JSON.stringify(command));
    }

    unsubscribe(channels) {
      if (!this._ready || !channels.length) return;
      for (const c of channels) this._leaving.set(c, (this._leaving.get(c) || 0) + 1);
      this._ws.send(JSON.stringify({type: 'unsubscribe', channels}));
    }

    _frame(frame) {
      if (!frame || typeof frame !== 'object') return super._frame(frame); // the client ignores it
      const type = frame.type;
      const channel = type === FrameType.MESSAGE ? frame.data && frame.data.channel : frame.channel;
      // A presence read's or a publish's answer belongs to the call, not to the subscription.
      const read = type === FrameType.PRESENCE_PAGE || type === FrameType.PUBLISHED
        || type === FrameType.PUBLISH_ERROR || (type === FrameType.ERROR && PRESENCE_CODES.indexOf(frame.code) >= 0);
      const leaving = channel && !read && this._leaving.get(channel);
      if (leaving) {
        // The server answers every unsubscribe with one `unsubscribed` per
        // channel, held or not: everything before it is the old subscription's.
        if (type === FrameType.UNSUBSCRIBED) {
          if (leaving > 1) this._leaving.set(channel, leaving - 1);
          else this._leaving.delete(channel);
        }
        return;
      }
      super._frame(frame);
    }

    _release() {
      const ws = this._ws;
      if (!ws) return;
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        ws.close(CloseCode.NORMAL);
      } catch (e) { /* already closed */ }
    }
  }

  const TRANSPORT_CLASSES = {
    websocket: WebSocketTransport,
    sse: SSETransport,
    stream: StreamTransport,
    longpoll: PollTransport,
    poll: PollTransport
  };

  /** Named one-shot timers on env.setTimeout: starting one cancels the one of that name before it. */
  class Timers {
    constructor(env) {
      this._env = env;
      this._ids = {};
    }

    /** Call fn() in `ms`, in place of any `name` timer pending. */
    after(name, ms, fn) {
      const ids = this._ids;
      this.cancel(name);
      ids[name] = this._env.setTimeout(() => {
        ids[name] = null;
        fn();
      }, ms);
    }

    cancel(name) {
      if (this._ids[name] != null) {
        this._env.clearTimeout(this._ids[name]);
        this._ids[name] = null;
      }
    }

    pending(name) {
      return this._ids[name] != null;
    }
  }

  // ---- Adapting to the path ----

  /** A connection that lived this long (ms) is retried without the backoff's floor. */
  const STABLE_MS = 2000;
  /** Two cuts this close in age (ms, or a fifth of the age) are "at a consistent age". */
  function sameAge(a, b) {
    return a != null && b != null && Math.abs(a - b) <= Math.max(1000, 0.2 * Math.max(a, b));
  }
  /** The keep-alive bounds the server clamps `ping` to (s). */
  const MIN_PING = 5;

  /**
   * What the client asks of the server to get through what is in the path (a
   * proxy's read timeout): the long-poll hold (s, `timeout`) and the stream
   * keep-alive (s, `ping`), each learnt from the cuts the transports report.
   * Pure: `now()` is the only thing it reads.
   *
   *   const path = new PathAdapter({longpollTimeout: 25, ping: null}, Date.now);
   *   path.hold;  // 25, until cuts say the path allows less
   */
  class PathAdapter {
    constructor(opts, now) {
      this._now = now;
      this.hold = opts.longpollTimeout; // s, the long-poll hold asked for (shortened after 502/504, cuts)
      this.ping = opts.ping; // s, the keep-alive asked of streams (shortened after idle cuts)
      this._holdCut = null; // age (ms) of the last cut of a held long-poll
      this._idleCut = null; // ms of silence before the last cut of a stream
    }

    /**
     * A long-poll ended by a 502/504, or cut, after it was held a while (at
     * least 1 s, less than the hold asked for): is the hold longer than
     * something in the path allows? A gateway error, or a second cut at the
     * same age, shortens the hold to 3/4 of that age. The first cut only
     * polls again. True: poll again at once, as no failure.
     */
    holdTooLong(info) {
      const age = info.age;
      const current = this.hold || 25;
      const gateway = info.status === 502 || info.status === 504;
      if (!(age >= 1000) || !(gateway || info.reason === LOST)) return false;
      // Held for the whole hold, the server would have answered: the fault is
      // elsewhere (a gateway that cannot reach the hub, say), not the hold.
      if (age >= current * 1000) return false;
      const consistent = gateway || sameAge(this._holdCut, age);
      this._holdCut = age;
      if (!consistent) return true;
      const hold = Math.max(1, Math.min(current - 1, Math.floor(age * 0.75 / 1000)));
      if (hold >= current) return false; // as short as it goes: an ordinary failure
      this.hold = hold;
      return true;
    }

    /**
     * A stream (`conn`: {connectedAt, heardAt, serverPing}) ended with `info`.
     * Cut after a silence shorter than its ping interval (the next ping was
     * not even due): something in the path times out idle connections. A
     * second such cut after the same silence asks the server for pings at
     * half that silence (at least 5 s).
     */
    streamEnded(conn, info) {
      const idle = conn.heardAt == null ? null : this._now() - conn.heardAt;
      const cut = info.reason === LOST || info.reason === 'closed';
      if (!cut || conn.connectedAt == null || !conn.serverPing || !(idle >= 1000) || idle >= conn.serverPing * 1000) {
        this._idleCut = null;
        return;
      }
      if (sameAge(this._idleCut, idle)) {
        const ping = Math.max(MIN_PING, Math.floor(idle / 2000));
        if (ping < (this.ping || conn.serverPing)) this.ping = ping;
      }
      this._idleCut = idle;
    }
  }

  // ---- Stepping back up ----

  /**
   * After a step-down, probes the better transports now and then, beside the
   * live connection: each only has to answer `connected` within
   * connectTimeout. Rounds that fail back off (probeDelay doubling up to
   * maxProbeDelay, half of it jitter). What it needs of the client:
   *   live(): connected, over a transport the client may change;
   *   better(): the streaming transports better than the current one, best first;
   *   transport(name, {connected(t), ended(t)}): a new, unopened probe transport;
   *   won(name): the probe of `name` answered: switch to it.
   */
  class Prober {
    constructor(env, opts, client) {
      this._env = env;
      this._opts = opts;
      this._client = client;
      this._timers = new Timers(env); // plan: the next round; timeout: the probe running
      this._probe = null; // the round running: {transport, queue}
      this._round = 0; // rounds failed since the step-down
      this._at = -Infinity; // when the last round started
    }

    /** A round can start: connected over a worse transport than the best, and none running. */
    get ready() {
      return !this._probe && this._client.live() && this._client.better().length > 0;
    }

    /** Connected (again): plan a round, unless one is planned or running. */
    plan() {
      if (this._timers.pending('plan') || !this.ready) return;
      const o = this._opts;
      const ceiling = Math.min(o.maxProbeDelay, o.probeDelay * Math.pow(2, Math.min(this._round, 31)));
      const delay = Math.floor(ceiling / 2 + this._env.random() * ceiling / 2);
      this._timers.after('plan', delay, () => this.start());
    }

    /** Back online or visible: a round now, unless one started within connectTimeout. */
    poke() {
      if (this.ready && this._env.now() - this._at >= this._opts.connectTimeout) this.start();
    }

    /** Open the better transports one by one, best first. */
    start() {
      this._timers.cancel('plan');
      if (!this.ready) return; // planned again once connected
      this._at = this._env.now();
      this._probe = {transport: null, queue: this._client.better()};
      this._next();
    }

    /** Close the probe running, if any (the connection it ran beside went). */
    stop() {
      const probe = this._probe;
      this._probe = null;
      this._timers.cancel('timeout');
      if (probe && probe.transport) probe.transport.close();
    }

    /** Stop, with nothing planned and the backoff forgotten (the client disconnected). */
    reset() {
      this.stop();
      this._timers.cancel('plan');
      this._round = 0;
    }

    _next() {
      const probe = this._probe;
      const name = probe.queue.shift();
      if (!name) {
        this._probe = null;
        this._round++;
        return this.plan();
      }
      // Only the probe running counts: not one given up or stopped.
      const current = (t) => this._probe === probe && probe.transport === t;
      const t = probe.transport = this._client.transport(name, {
        connected: (t) => {
          if (current(t)) this._won(t);
        },
        ended: (t) => {
          if (current(t)) this._lost();
        }
      });
      this._timers.after('timeout', this._opts.connectTimeout, () => this._lost());
      try {
        t.open();
      } catch (err) {
        this._lost();
      }
    }

    _lost() {
      const probe = this._probe;
      if (!probe) return;
      this._timers.cancel('timeout');
      const t = probe.transport;
      probe.transport = null;
      if (t) t.close();
      this._next();
    }

    _won(t) {
      this.stop();
      this._round = 0;
      this._client.won(t.name);
    }
  }

  // ---- Who is here ----

  /** Code point order, as the server sorts user ids (`<` on strings compares UTF-16 units). */
  function byUser(a, b) {
    const x = a.user;
    const y = b.user;
    for (let i = 0, j = 0; i < x.length && j < y.length;) {
      const cx = x.codePointAt(i);
      const cy = y.codePointAt(j);
      if (cx !== cy) return cx - cy;
      i += cx > 0xffff ? 2 : 1;
      j += cy > 0xffff ? 2 : 1;
    }
    return x.length - y.length;
  }

  /** A member as the server sends it ({user, info, clients}), frozen; null if it has no user id. */
  function member(m, clients) {
    if (!m || typeof m.user !== 'string') return null;
    const info = m.info && typeof m.info === 'object' ? m.info : null;
    return Object.freeze({user: m.user, info, clients: clients || (m.clients > 0 ? m.clients : 1)});
  }

  /** A count from the server, or `fallback` when it sent none. */
  function count(n, fallback) {
    return typeof n === 'number' && n >= 0 ? n : fallback;
  }

  /**
   * The live member list of each presence channel: it starts from a
   * snapshot (a `subscribed` frame's `presence`), takes the joins and
   * leaves of `presence` frames, and is replaced whole by the next snapshot
   * (a reconnect brings one; polling transports read one, see
   * Client._refreshPresence). Each change returns the `presence` event the
   * client emits, so an app never stitches snapshots and diffs itself.
   *
   *   const roster = new Roster();
   *   roster.snapshot('room', {users: 1, clients: 2, members: [{user: 'ann', clients: 2}], next: null}, Date.now());
   *   roster.apply('room', {joins: [{user: 'bob', info: null}], leaves: []}).users;  // 2
   */
  class Roster {
    constructor() {
      // channel -> {byUser: Map user -> member, sorted: array|null, users, clients, complete,
      //   seq: changes so far, at: when its snapshot was taken or last asked for (ms)}
      this._lists = new Map();
    }

    /** Start `channel` over from a snapshot; the event, or null for a snapshot it cannot read. */
    snapshot(channel, presence, now) {
      if (!presence || typeof presence !== 'object' || !Array.isArray(presence.members)) {
        this._lists.delete(channel);
        return null;
      }
      const old = this._lists.get(channel);
      const list = {byUser: new Map(), sorted: null, users: 0, clients: 0, complete: presence.next == null,
        seq: old ? old.seq + 1 : 0, at: now};
      for (const m of presence.members) {
        const entry = member(m);
        if (entry) list.byUser.set(entry.user, entry);
      }
      list.users = Math.max(list.byUser.size, count(presence.users, list.byUser.size));
      list.clients = count(presence.clients, 0);
      this._lists.set(channel, list);
      return this._event(channel, list, [], [], true);
    }

    /**
     * A `presence` frame's joins and leaves applied to `channel`'s list; the
     * event, or null when the channel has no list (no snapshot yet).
     */
    apply(channel, frame) {
      const list = this._lists.get(channel);
      if (!list) return null;
      const joins = [];
      const leaves = [];
      for (const j of Array.isArray(frame.joins) ? frame.joins : []) {
        const entry = member(j, 1); // a join is the user's first client
        if (!entry) continue;
        joins.push({user: entry.user, info: entry.info});
        // A join the snapshot already counted (it was taken after the join) changes nothing.
        if (list.byUser.has(entry.user)) continue;
        list.byUser.set(entry.user, entry);
        list.users++;
      }
      for (const l of Array.isArray(frame.leaves) ? frame.leaves : []) {
        if (!l || typeof l.user !== 'string') continue;
        leaves.push({user: l.user});
        // Of a user not listed: beyond the first page (counted), or gone already.
        if (list.byUser.delete(l.user) || !list.complete) list.users--;
      }
      list.users = Math.max(list.users, list.byUser.size);
      list.sorted = null;
      list.seq++;
      return this._event(channel, list, joins, leaves, false);
    }

    /** Every list counts as stale: the next due() names them all. */
    stale() {
      for (const list of this._lists.values()) list.at = -Infinity;
    }

    /**
     * The channels whose list is older than `ms` at `now`, each marked as
     * asked for now: [channel, seq] pairs for refresh().
     */
    due(now, ms) {
      const due = [];
      for (const [channel, list] of this._lists) {
        if (now - list.at < ms) continue;
        list.at = now;
        due.push([channel, list.seq]);
      }
      return due;
    }

    /**
     * A page read at `seq` made the list again (a snapshot event), unless
     * the list changed since (a frame or a snapshot came after the read was
     * sent, and the page may not show it): null then.
     */
    refresh(channel, seq, page, now) {
      const list = this._lists.get(channel);
      return list && list.seq === seq ? this.snapshot(channel, page, now) : null;
    }

    /** The members of `channel` sorted by user id (a new array), or null without a list. */
    members(channel) {
      const list = this._lists.get(channel);
      return list ? this._sorted(list).slice() : null;
    }

    /** Forget the lists of the channels not in `channels` (a Set): unsubscribed or refused. */
    keep(channels) {
      for (const channel of Array.from(this._lists.keys())) {
        if (!channels.has(channel)) this._lists.delete(channel);
      }
    }

    _sorted(list) {
      if (!list.sorted) list.sorted = Array.from(list.byUser.values()).sort(byUser);
      return list.sorted;
    }

    _event(channel, list, joins, leaves, snapshot) {
      return {channel, members: this._sorted(list).slice(), users: list.users, clients: list.clients,
        complete: list.complete, joins, leaves, snapshot};
    }
  }

  /** ms between re-reads of the member lists while polling (Client._refreshPresence). */
  const POLL_PRESENCE_MS = 10000;

  /** A refused or failed presence read: `code` is an ErrorCode, `status` the HTTP status (null on a WebSocket). */
  class PresenceError extends Error {
    constructor(code, message, channel, status) {
      super(message || code);
      this.name = 'PresenceError';
      this.code = code;
      this.channel = channel;
      this.status = status == null ? null : status;
    }
  }

  /** The codes an `error` frame answers a `presence` command with (the others are about the channel). */
  const PRESENCE_CODES = Object.freeze([ErrorCode.PRESENCE_DISABLED, ErrorCode.INVALID_CURSOR,
    ErrorCode.INVALID_LIMIT]);

  /** One page of a presence read, as the d.ts's PresencePage. */
  function presencePage(channel, doc) {
    const members = doc.members.map((m) => member(m)).filter(Boolean);
    return {channel, members, next: doc.next == null ? null : doc.next, clients: count(doc.clients, 0),
      users: count(doc.users, 0)};
  }

  /**
   * One-off presence reads (client.presence()): a `presence` command on the
   * client's WebSocket, answered by `presence_page` (per channel, in the
   * order asked), or an HTTP GET of the subscribe URL with `presence=`.
   * Reads still waiting when their socket goes are asked again over HTTP.
   * It needs of the client its env, its opts (url, requestTimeout,
   * withCredentials) and token(): the subscription token now.
   */
  class PresenceReads {
    constructor(env, opts, token) {
      this._env = env;
      this._opts = opts;
      this._token = token; // () => the subscription token now
      this._pending = []; // WebSocket reads: {channel, query, transport, timer, resolve, reject}
    }

    /** Read one page of `channel`; over `t` when given (an open WebSocket carrying it). */
    read(channel, query, t) {
      return new Promise((resolve, reject) => {
        if (t) this._send(t, {channel, query, resolve, reject});
        else this._get(channel, query).then(resolve, reject);
      });
    }

    /** A `presence_page` frame: the oldest read of its channel on `t` resolves. True if one waited. */
    page(t, f) {
      const read = this._take(t, f.channel);
      if (!read) return false;
      if (Array.isArray(f.members)) read.resolve(presencePage(f.channel, f));
      else read.reject(new PresenceError('bad_answer', 'unreadable presence_page', f.channel));
      return true;
    }

    /** An `error` frame: the oldest read of its channel on `t` rejects, if the code is a read's. */
    error(t, f) {
      if (PRESENCE_CODES.indexOf(f.code) < 0) return false;
      const read = this._take(t, f.channel);
      if (!read) return false;
      read.reject(new PresenceError(f.code, f.message, f.channel, null));
      return true;
    }

    /** The socket `t` is gone: its reads are asked again over HTTP. */
    lost(t) {
      for (const read of this._pending.filter((r) => r.transport === t)) {
        this._drop(read);
        this._get(read.channel, read.query).then(read.resolve, read.reject);
      }
    }

    _send(t, read) {
      const command = Object.assign({type: 'presence', channel: read.channel}, read.query);
      read.transport = t;
      const ms = this._opts.requestTimeout;
      read.timer = this._env.setTimeout(() => {
        this._drop(read);
        read.reject(new PresenceError('timeout', `no presence_page within ${ms} ms`, read.channel, null));
      }, ms);
      this._pending.push(read);
      t.send(command);
    }

    _take(t, channel) {
      const read = this._pending.find((r) => r.transport === t && r.channel === channel);
      if (read) this._drop(read);
      return read;
    }

    _drop(read) {
      this._env.clearTimeout(read.timer);
      this._pending.splice(this._pending.indexOf(read), 1);
    }

    _get(channel, query) {
      const env = this._env;
      const opts = this._opts;
      const params = [`presence=${encodeURIComponent(channel)}`];
      if (query.after != null) params.push(`after=${encodeURIComponent(query.after)}`);
      if (query.limit != null) params.push(`limit=${query.limit}`);
      const controller = env.AbortController ? new env.AbortController() : null;
      const ms = opts.requestTimeout;
      let late = false;
      const timer = env.setTimeout(() => {
        late = true;
        if (controller) controller.abort();
      }, ms);
      const fail = (code, message, status) => {
        throw new PresenceError(code, message, channel, status);
      };
      const broken = (err) => {
        env.clearTimeout(timer);
        if (late) return fail('timeout', `no answer within ${ms} ms`, null);
        return fail('unreachable', `${UNREACHABLE}${err && err.message ? `: ${err.message}` : ''}`, null);
      };
      return env.fetch(withQuery(withToken(opts.url, this._token()), params), {
        signal: controller ? controller.signal : undefined,
        credentials: opts.withCredentials ? 'include' : 'same-origin'
      }).then((res) => res.text().then((text) => {
        env.clearTimeout(timer);
        if (!res.ok) {
          const failure = httpFailure(res.status, text);
          return fail(failure.reason === 'refused' ? failure.code : 'http_error', failure.message, res.status);
        }
        const doc = parseJSON(text);
        if (!doc || !Array.isArray(doc.members)) return fail('bad_answer', 'unreadable presence answer', res.status);
        return presencePage(channel, doc);
      }, broken), broken);
    }
  }

  // ---- Publishing ----

  /** The codes worth trying again after a pause (the server says so with `retry: true` too). */
  const RETRY_CODES = Object.freeze([ErrorCode.RATE_LIMITED, ErrorCode.PROXY_UNAVAILABLE,
    ErrorCode.BROKER_UNAVAILABLE]);

  /** The keys the server sets on every message: a publish carrying one is refused. */
  const RESERVED_KEYS = Object.freeze(['channel', 'ts', 'epoch', 'offset', 'sender']);

  /**
   * A refused or failed client.publish(). `code` is an ErrorCode, or the
   * client's own: connection_lost, timeout, network_error, http_error,
   * bad_answer. `retry`: trying again after a pause may succeed (after
   * `retryAfter` seconds when not null). `status`: the HTTP status, 0 when
   * none came (a WebSocket, a failure before any answer, an argument check).
   */
  class PublishError extends Error {
    constructor(code, message, details) {
      const d = details || {};
      super(message || code);
      this.name = 'PublishError';
      this.code = code;
      this.retry = d.retry === true;
      this.retryAfter = typeof d.retryAfter === 'number' && d.retryAfter >= 0 ? d.retryAfter : null;
      this.status = d.status > 0 ? d.status : 0;
      this.channel = d.channel === undefined ? null : d.channel;
    }
  }

  /** A plain object ({...}, Object.create(null)) of any realm: not an array, a Date, a class instance. */
  function isPlainObject(value) {
    if (!value || typeof value !== 'object' || Object.prototype.toString.call(value) !== '[object Object]') {
      return false;
    }
    const proto = Object.getPrototypeOf(value);
    return proto === null || Object.getPrototypeOf(proto) === null;
  }

  /** Why the server would refuse `channel` and `data` as they are: [code, message], or null. */
  function publishProblem(channel, data) {
    if (typeof channel !== 'string' || !CHANNEL_RE.test(channel)) {
      return [ErrorCode.INVALID_CHANNEL, `invalid channel name ${JSON.stringify(channel)}` +
        ': use 1-128 characters from A-Z a-z 0-9 _ - . : / @ # $'];
    }
    if (!isPlainObject(data)) return [ErrorCode.INVALID_MESSAGE, 'data must be a plain object'];
    const reserved = RESERVED_KEYS.filter((key) => Object.prototype.hasOwnProperty.call(data, key));
    if (reserved.length) {
      return [ErrorCode.INVALID_MESSAGE, `data must not carry ${reserved.join(', ')}: the server sets ${
        reserved.length > 1 ? 'them' : 'it'}`];
    }
    try {
      if (typeof JSON.stringify(data) !== 'string') return [ErrorCode.INVALID_MESSAGE, 'data is not JSON-able'];
    } catch (err) {
      return [ErrorCode.INVALID_MESSAGE, `data is not JSON-able: ${err && err.message}`];
    }
    return null;
  }

  /** `Retry-After` in seconds (a number of seconds or an HTTP date), or null. */
  function retryAfterHeader(res, now) {
    const value = res.headers && typeof res.headers.get === 'function' ? res.headers.get('Retry-After') : null;
    if (value == null || value === '') return null;
    if (/^\s*\d+(\.\d+)?\s*$/.test(value)) return Number(value);
    const at = Date.parse(value);
    return isNaN(at) ? null : Math.max(0, Math.ceil((at - now) / 1000));
  }

  /** {channel, epoch, offset} from a `published` frame or a 200 answer; null when it is not one. */
  function published(channel, doc) {
    if (!doc || typeof doc.epoch !== 'string' || typeof doc.offset !== 'number') return null;
    return {channel: typeof doc.channel === 'string' ? doc.channel : channel, epoch: doc.epoch, offset: doc.offset};
  }

  /**
   * Client publishes (client.publish()): a `publish` command with a fresh
   * `id` on the client's open WebSocket, answered by `published` or
   * `publish_error` with that id (in any order); or a POST of
   * {channel, data} to the subscribe URL. Commands still waiting when their
   * socket goes reject with connection_lost: the server may or may not
   * have stored them, so they are not sent again by themselves. It needs of
   * the client its env, its opts (url, requestTimeout, withCredentials)
   * token(): the subscription token now, and client(): the server's id of
   * this client (sent as `client=` over HTTP: the sender the server stamps).
   */
  class Publishes {
    constructor(env, opts, token, client) {
      this._env = env;
      this._opts = opts;
      this._token = token; // () => the subscription token now
      this._client = client; // () => the server's id of this client, or null
      this._pending = new Map(); // id -> {id, channel, transport, timer, resolve, reject}
      this._lastId = 0;
    }

    /** Publish `data` to `channel`; over `t` when given (an open WebSocket). */
    publish(channel, data, t) {
      return new Promise((resolve, reject) => {
        const problem = publishProblem(channel, data);
        if (problem) {
          const named = typeof channel === 'string' ? channel : null;
          return reject(new PublishError(problem[0], problem[1], {channel: named}));
        }
        if (t) this._send(t, {channel, data, resolve, reject});
        else this._post(channel, data).then(resolve, reject);
      });
    }

    /** A `published` or `publish_error` frame on `t`: the command with its id settles. True if one waited. */
    answer(t, f) {
      const call = this._pending.get(f.id);
      if (!call || call.transport !== t) return false;
      this._drop(call);
      const channel = call.channel;
      if (f.type === FrameType.PUBLISHED) {
        const result = published(channel, f);
        if (result) call.resolve(result);
        else call.reject(new PublishError('bad_answer', 'unreadable published frame', {channel}));
        return true;
      }
      const code = typeof f.code === 'string' && f.code ? f.code : 'bad_answer';
      call.reject(new PublishError(code, typeof f.message === 'string' ? f.message : null, {channel,
        retry: typeof f.retry === 'boolean' ? f.retry : RETRY_CODES.indexOf(code) >= 0,
        retryAfter: f.retry_after}));
      return true;
    }

    /** The socket `t` is gone: its commands reject with connection_lost (maybe stored, maybe not). */
    lost(t) {
      for (const call of Array.from(this._pending.values())) {
        if (call.transport !== t) continue;
        this._drop(call);
        call.reject(new PublishError('connection_lost', 'the connection was lost before the server answered' +
          ' (the message may or may not have been published)', {channel: call.channel, retry: true}));
      }
    }

    _send(t, call) {
      call.id = ++this._lastId;
      call.transport = t;
      const ms = this._opts.requestTimeout;
      call.timer = this._env.setTimeout(() => {
        this._drop(call);
        call.reject(new PublishError('timeout', `no answer within ${ms} ms` +
          ' (the message may or may not have been published)', {channel: call.channel, retry: true}));
      }, ms);
      this._pending.set(call.id, call);
      try {
        t.send({type: 'publish', channel: call.channel, data: call.data, id: call.id});
      } catch (err) {
        this.lost(t);
      }
    }

    _drop(call) {
      this._env.clearTimeout(call.timer);
      this._pending.delete(call.id);
    }

    _post(channel, data) {
      const env = this._env;
      const opts = this._opts;
      const controller = env.AbortController ? new env.AbortController() : null;
      const ms = opts.requestTimeout;
      return new Promise((resolve, reject) => {
        const fail = (code, message, details) => reject(new PublishError(code, message,
          Object.assign({channel}, details)));
        const timer = env.setTimeout(() => {
          if (controller) controller.abort();
          fail('timeout', `no answer within ${ms} ms (the message may or may not have been published)`,
            {retry: true});
        }, ms);
        const broken = (err) => {
          env.clearTimeout(timer);
          fail('network_error', `${UNREACHABLE}${err && err.message ? `: ${err.message}` : ''}`, {retry: true});
        };
        let request;
        try {
          // The client's id, so the server stamps it as the sender and counts its rate.
          const id = this._client();
          const url = withToken(opts.url, this._token());
          const sep = url.indexOf('?') < 0 ? '?' : '&';
          request = Promise.resolve(env.fetch(id ? `${url}${sep}client=${encodeURIComponent(id)}` : url, {
            method: 'POST',
            headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({channel, data}),
            signal: controller ? controller.signal : undefined,
            credentials: opts.withCredentials ? 'include' : 'same-origin'
          }));
        } catch (err) {
          request = Promise.reject(err);
        }
        request.then((res) => res.text().then((text) => {
          env.clearTimeout(timer);
          const doc = parseJSON(text);
          const status = res.status;
          if (res.ok) {
            const result = published(channel, doc);
            if (result) return resolve(result);
            return fail('bad_answer', 'unreadable publish answer', {status});
          }
          // The server's refusal names its code; a gateway's page (502, say) does not.
          const refused = doc && typeof doc.error === 'string';
          const code = refused ? doc.error : 'http_error';
          const retryAfter = doc && typeof doc.retry_after === 'number' ? doc.retry_after
            : retryAfterHeader(res, env.now());
          fail(code, refused && typeof doc.message === 'string' ? doc.message : `HTTP ${status}`, {status, retryAfter,
            retry: refused ? RETRY_CODES.indexOf(code) >= 0 : status === 502 || status === 503 || status === 504});
        }, broken), broken);
      });
    }
  }

  // ---- The client ----

  /** The connection states: `client.state` is one of them. */
  const State = Object.freeze({
    DISCONNECTED: 'disconnected',
    CONNECTING: 'connecting',
    CONNECTED: 'connected',
    RECONNECTING: 'reconnecting'
  });

  /**
   * The moves between states, each with one `state` event ({from, to,
   * reason}), then the 0.1 event named after the new state ('connecting' for
   * reconnecting too):
   *   disconnected -> connecting   a channel is wanted (_start)
   *   connecting   -> connected    the server's first frame or answer (_frame)
   *   connected    -> reconnecting the connection was lost or its token lapsed, and no
   *                                new one connected within reconnectingDelay (_lose)
   *   reconnecting -> connected    a new connection's first frame or answer (_frame)
   *   any          -> disconnected no channel is left, close(), or the server's disconnect
   *                                without reconnect (_stop, _disconnect)
   * A failed attempt while connecting or reconnecting, and a replaced
   * connection while connected (a reconnect frame, new channels over HTTP, a
   * loss repaired within reconnectingDelay), stay where they are.
   */
  const TRANSITIONS = Object.freeze({
    [State.DISCONNECTED]: [State.CONNECTING],
    [State.CONNECTING]: [State.CONNECTED, State.DISCONNECTED],
    [State.CONNECTED]: [State.RECONNECTING, State.DISCONNECTED],
    [State.RECONNECTING]: [State.CONNECTED, State.DISCONNECTED]
  });

  /**
   * A connection to one torchannels URL carrying any number of channels.
   *
   *   const client = new TorChannels.Client({url: '/channels'});
   *   client.on('connected', (e) => console.log('via', e.transport));
   *   const token = client.subscribe('news', (msg) => { ... }, {onReset: clear});
   *   client.unsubscribe(token);
   *
   * It connects when the first channel is subscribed and disconnects when the
   * last is unsubscribed, or on close(). While connecting or connected it does
   * one thing at a time: runs a transport (_conn), waits for getToken()
   * (_authCall), or waits out a pause (the 'reconnect' timer), after which
   * _open() takes the next step.
   */
  class Client {
    constructor(options) {
      const o = this._opts = Object.assign({}, DEFAULTS, options);
      const env = this._env = environment(o);
      const wsUrl = o.websocketUrl || websocketUrl(o.url, env.location);
      if (o.token != null && typeof o.token !== 'string') throw new TypeError('torchannels: token must be a string');
      if (o.getToken != null && typeof o.getToken !== 'function') {
        throw new TypeError('torchannels: getToken must be a function');
      }
      if (o.longpollTimeout != null && !(o.longpollTimeout > 0)) {
        throw new TypeError('torchannels: longpollTimeout must be a positive number of seconds, or null');
      }
      if (o.ping != null && !(o.ping > 0)) throw new TypeError('torchannels: ping must be a positive number of seconds, or null');
      const wanted = o.transport ? [o.transport] : o.transports;
      for (const name of wanted) {
        if (TRANSPORTS.indexOf(name) < 0) throw new Error(`torchannels: unknown transport ${name}`);
      }
      const candidates = wanted.filter((name) => supported(name, env, wsUrl));
      if (!candidates.length) {
        throw new Error(`torchannels: none of the transports ${wanted.join(', ')} can run here`);
      }
      this._state = State.DISCONNECTED;
      this._fallback = new Fallback(candidates);
      this._conn = null; // the current transport and what the client watches on it
      this._subs = new Map(); // token -> {token, channel, callback, onReset, onError}, in subscribe order
      this._byChannel = new Map(); // channel -> Set of its subscriptions, in subscribe order
      this._lastToken = 0;
      this._denied = new Map(); // channel -> code: channels the server refused, not asked for again
      this._active = new Set(); // channels the current connection was asked for
      this._positions = new Map(); // channel -> 'epoch:offset', for active channels
      this._listeners = new Map(); // event -> listeners
      this._roster = new Roster(); // the member lists of the active presence channels
      this._clientId = null; // the server's id of this client (`connected`, poll answers): opaque
      this._timers = new Timers(env); // sync, reconnect, grace, first (connectTimeout), ping
      // The subscription token (`token` query parameter); named `auth` here,
      // apart from the tokens subscribe() returns.
      this._auth = o.token || null;
      this._authStale = !this._auth && !!o.getToken; // ask getToken() before connecting
      this._authCall = null; // the pending getToken() call
      this._authAttempt = 0; // token refreshes and forced reconnects since a connection last proved good
      this._onOnline = () => this._online();
      this._onOffline = () => this._offline();
      this._onVisible = () => {
        if (env.document && env.document.visibilityState === 'visible') this._online();
      };
      this._path = new PathAdapter(o, env.now); // the hold and keep-alive asked for
      this._reads = new PresenceReads(env, o, () => this._auth); // client.presence()
      this._publishes = new Publishes(env, o, () => this._auth, () => this._clientId); // client.publish()
      this._prober = new Prober(env, o, {
        live: () => this._state === State.CONNECTED && !!this._conn && !o.transport,
        better: () => this._fallback.better(),
        transport: (name, on) => this._probeTransport(name, on),
        won: (name) => {
          this._fallback.index = this._fallback.candidates.indexOf(name);
          this._restart();
        }
      });
      this._cause = null; // see _restart()
      this._lost = false; // a connection was lost since the last `connected`
      this._lossReason = null; // its explain(): {reason, detail}
      this._live = null; // the transport of the last `connected`
      this._host = {
        env,
        opts: o,
        url: o.url,
        wsUrl,
        hold: () => this._path.hold,
        ping: () => this._path.ping,
        token: () => this._auth,
        params: () => this._params(),
        frame: (t, frame) => this._frame(t, frame),
        end: (t, info) => this._fail(t, info),
        answered: (t) => this._answered(t),
        clientId: () => this._clientId,
        client: (id) => {
          this._clientId = id;
        }
      };
    }

    /** 'disconnected', 'connecting', 'connected' or 'reconnecting'. */
    get state() {
      return this._state;
    }

    /** The name of the transport in use or being tried; null when disconnected. */
    get transport() {
      return this._state === State.DISCONNECTED ? null : this._fallback.current;
    }

    /**
     * Call `callback(message)` for every message of `channel`: the channel's
     * state or retained history first (on a fresh join), then new messages.
     * options.onReset(channel, reason) runs when the client's position was
     * lost, before the replacement state; options.onError({channel, code,
     * message}) when the server refuses the channel. Returns a token for
     * unsubscribe().
     */
    subscribe(channel, callback, options) {
      checkChannel(channel);
      if (typeof callback !== 'function') throw new TypeError('torchannels: callback must be a function');
      const {onReset, onError} = options || {};
      const sub = {token: ++this._lastToken, channel, callback, onReset, onError};
      this._subs.set(sub.token, sub);
      const list = this._byChannel.get(channel);
      if (list) list.add(sub);
      else this._byChannel.set(channel, new Set([sub]));
      this._denied.delete(channel); // subscribing again asks the server again
      this._scheduleSync();
      return sub.token;
    }

    /** Stop the callback of `token`; true if it was subscribed. */
    unsubscribe(token) {
      const sub = this._subs.get(token);
      if (!sub) return false;
      this._subs.delete(token);
      const list = this._byChannel.get(sub.channel);
      list.delete(sub);
      if (!list.size) this._byChannel.delete(sub.channel);
      this._scheduleSync();
      return true;
    }

    /**
     * Use `token` (a string; null for none) from now on: every later request
     * or connection carries it. Live connections are kept. Channels the
     * server refused for a token reason (codes token_*) are asked for again.
     */
    setToken(token) {
      if (token != null && typeof token !== 'string') throw new TypeError('torchannels: token must be a string');
      const waiting = this._awaitingToken();
      this._authCall = null; // a pending getToken() answer comes too late now
      this._useToken(token);
      if (waiting) {
        // The client was waiting for a token: connect with this one now.
        this._cancel('reconnect');
        this._open();
      }
    }

    /**
     * The members of a presence channel as the client knows them now (sorted
     * by user id, a new array of {user, info, clients}); null when the
     * channel is not subscribed, has no presence, or its snapshot has not
     * come yet. The 'presence' event says each change.
     */
    members(channel) {
      return this._active.has(channel) ? this._roster.members(channel) : null;
    }

    /**
     * One page of `channel`'s members, read now: a Promise of {channel,
     * members, next, clients, users}. options.after: the `next` of the page
     * before; options.limit: members per page (the server's default 100, at
     * most 1000). On a WebSocket carrying the channel it is a `presence`
     * command; otherwise an HTTP GET of the subscribe URL with the same
     * token. Rejects with a PresenceError (code presence_disabled,
     * invalid_cursor, invalid_limit, forbidden, token_*, timeout, unreachable, ...).
     */
    presence(channel, options) {
      checkChannel(channel);
      const {after, limit} = options || {};
      if (after != null && typeof after !== 'string') {
        throw new TypeError('torchannels: after must be a string (a page\'s next)');
      }
      if (limit != null && !(Number.isInteger(limit) && limit > 0)) {
        throw new TypeError('torchannels: limit must be a positive integer');
      }
      const query = {};
      if (after != null) query.after = after;
      if (limit != null) query.limit = limit;
      const t = this._conn && this._conn.transport;
      const socket = t && t.inBand && t.ready && this._active.has(channel) ? t : null;
      return this._reads.read(channel, query, socket);
    }

    /**
     * Publish `data` (a plain object) to `channel`: a Promise of {channel,
     * epoch, offset}, the position the server stored it at. The server
     * decides who may publish (the channel's `publish` option) and stamps
     * the message with `sender: {user, client}`. Over the client's open
     * WebSocket (when it carries the current token) it is a `publish`
     * command; otherwise (HTTP transports, not connected) a POST of
     * {channel, data} to the subscribe URL with the same token. Rejects
     * with a PublishError: the server's code (publish_forbidden,
     * rate_limited, ...), invalid_channel or invalid_message without any
     * request, or connection_lost, timeout, network_error, http_error,
     * bad_answer. `retry` says whether trying again after a pause may work.
     *
     *   client.publish('room:1', {text: 'hi'}).then(({offset}) => ..., (err) => {
     *     if (err.retry) setTimeout(again, (err.retryAfter || 1) * 1000);
     *   });
     */
    publish(channel, data) {
      const t = this._conn && this._conn.transport;
      // A socket keeps the token of its URL: under a newer token, publish over HTTP with it.
      const socket = t && t.inBand && t.ready && t.auth === this._auth ? t : null;
      return this._publishes.publish(channel, data, socket);
    }

    /**
     * Listen to 'state', 'transport_failed', 'error', 'presence', or the 0.1
     * events 'connecting', 'connected', 'disconnected'.
     */
    on(event, fn) {
      const list = this._listeners.get(event);
      if (list) list.push(fn);
      else this._listeners.set(event, [fn]);
      return this;
    }

    /** Remove a listener (or all listeners of `event` when `fn` is omitted). */
    off(event, fn) {
      const list = this._listeners.get(event) || [];
      this._listeners.set(event, fn ? list.filter((f) => f !== fn) : []);
      return this;
    }

    /** Drop every subscription and disconnect. The client can be used again. */
    close() {
      this._subs.clear();
      this._byChannel.clear();
      this._denied.clear();
      this._stop('closed');
    }

    // -- the state machine --

    /**
     * Move to `state` and tell the listeners: the `state` event ({from, to,
     * reason: plain words, detail: technical words or null, transport}), then
     * the 0.1 event of the new state ({transport, reason: legacy}). Nothing
     * when already there.
     */
    _moveTo(state, transport, reason, legacy, detail) {
      const from = this._state;
      if (from === state) return;
      if (TRANSITIONS[from].indexOf(state) < 0) throw new Error(`torchannels: no move from ${from} to ${state}`);
      this._state = state;
      this._emit('state', {from, to: state, reason, detail: detail || null, transport});
      if (this._state !== state) return; // a state listener moved on (close())
      const payload = {transport};
      if (legacy !== undefined) payload.reason = legacy;
      this._emit(state === State.RECONNECTING ? State.CONNECTING : state, payload);
    }

    /** disconnected -> connecting, from the best transport. */
    _start() {
      this._listen('addEventListener');
      this._fallback.restart();
      this._lost = false;
      this._live = null;
      this._prober.reset();
      this._moveTo(State.CONNECTING, this._fallback.current, 'starting', undefined);
      if (this._state === State.CONNECTING) this._open(); // unless a listener called close()
    }

    /** any -> disconnected: every step in progress is cancelled. */
    _stop(reason, detail) {
      const name = this.transport;
      this._teardown();
      this._cancel('reconnect');
      this._cancel('sync');
      this._cancel('grace');
      this._prober.reset();
      this._authCall = null;
      this._setActive([]);
      this._listen('removeEventListener');
      this._moveTo(State.DISCONNECTED, name, reason, reason, detail);
    }

    /** Start or stop listening to `online`, `offline` (window) and `visibilitychange` (document). */
    _listen(method) {
      const {window: win, document: doc} = this._env;
      if (win && win[method]) {
        win[method]('online', this._onOnline);
        win[method]('offline', this._onOffline);
      }
      if (doc && doc[method]) doc[method]('visibilitychange', this._onVisible);
    }

    /**
     * The connection was lost (`why`: explain()'s {reason, detail} of what
     * ended it; the retries' failures go to `error` events). While connected,
     * the state says so only if no new connection is up within
     * reconnectingDelay: a quick repair never shows.
     */
    _lose(why) {
      if (this._state !== State.CONNECTED || this._timers.pending('grace')) return; // the first loss names the reason
      this._lost = true;
      this._lossReason = why;
      this._after('grace', this._opts.reconnectingDelay, () => {
        const {reason, detail} = this._lossReason;
        this._moveTo(State.RECONNECTING, this._fallback.current, reason, reason, detail);
      });
    }

    /** The next step while connecting or connected: a fresh token first if one is needed, then a transport. */
    _open() {
      if (this._conn || this._authCall) return; // one step at a time
      if (!this._desired().length) return this._stop('idle');
      if (this._authStale && this._opts.getToken) return this._fetchToken();
      const name = this._fallback.current;
      const t = new TRANSPORT_CLASSES[name](this._host, name);
      // progress: a channel frame came on this connection; serverPing: the
      // interval its `connected` frame stated (s); pingMs: the watchdog's
      // limit; connectedAt, heardAt: when its `connected` frame and its latest
      // frame came (ms, env.now()); cause: why the connection before it ended
      // (explain()), when that says more than this one's failure would.
      this._conn = {transport: t, progress: false, serverPing: 0, pingMs: 0, connectedAt: null, heardAt: null,
        cause: this._cause};
      if (t.streaming) {
        // A streaming response starts with `connected` at once. When it does
        // not come, something between us buffers the stream (for WebSocket,
        // the upgrade hangs): step down.
        const ms = this._opts.connectTimeout;
        this._after('first', ms, () => {
          this._fail(t, {reason: 'connect_timeout', retry: name === 'websocket' ? Retry.NEXT : Retry.LONGPOLL,
            detail: `no connected frame within ${ms} ms (a buffering proxy?)`});
        });
      }
      try {
        t.open();
      } catch (err) {
        this._fail(t, {reason: 'unsupported', retry: Retry.NEXT, error: err});
      }
    }

    /**
     * Replace the connection at once, keeping the state unless the new one
     * fails; `cause` (explain()) names that failure, if it comes before `connected`.
     */
    _restart(cause) {
      this._teardown();
      this._cause = cause || null;
      this._open();
      this._cause = null;
    }

    _teardown() {
      const conn = this._conn;
      this._conn = null;
      this._cancel('first');
      this._cancel('ping');
      this._prober.stop();
      if (conn) {
        conn.transport.close();
        this._reads.lost(conn.transport);
        this._publishes.lost(conn.transport);
      }
    }

    _current(t) {
      return this._conn !== null && this._conn.transport === t;
    }

    /** The current transport ended: apply its retry policy (connected -> reconnecting, after a grace). */
    _fail(t, info) {
      if (!this._current(t)) return;
      if (info.disconnect) return this._disconnect(info.disconnect, info.detail);
      const conn = this._conn;
      const o = this._opts;
      let retry = info.retry || Retry.AUTO;
      if (retry.renewToken && this._tokenExpired(t)) return;
      if (t.hold && this._path.holdTooLong(info)) {
        // Something in the path cuts requests held this long: no error, poll again at once.
        this._teardown();
        return this._open();
      }
      const stable = conn.connectedAt != null && this._env.now() - conn.connectedAt >= STABLE_MS;
      if (t.streaming) this._path.streamEnded(conn, info);
      // "Reconnect at once" (close 1001, 4001) from a connection that served
      // no channel frame would only repeat itself (a catch-up the server
      // cannot send): pause first, as for a reconnect frame.
      if (retry.now && !conn.progress) retry = Retry.SAME;
      const why = explain(info);
      this._teardown();
      // The server said why it ended the connection this one replaces (it is
      // shutting down): that is still the reason while this one cannot connect.
      const cause = conn.connectedAt == null && conn.cause;
      this._lose(cause ? {reason: cause.reason, detail: `${cause.detail}, then ${why.detail}`} : why);
      if (!retry.now) {
        this._emit('error', {type: 'transport', transport: t.name, reason: info.reason,
          code: info.code, status: info.status, message: info.message || why.detail, error: info.error});
        if (this._state === State.DISCONNECTED || this._conn) return; // a listener closed or reconnected
      }
      const index = this._fallback.index;
      const pause = this._fallback.advance(retry);
      if (this._fallback.index !== index) {
        this._emit('transport_failed', {transport: t.name, next: this._fallback.current,
          status: info.status == null ? null : info.status,
          code: info.code == null ? null : info.code, reason: why.reason, detail: why.detail});
        if (this._state === State.DISCONNECTED || this._conn) return;
      }
      let delay = 0;
      if (pause) {
        // The first retry after a connection that lived: within
        // minReconnectDelay (full jitter). Then the backoff.
        delay = stable ? Math.floor(this._env.random() * o.minReconnectDelay)
          : backoff(this._fallback.failures++, o.minReconnectDelay, o.maxReconnectDelay, this._env.random);
      }
      this._after('reconnect', delay, () => this._open());
    }

    _online() {
      // Back online (or the page visible again): retry now instead of at the
      // end of a backoff pause; after a step-down, try the better transports.
      if (this._timers.pending('reconnect')) {
        this._cancel('reconnect');
        this._fallback.reset();
        this._open();
      } else {
        this._prober.poke();
      }
    }

    _offline() {
      // The browser says the network is gone: a socket may take a ping
      // interval to notice, so give the connection up now. The retries fail
      // fast meanwhile; `online` retries at once.
      const conn = this._conn;
      if (conn) this._fail(conn.transport, {reason: 'offline', detail: "the browser's offline event"});
    }

    // -- stepping back up --

    /**
     * A step-up probe of `name`: it only listens for `connected`. A WebSocket
     * subscribes to nothing; sse and stream name the channels (the server
     * needs some) from the current positions, and what they deliver is ignored.
     */
    _probeTransport(name, on) {
      const host = Object.assign({}, this._host, {
        params: () => {
          const channels = name === 'websocket' ? [] : Array.from(this._active);
          return {channels, cursor: this._cursor(channels), auth: this._auth};
        },
        frame: (t, f) => {
          if (f && f.type === FrameType.CONNECTED) on.connected(t);
        },
        end: (t) => on.ended(t),
        answered: () => {}
      });
      return new TRANSPORT_CLASSES[name](host, name);
    }

    // -- channels --

    /** The channels wanted: every subscribed one but the refused, in first-subscribe order. */
    _desired() {
      const channels = new Set();
      for (const s of this._subs.values()) {
        if (!this._denied.has(s.channel)) channels.add(s.channel);
      }
      return Array.from(channels);
    }

    _scheduleSync() {
      // Deferred, so that subscribing to several channels in a row (as a
      // page does when it loads) makes one connection or one change.
      if (!this._timers.pending('sync')) this._after('sync', 0, () => this._sync());
    }

    _sync() {
      const want = this._desired();
      if (!want.length) return this._stop('idle');
      if (this._state === State.DISCONNECTED) return this._start();
      const t = this._conn && this._conn.transport;
      if (!t) return; // waiting to reconnect: the next request takes the new channels
      const added = want.filter((c) => !this._active.has(c));
      const removed = Array.from(this._active).filter((c) => want.indexOf(c) < 0);
      if (!added.length && !removed.length) return;
      // A socket keeps the token of its URL: new channels under another token need a new socket.
      if (t.inBand && (!added.length || t.auth === this._auth)) {
        this._setActive(want);
        t.unsubscribe(removed);
        t.subscribe(added, this._cursor(added));
      } else {
        // The HTTP transports name their channels in the request: ask again,
        // from the current positions, so no channel loses or repeats a message.
        this._restart();
      }
    }

    /** What a request asks for now; also the moment positions of dropped channels go. */
    _params() {
      const channels = this._desired();
      this._setActive(channels);
      return {channels, cursor: this._cursor(channels), auth: this._auth};
    }

    _setActive(channels) {
      const active = this._active = new Set(channels);
      for (const c of Array.from(this._positions.keys())) {
        if (!active.has(c)) this._positions.delete(c);
      }
      this._roster.keep(active);
    }

    _cursor(channels) {
      return channels.filter((c) => this._positions.has(c))
        .map((c) => `${c}=${this._positions.get(c)}`).join(',');
    }

    // -- tokens --

    /** Connecting without a usable token: getToken() is pending, or the pause before it is asked again. */
    _awaitingToken() {
      return this._authStale && this._state !== State.DISCONNECTED;
    }

    /** Call getToken() and connect with what it gives; retried with backoff when it fails. */
    _fetchToken() {
      const call = this._authCall = {};
      const settle = (ok, value) => {
        if (this._authCall !== call) return; // stopped, or setToken() came first
        this._authCall = null;
        if (ok && value != null && typeof value !== 'string') {
          ok = false;
          value = new TypeError('torchannels: getToken() must give a token string (or null for none)');
        }
        if (!ok) {
          this._emit('error', {type: 'token', transport: this.transport, reason: 'get_token',
            message: value && value.message, error: value});
          if (!this._awaitingToken()) return; // a listener called close() or setToken()
          const o = this._opts;
          const delay = backoff(this._authAttempt++, o.minReconnectDelay, o.maxReconnectDelay, this._env.random);
          return this._after('reconnect', delay, () => this._open());
        }
        this._useToken(value);
        this._open();
      };
      let result;
      try {
        result = this._opts.getToken();
      } catch (err) {
        return settle(false, err);
      }
      Promise.resolve(result).then((v) => settle(true, v), (err) => settle(false, err));
    }

    _useToken(token) {
      this._auth = token || null;
      this._authStale = false;
      // Refusals for a token reason may not hold for this token: ask again.
      let again = false;
      for (const [channel, code] of Array.from(this._denied)) {
        if (/^token_/.test(code)) {
          this._denied.delete(channel);
          again = true;
        }
      }
      if (again) this._scheduleSync();
    }

    /**
     * The server says the token behind `t` lapsed (a reconnect frame, close
     * 4002, or an error frame token_expired; `why`: explain() of it, when it
     * was revoked instead). With a newer token than t's
     * (setToken) or with getToken, replace the connection, keeping every
     * position, and return true (-> connecting); otherwise false (the caller
     * goes on as without tokens: the server will refuse the channels that
     * need one).
     */
    _tokenExpired(t, why) {
      const newer = t.auth !== this._auth;
      if (!newer && !this._opts.getToken) return false;
      let delay = 0;
      if (!newer) {
        const o = this._opts;
        this._authStale = true;
        // A fresh token that lapses again at once: pause before the next one.
        if (this._authAttempt > 0) {
          delay = backoff(this._authAttempt - 1, o.minReconnectDelay, o.maxReconnectDelay, this._env.random);
        }
        this._authAttempt++;
      }
      this._teardown();
      this._lose(why || explain({reason: ReconnectReason.TOKEN_EXPIRED, detail: 'the server says the token lapsed'}));
      this._after('reconnect', delay, () => this._open());
      return true;
    }

    /**
     * An error frame refused an active channel of `t` with `code`: true when
     * a fresh token may cure it and the connection is being replaced for
     * one (_tokenExpired), false to refuse the channel. token_expired
     * renews as often as it comes (with backoff); token_revoked once: a
     * token fetched since the last one proved good (a ping, a poll answer)
     * and revoked too is not renewed again, as forbidden.
     */
    _renewFor(t, code) {
      if (code === ErrorCode.TOKEN_EXPIRED) return this._tokenExpired(t);
      if (code !== ErrorCode.TOKEN_REVOKED) return false;
      if (t.auth === this._auth && this._authAttempt > 0) return false;
      return this._tokenExpired(t, explain({reason: ErrorCode.TOKEN_REVOKED,
        detail: 'the server says the token was revoked'}));
    }

    /**
     * The server ended the connection on purpose: a `disconnect` frame
     * {reason, reconnect}, or WebSocket close 4003 / 4004 (`detail`: the
     * technical words; null for the frame's). The client id goes either
     * way: the server answers a poll naming an id issued before the
     * disconnect with another one. reconnect false: every subscription is
     * dropped, as by close(), nothing is retried, and the state becomes
     * `disconnected` with the frame's reason. reconnect true: a new
     * connection at once, from the positions, with a fresh token when
     * getToken() can give one.
     */
    _disconnect(end, detail) {
      const o = this._opts;
      const reason = typeof end.reason === 'string' && end.reason ? end.reason
        : DisconnectReason.DISCONNECTED_BY_SERVER;
      const reconnect = end.reconnect === true;
      detail = detail || `disconnect frame (${reason}${reconnect ? ', reconnect' : ''})`;
      this._clientId = null;
      if (!reconnect) {
        this._subs.clear();
        this._byChannel.clear();
        this._denied.clear();
        // A revoked token is not sent again when getToken() can replace it: the next start asks for one.
        if (reason === DisconnectReason.TOKEN_REVOKED && o.getToken) this._authStale = true;
        return this._stop(reason, detail);
      }
      // Ended again before a connection proved good (a ping, a poll answer): a pause, not a loop.
      const delay = this._authAttempt > 0
        ? backoff(this._authAttempt - 1, o.minReconnectDelay, o.maxReconnectDelay, this._env.random) : 0;
      this._authAttempt++;
      if (o.getToken) this._authStale = true;
      this._teardown();
      this._lose({reason: PLAIN[reason] || PLAIN[DisconnectReason.DISCONNECTED_BY_SERVER], detail});
      this._after('reconnect', delay, () => this._open());
    }

    /** A poll answer without a lapsed token: the token works. */
    _answered(t) {
      if (!this._current(t)) return;
      this._authAttempt = 0;
      this._refreshPresence();
    }

    /**
     * Poll and long-poll get a snapshot only with a fresh join, presence
     * frames only while a long-poll is held, and poll none: after each
     * answer, the lists that are due (older than POLL_PRESENCE_MS, or all of
     * them after a reconnect) are read again over HTTP and replace the lists.
     */
    _refreshPresence() {
      const now = this._env.now();
      for (const [channel, seq] of this._roster.due(now, POLL_PRESENCE_MS)) {
        this._reads.read(channel, {}, null).then((page) => {
          if (this._active.has(channel)) this._presence(this._roster.refresh(channel, seq, page, this._env.now()));
        }, () => {}); // failed: due again in POLL_PRESENCE_MS
      }
    }

    // -- frames --

    _frame(t, f) {
      if (!this._current(t) || !f || typeof f !== 'object') return;
      const conn = this._conn;
      conn.heardAt = this._env.now();
      this._rearm();
      const channel = f.channel;
      switch (f.type) {
        case FrameType.CONNECTED: {
          this._cancel('first');
          this._cancel('grace');
          this._fallback.connected(t.name);
          conn.connectedAt = conn.heardAt;
          conn.serverPing = f.ping > 0 ? f.ping : 0;
          if (typeof f.client === 'string') this._clientId = f.client;
          // A new polling connection: no snapshot comes for the channels it resumes.
          if (t instanceof PollTransport) this._roster.stale();
          if (conn.serverPing && t.seesPings) this._watchPings();
          // The 0.1 `connected` event also marks a loss repaired within the
          // grace, and a switch of transport, which change no state.
          const again = this._state === State.CONNECTED && (this._lost || this._live !== t.name);
          this._lost = false;
          this._live = t.name;
          if (again) this._emit('connected', {transport: t.name});
          else this._moveTo(State.CONNECTED, t.name, `connected over ${t.name}`, undefined);
          if (this._conn === conn) this._prober.plan();
          break;
        }
        case FrameType.PING:
          if (!conn.pingMs && conn.serverPing) this._watchPings();
          this._authAttempt = 0; // the connection lived a ping interval: its token works
          break;
        case FrameType.MESSAGE: {
          const data = f.data;
          if (!data || !this._active.has(data.channel)) return;
          conn.progress = true;
          this._positions.set(data.channel, `${data.epoch}:${data.offset}`);
          this._deliver(data.channel, data);
          break;
        }
        case FrameType.SUBSCRIBED:
          if (!this._active.has(channel)) return;
          conn.progress = true;
          this._positions.set(channel, `${f.epoch}:${f.offset}`);
          for (const m of f.state || []) this._deliver(channel, m);
          // Every snapshot replaces the list (a reconnect brings a new one); none: no presence.
          if (this._active.has(channel)) this._presence(this._roster.snapshot(channel, f.presence, this._env.now()));
          break;
        case FrameType.PRESENCE:
          if (this._active.has(channel)) this._presence(this._roster.apply(channel, f));
          break;
        case FrameType.PRESENCE_PAGE:
          this._reads.page(t, f);
          break;
        case FrameType.PUBLISHED:
        case FrameType.PUBLISH_ERROR:
          this._publishes.answer(t, f);
          break;
        case FrameType.RESET:
          if (!this._active.has(channel)) return;
          this._positions.delete(channel);
          this._resetChannel(channel, f.reason);
          break;
        case FrameType.ERROR:
          if (this._reads.error(t, f)) break; // a presence read refused, not the channel
          if (!channel) {
            this._emit('error', {type: 'server', transport: t.name, code: f.code, message: f.message});
          } else if (!(this._active.has(channel) && this._renewFor(t, f.code))) {
            this._refuse(channel, f);
          }
          break;
        case FrameType.RECONNECT: {
          if (f.reason === ReconnectReason.TOKEN_EXPIRED && this._tokenExpired(t)) break;
          // A planned end (e.g. the stream's byte limit): resume at once. But
          // a server that ends connections before serving anything (shutting
          // down, an expired token) gets a backoff pause, not a tight loop.
          const end = {reason: f.reason, detail: `reconnect frame (${f.reason})`};
          if (!conn.progress) this._fail(t, end);
          else this._restart(f.reason === ReconnectReason.SHUTDOWN ? explain(end) : null);
          break;
        }
        case FrameType.DISCONNECT:
          this._disconnect(f, null);
          break;
        default: // unknown frame types are ignored (docs/protocol.md)
      }
    }

    _watchPings() {
      const conn = this._conn;
      conn.pingMs = conn.serverPing * 1000 + this._opts.maxPingDelay;
      this._rearm();
    }

    _rearm() {
      const conn = this._conn;
      if (!conn || !conn.pingMs) return;
      const t = conn.transport;
      this._after('ping', conn.pingMs, () => this._fail(t, {reason: 'ping_timeout',
        detail: `no ping from the server within ${conn.pingMs} ms`}));
    }

    /**
     * Call fn(subscription) for each subscription of `channel`, in subscribe
     * order, skipping any that an earlier call unsubscribed.
     */
    _each(channel, fn) {
      const list = this._byChannel.get(channel);
      if (!list) return;
      for (const sub of Array.from(list)) {
        if (this._subs.get(sub.token) === sub) fn(sub);
      }
    }

    _deliver(channel, message) {
      this._each(channel, (s) => this._call(s.callback, message));
    }

    _presence(event) {
      if (event) this._emit('presence', event);
    }

    _resetChannel(channel, reason) {
      this._each(channel, (s) => s.onReset && this._call(s.onReset, channel, reason));
      if (this._opts.onReset) this._call(this._opts.onReset, channel, reason);
    }

    /**
     * The server will not serve `channel` (forbidden, or another code): the
     * client stops asking for it until subscribe() names it again. Retrying
     * by itself would only repeat the refusal (on long-poll, in a tight loop).
     */
    _refuse(channel, f) {
      if (!this._active.has(channel)) return;
      this._positions.delete(channel);
      this._active.delete(channel);
      this._roster.keep(this._active);
      this._denied.set(channel, f.code);
      const error = {channel, code: f.code, message: f.message};
      this._each(channel, (s) => s.onError && this._call(s.onError, error));
      this._emit('error', {type: 'channel', transport: this.transport, channel,
        code: f.code, message: f.message});
      this._scheduleSync(); // disconnect if it was the last channel
    }

    // -- events, timers --

    _emit(event, payload) {
      const list = this._listeners.get(event) || [];
      if (event === 'error' && !list.length && payload.type === 'callback' && root.console) {
        root.console.error('torchannels: a callback failed', payload.error);
      }
      for (const fn of list.slice()) {
        try {
          fn.call(this, payload);
        } catch (err) {
          if (event !== 'error') this._emit('error', {type: 'callback', error: err});
          else if (root.console) root.console.error('torchannels: an error listener failed', err);
        }
      }
    }

    _call(fn, ...args) {
      // A failing application callback must not stop the frames after it.
      try {
        fn(...args);
      } catch (err) {
        this._emit('error', {type: 'callback', error: err});
      }
    }

    _after(name, ms, fn) {
      this._timers.after(name, ms, fn);
    }

    _cancel(name) {
      this._timers.cancel(name);
    }
  }

  /** Adds the seed's `$.torChannels(options)` to a jQuery object. */
  function registerJQuery($) {
    $.torChannels = (options) => new Client(options);
    return $;
  }

  const api = {
    version: VERSION,
    Client,
    FrameType,
    ResetReason,
    ErrorCode,
    ReconnectReason,
    DisconnectReason,
    CloseCode,
    TRANSPORTS,
    PresenceError,
    PublishError,
    backoff,
    registerJQuery
  };
  // The parts of the client, for its unit tests (tests/js/): not API. A
  // symbol key, so that no enumeration of the API (nor the .mjs) sees it.
  Object.defineProperty(api, Symbol.for('torchannels.internals'), {
    value: Object.freeze({Fallback, PathAdapter, Prober, Roster, Timers, LOST})
  });
  return api;
});
