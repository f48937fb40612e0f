/*!
 * torchannel.js: the browser client of torchannels (real-time channels for Tornado).
 *
 * No dependencies and no build step. Load it as a plain <script> (it defines
 * the global `TorChannels`, and `$.torChannels` when jQuery is loaded first),
 * require() it under CommonJS, or import torchannel.mjs.
 *
 *   var subscriptions = $.torChannels({url: '/channels'});
 *   var token = subscriptions.subscribe('news', function (msg) { ... });
 *   subscriptions.unsubscribe(token);
 *
 * The wire protocol is docs/protocol.md; the API is docs/client.md.
 * Licensed under the Apache License 2.0.
 */
(function (root, factory) {
  'use strict';
  var api = factory(root);
  if (typeof module === 'object' && module && module.exports) {
    module.exports = api;
  } else {
    root.TorChannels = api;
  }
  if (root.jQuery) api.registerJQuery(root.jQuery);
})(typeof globalThis !== 'undefined' ? globalThis : typeof self !== 'undefined' ? self : this, function (root) {
  'use strict';

  var VERSION = '0.1.0';

  // ---- Codes: mirrored from the server (errors.py, frames.py, docs/protocol.md) ----

  /** The `type` of every frame the server sends. */
  var FrameType = Object.freeze({
    MESSAGE: 'message',
    SUBSCRIBED: 'subscribed',
    UNSUBSCRIBED: 'unsubscribed', // WebSocket only
    RESET: 'reset',
    ERROR: 'error',
    CONNECTED: 'connected',
    PING: 'ping',
    RECONNECT: 'reconnect'
  });

  /** Why a `reset` frame says a position cannot be served. */
  var ResetReason = Object.freeze({
    EPOCH_CHANGED: 'epoch_changed',
    HISTORY_TRIMMED: 'history_trimmed',
    POSITION_AHEAD: 'position_ahead'
  });

  /** `code` of error frames (a channel refused) and of HTTP 400 answers (a bad request). */
  var ErrorCode = Object.freeze({
    // error frames
    FORBIDDEN: 'forbidden',
    TOKEN_REQUIRED: 'token_required',
    TOKEN_EXPIRED: 'token_expired',
    TOKEN_MALFORMED: 'token_malformed',
    TOKEN_BAD_SIGNATURE: 'token_bad_signature',
    TOKEN_NOT_YET_VALID: 'token_not_yet_valid',
    TOKEN_BAD_ALGORITHM: 'token_bad_algorithm',
    TOKEN_UNSUPPORTED: 'token_unsupported', // the hub was started without a token secret
    // HTTP 400 answers
    UNKNOWN_TRANSPORT: 'unknown_transport',
    INVALID_CHANNEL: 'invalid_channel',
    MALFORMED_CURSOR: 'malformed_cursor',
    TOO_MANY_CHANNELS: 'too_many_channels',
    NO_CHANNELS: 'no_channels',
    REQUEST_TOO_LARGE: 'request_too_large',
    BAD_PARAMETER: 'bad_parameter',
    BAD_MESSAGE: 'bad_message', // WebSocket: a client command the server cannot read
    // HTTP 503
    SHUTTING_DOWN: 'shutting_down'
  });

  /** `reason` of `reconnect` frames. */
  var ReconnectReason = Object.freeze({
    BYTE_LIMIT: 'byte_limit',
    SLOW_CONSUMER: 'slow_consumer',
    SHUTDOWN: 'shutdown',
    TOKEN_EXPIRED: 'token_expired'
  });

  /** WebSocket close codes the server uses. */
  var CloseCode = Object.freeze({
    NORMAL: 1000,
    GOING_AWAY: 1001, // server going away: reconnect at once
    MESSAGE_TOO_BIG: 1009, // a client command was too big
    SLOW_CONSUMER: 4001, // the client fell behind: reconnect at once with positions
    EXPIRED: 4002 // the authorization behind the socket lapsed
  });

  /** Every transport, in the order the client tries them. */
  var TRANSPORTS = Object.freeze(['websocket', 'sse', 'stream', 'longpoll', 'poll']);

  /** The SSE event name of `error` frames (EventSource has an `error` event of its own). */
  var SSE_CHANNEL_ERROR = 'channel_error';

  var CHANNEL_RE = /^[A-Za-z0-9_\-.:/@#$]{1,128}$/;

  var DEFAULTS = {
    url: '/channels',
    websocketUrl: null,
    transports: TRANSPORTS,
    transport: null,
    onReset: null,
    minReconnectDelay: 500,
    maxReconnectDelay: 20000,
    connectTimeout: 5000, // ms to wait for `connected` on a streaming transport
    maxPingDelay: 10000, // ms a ping may be late before the connection counts as dead
    pollInterval: 2000,
    longpollTimeout: 25, // s, sent as `timeout`; the server caps it to its own maximum
    requestTimeout: 10000, // ms a poll answer may take beyond the long-poll hold
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
    var step = Math.min(attempt, 31);
    var jitter = Math.floor((random || Math.random)() * Math.min(max, min * Math.pow(2, step)));
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
    var q = url.indexOf('?');
    var query = q < 0 ? [] : url.slice(q + 1).split('&').filter(function (p) {
      return p && p.split('=')[0] !== 'token';
    });
    query.push('token=' + encodeURIComponent(token));
    return (q < 0 ? url : url.slice(0, q)) + '?' + query.join('&');
  }

  /** The subscribe request of the HTTP transports (docs/protocol.md). */
  function httpUrl(base, transport, params, extra) {
    base = withToken(base, params.auth);
    var query = ['transport=' + transport];
    params.channels.forEach(function (c) { query.push('channel=' + encodeURIComponent(c)); });
    if (params.cursor) query.push('cursor=' + encodeURIComponent(params.cursor));
    if (extra) query.push(extra);
    return base + (base.indexOf('?') < 0 ? '?' : '&') + query.join('&');
  }

  /** The default WebSocket URL: the HTTP url + "/ws", as ws:/wss:. */
  function websocketUrl(url, location) {
    var q = url.indexOf('?');
    var path = (q < 0 ? url : url.slice(0, q)).replace(/\/+$/, '') + '/ws';
    var full = path + (q < 0 ? '' : url.slice(q));
    if (/^wss?:/i.test(full)) return full;
    if (/^https?:/i.test(full)) return full.replace(/^http/i, 'ws');
    if (!location || !location.href || typeof URL !== 'function') return null;
    var abs = new URL(full, location.href);
    abs.protocol = abs.protocol === 'https:' ? 'wss:' : 'ws:';
    return abs.href;
  }

  /** Every dependency on the environment, injectable through the options. */
  function environment(o) {
    function call(fn) {
      // Browsers refuse `window.fetch` & co. called on another object.
      return fn && function () { return fn.apply(undefined, arguments); };
    }
    var win = o.window !== undefined ? o.window : (typeof root.addEventListener === 'function' ? root : null);
    return {
      fetch: call(o.fetch || root.fetch),
      EventSource: o.EventSource || root.EventSource,
      WebSocket: o.WebSocket || root.WebSocket,
      setTimeout: call(o.setTimeout || root.setTimeout),
      clearTimeout: call(o.clearTimeout || root.clearTimeout),
      random: o.random || Math.random,
      window: win,
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

  /** A failed HTTP answer. The server's own refusals carry {"error": code, "message": text}. */
  function httpFailure(status, text) {
    var body = parseJSON(text);
    if (body && typeof body.error === 'string') {
      return {
        reason: 'refused',
        code: body.error,
        message: body.message,
        // A server without this transport: try the next one. Otherwise the
        // server spoke, and another transport would hear the same.
        retry: body.error === ErrorCode.UNKNOWN_TRANSPORT ? 'next' : 'backoff'
      };
    }
    return {reason: 'http_error', code: status, message: 'HTTP ' + status};
  }

  // ---- Transports ----
  //
  // One object per transport, all with the same small interface:
  //   new T(client, name); t.open(); t.close(); t.name;
  //   t.streaming: the server opens with a `connected` frame (watched by connectTimeout);
  //   t.seesPings: the client sees the server's pings (watched by maxPingDelay);
  //   t.inBand: subscribe(channels, cursor)/unsubscribe(channels) on the open connection;
  //   t.auth: the subscription token its current request or socket carries.
  // A transport asks client._params() for {channels, cursor} whenever it makes
  // a request, hands every frame to client._frame(t, frame) and reports its
  // end once with client._fail(t, info); the client ignores all of it from a
  // transport that is no longer current. info.retry: 'now' (reconnect at once),
  // 'next' (this transport cannot work here), 'longpoll' (a buffering proxy),
  // 'backoff' (retry this transport later), or none (decide by history).

  function fetchInit(client, controller) {
    return {
      signal: controller ? controller.signal : undefined,
      credentials: client._opts.withCredentials ? 'include' : 'same-origin'
    };
  }

  /** poll and longpoll: one JSON document per request, {"cursor", "frames"}. */
  class PollTransport {
    constructor(client, name) {
      this.client = client;
      this.name = name;
      this.hold = name === 'longpoll';
      this.closed = false;
      this._answered = false;
      this._timer = null;
      this._abort = null;
    }

    open() {
      var self = this, c = this.client, env = c._env, opts = c._opts;
      var controller = env.AbortController ? new env.AbortController() : null;
      // The server holds min(timeout, its longpoll_timeout), so the hold
      // never outlasts the deadline below.
      var extra = this.hold && opts.longpollTimeout ? 'timeout=' + opts.longpollTimeout : null;
      var limit = opts.requestTimeout + (this.hold ? (opts.longpollTimeout || 25) * 1000 : 0);
      var params = c._params();
      this.auth = params.auth;
      this._abort = controller;
      this._timer = env.setTimeout(function () { self._end({reason: 'timeout'}); }, limit);
      env.fetch(httpUrl(c._url, this.name, params, extra), fetchInit(c, controller))
        .then(function (res) {
          return res.text().then(function (text) { self._answer(res, text); });
        })
        .catch(function (err) { self._end({reason: 'network', error: err}); });
    }

    _answer(res, text) {
      if (this.closed) return;
      var self = this, c = this.client;
      c._env.clearTimeout(this._timer);
      if (!res.ok) return this._end(httpFailure(res.status, text));
      var doc = parseJSON(text);
      if (!doc || !Array.isArray(doc.frames)) return this._end({reason: 'bad_answer'});
      if (!this._answered) {
        this._answered = true;
        c._frame(this, {type: FrameType.CONNECTED, transport: this.name});
      }
      for (var i = 0; i < doc.frames.length && !this.closed; i++) c._frame(this, doc.frames[i]);
      if (this.closed) return;
      c._answered(this);
      if (this.hold) this.open();
      else this._timer = c._env.setTimeout(function () { self.open(); }, c._opts.pollInterval);
    }

    _end(info) {
      if (!this.closed) this.client._fail(this, info);
    }

    close() {
      this.closed = true;
      this.client._env.clearTimeout(this._timer);
      if (this._abort) this._abort.abort();
    }
  }

  /** stream: fetch + ReadableStream, one JSON frame per line. */
  class StreamTransport {
    constructor(client, name) {
      this.client = client;
      this.name = name;
      this.streaming = true;
      this.seesPings = true;
      this.closed = false;
      this._abort = null;
      this._reader = null;
    }

    open() {
      var self = this, c = this.client, env = c._env;
      var controller = env.AbortController ? new env.AbortController() : null;
      var params = c._params();
      this.auth = params.auth;
      this._abort = controller;
      env.fetch(httpUrl(c._url, this.name, params), fetchInit(c, controller))
        .then(function (res) {
          if (self.closed) return;
          if (!res.ok) return res.text().then(function (text) { self._end(httpFailure(res.status, text)); });
          if (!res.body || typeof res.body.getReader !== 'function') {
            return self._end({reason: 'unsupported', retry: 'next'});
          }
          self._read(res.body.getReader(), new env.TextDecoder());
        })
        .catch(function (err) { self._end({reason: 'network', error: err}); });
    }

    _read(reader, decoder) {
      var self = this, buffer = '';
      this._reader = reader;
      function pump() {
        // Not returned: a stream lives long, and a chain of returned
        // promises would keep every chunk's promise alive until it ends.
        reader.read().then(function (chunk) {
          if (self.closed) return;
          buffer += chunk.done ? decoder.decode() : decoder.decode(chunk.value, {stream: true});
          var lines = buffer.split('\n');
          buffer = lines.pop();
          for (var i = 0; i < lines.length && !self.closed; i++) {
            if (!lines[i].trim()) continue;
            var frame = parseJSON(lines[i]);
            if (frame === undefined) return self._end({reason: 'bad_frame'});
            self.client._frame(self, frame);
          }
          if (chunk.done) self._end({reason: 'closed'});
          else if (!self.closed) pump();
        }).catch(function (err) { self._end({reason: 'network', error: err}); });
      }
      pump();
    }

    _end(info) {
      if (!this.closed) this.client._fail(this, info);
    }

    close() {
      this.closed = true;
      if (this._abort) this._abort.abort();
      if (this._reader) this._reader.cancel().catch(function () {});
    }
  }

  /** sse: a browser EventSource; the client, not the browser, reconnects. */
  class SSETransport {
    constructor(client, name) {
      this.client = client;
      this.name = name;
      this.streaming = true;
      this.seesPings = true; // `ping` events
      this.closed = false;
      this._es = null;
    }

    open() {
      var self = this, c = this.client;
      var params = c._params();
      this.auth = params.auth;
      var es = this._es = new c._env.EventSource(httpUrl(c._url, this.name, params),
        {withCredentials: !!c._opts.withCredentials});
      function named(event) { self._data(event.data, null); }
      [FrameType.CONNECTED, FrameType.SUBSCRIBED, FrameType.RESET, FrameType.RECONNECT, FrameType.PING,
        SSE_CHANNEL_ERROR].forEach(function (type) { es.addEventListener(type, named); });
      // Message frames are default events whose data is the message itself.
      es.addEventListener('message', function (event) { self._data(event.data, FrameType.MESSAGE); });
      // EventSource's own error event: the connection failed or ended. (The
      // server's error frames are `channel_error` events.)
      es.addEventListener('error', function () { self._end({reason: 'network'}); });
    }

    _data(text, wrap) {
      if (this.closed) return;
      var value = parseJSON(text);
      if (value === undefined) return this._end({reason: 'bad_frame'});
      this.client._frame(this, wrap ? {type: wrap, data: value} : value);
    }

    _end(info) {
      if (!this.closed) this.client._fail(this, info);
    }

    close() {
      this.closed = true;
      if (this._es) this._es.close();
    }
  }

  /** websocket: one socket; channels join and leave in-band. */
  class WebSocketTransport {
    constructor(client, name) {
      this.client = client;
      this.name = name;
      this.streaming = true;
      this.seesPings = true;
      this.inBand = true;
      this.closed = false;
      this._ws = null;
      this._open = false;
      // Channels we sent `unsubscribe` for and whose answer is still on its
      // way: frames for them belong to the old subscription.
      this._leaving = new Map();
    }

    open() {
      var self = this, c = this.client;
      // The socket's token is the one in its URL, for its whole life.
      this.auth = c._auth;
      var ws = this._ws = new c._env.WebSocket(withToken(c._wsUrl, this.auth));
      ws.onopen = function () {
        if (self.closed) return;
        self._open = true;
        var p = c._params();
        self.subscribe(p.channels, p.cursor);
      };
      ws.onmessage = function (event) {
        if (self.closed) return;
        var frame = parseJSON(event.data);
        if (frame === undefined) return self._end({reason: 'bad_frame'});
        self._frame(frame);
      };
      ws.onclose = function (event) {
        var code = event.code;
        if (code === CloseCode.GOING_AWAY || code === CloseCode.SLOW_CONSUMER) {
          self._end({reason: 'closed', code: code, message: event.reason, retry: 'now'});
        } else if (code === CloseCode.EXPIRED) {
          self._end({reason: ReconnectReason.TOKEN_EXPIRED, code: code, message: event.reason, retry: 'token'});
        } else if (code === CloseCode.MESSAGE_TOO_BIG) {
          self._end({reason: 'closed', code: code, message: event.reason, retry: 'backoff'});
        } else {
          self._end({reason: 'closed', code: code, message: event.reason});
        }
      };
      ws.onerror = function () {}; // onclose follows, with the code
    }

    subscribe(channels, cursor) {
      if (!this._open || !channels.length) return;
      var command = {type: 'subscribe', channels: channels};
      if (cursor) command.cursor = cursor;
      this._ws.send(JSON.stringify(command));
    }

    unsubscribe(channels) {
      if (!this._open || !channels.length) return;
      var leaving = this._leaving;
      channels.forEach(function (c) { leaving.set(c, (leaving.get(c) || 0) + 1); });
      this._ws.send(JSON.stringify({type: 'unsubscribe', channels: channels}));
    }

    _frame(frame) {
      var type = frame.type;
      var channel = type === FrameType.MESSAGE ? frame.data && frame.data.channel : frame.channel;
      var leaving = channel && this._leaving.get(channel);
      if (leaving) {
        // The server answers every unsubscribe with one `unsubscribed` per
        // channel, held or not: everything before it is the old subscription's.
        if (type === FrameType.UNSUBSCRIBED) {
          if (leaving > 1) this._leaving.set(channel, leaving - 1);
          else this._leaving.delete(channel);
        }
        return;
      }
      this.client._frame(this, frame);
    }

    _end(info) {
      if (!this.closed) this.client._fail(this, info);
    }

    close() {
      this.closed = true;
      var ws = this._ws;
      if (!ws) return;
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        ws.close(CloseCode.NORMAL);
      } catch (e) { /* already closed */ }
    }
  }

  var TRANSPORT_CLASSES = {
    websocket: WebSocketTransport,
    sse: SSETransport,
    stream: StreamTransport,
    longpoll: PollTransport,
    poll: PollTransport
  };

  // ---- The client ----

  /**
   * A connection to one torchannels URL carrying any number of channels.
   *
   *   var client = new TorChannels.Client({url: '/channels'});
   *   client.on('connected', function (e) { console.log('via', e.transport); });
   *   var token = client.subscribe('news', function (msg) { ... }, {onReset: clear});
   *   client.unsubscribe(token);
   *
   * It connects when the first channel is subscribed and disconnects when the
   * last is unsubscribed, or on close().
   */
  class Client {
    constructor(options) {
      var o = this._opts = Object.assign({}, DEFAULTS, options);
      var env = this._env = environment(o);
      this._url = o.url;
      this._wsUrl = o.websocketUrl || websocketUrl(o.url, env.location);
      if (o.token != null && typeof o.token !== 'string') throw new TypeError('torchannels: token must be a string');
      if (o.getToken != null && typeof o.getToken !== 'function') {
        throw new TypeError('torchannels: getToken must be a function');
      }
      if (o.longpollTimeout != null && !(o.longpollTimeout > 0)) {
        throw new TypeError('torchannels: longpollTimeout must be a positive number of seconds, or null');
      }
      var wanted = o.transport ? [o.transport] : o.transports;
      wanted.forEach(function (name) {
        if (TRANSPORTS.indexOf(name) < 0) throw new Error('torchannels: unknown transport ' + name);
      });
      var wsUrl = this._wsUrl;
      this._candidates = wanted.filter(function (name) { return supported(name, env, wsUrl); });
      if (!this._candidates.length) {
        throw new Error('torchannels: none of the transports ' + wanted.join(', ') + ' can run here');
      }
      /** 'disconnected', 'connecting' or 'connected'. */
      this.state = 'disconnected';
      this._subs = []; // {token, channel, callback, onReset, onError}, in subscribe order
      this._lastToken = 0;
      this._denied = new Map(); // channel -> code: channels the server refused, not asked for again
      this._active = new Set(); // channels the current connection was asked for
      this._positions = new Map(); // channel -> 'epoch:offset', for active channels
      this._listeners = {};
      this._worked = new Set(); // transports that connected at least once
      this._index = 0; // into _candidates
      this._attempt = 0; // failures since the last successful connection
      this._transport = null;
      this._timers = {};
      this._pingMs = 0;
      this._serverPing = 0;
      this._progress = false;
      // The subscription token (`token` query parameter); named `auth` here,
      // apart from the tokens subscribe() returns.
      this._auth = o.token || null;
      this._authStale = !this._auth && !!o.getToken; // ask getToken() before connecting
      this._authCall = null; // the pending getToken() call
      this._authWait = false; // waiting for a token: a getToken() call, or the pause after one failed
      this._authAttempt = 0; // token refreshes since a token last proved good
      var self = this;
      this._onOnline = function () { self._online(); };
    }

    /** The name of the transport in use or being tried; null when disconnected. */
    get transport() {
      return this.state === 'disconnected' ? null : this._candidates[this._index];
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
      if (typeof channel !== 'string' || !CHANNEL_RE.test(channel)) {
        throw new TypeError('torchannels: invalid channel name ' + JSON.stringify(channel) +
          ': use 1-128 characters from A-Z a-z 0-9 _ - . : / @ # $');
      }
      if (typeof callback !== 'function') throw new TypeError('torchannels: callback must be a function');
      options = options || {};
      var token = ++this._lastToken;
      this._subs.push({token: token, channel: channel, callback: callback,
        onReset: options.onReset, onError: options.onError});
      this._denied.delete(channel); // subscribing again asks the server again
      this._scheduleSync();
      return token;
    }

    /** Stop the callback of `token`; true if it was subscribed. */
    unsubscribe(token) {
      var before = this._subs.length;
      this._subs = this._subs.filter(function (s) { return s.token !== token; });
      if (this._subs.length === before) return false;
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
      this._authCall = null; // a pending getToken() answer comes too late now
      this._useToken(token);
      if (this._authWait) {
        // The client was waiting for a token: connect with this one now.
        this._authWait = false;
        this._cancel('reconnect');
        this._open();
      }
    }

    /** Listen to 'connecting', 'connected', 'disconnected' or 'error'. */
    on(event, fn) {
      (this._listeners[event] = this._listeners[event] || []).push(fn);
      return this;
    }

    /** Remove a listener (or all listeners of `event` when `fn` is omitted). */
    off(event, fn) {
      var list = this._listeners[event] || [];
      this._listeners[event] = fn ? list.filter(function (f) { return f !== fn; }) : [];
      return this;
    }

    /** Drop every subscription and disconnect. The client can be used again. */
    close() {
      this._subs = [];
      this._denied.clear();
      this._stop('closed');
    }

    // -- connection life cycle --

    _desired() {
      var seen = new Set(), denied = this._denied;
      return this._subs.map(function (s) { return s.channel; }).filter(function (c) {
        if (seen.has(c) || denied.has(c)) return false;
        seen.add(c);
        return true;
      });
    }

    _scheduleSync() {
      // Deferred, so that subscribing to several channels in a row (as a
      // page does when it loads) makes one connection or one change.
      var self = this;
      if (!this._timers.sync) this._after('sync', 0, function () { self._sync(); });
    }

    _sync() {
      var want = this._desired();
      if (!want.length) return this._stop('idle');
      if (this.state === 'disconnected') return this._start();
      var t = this._transport;
      if (!t) return; // waiting to reconnect: the next request takes the new channels
      var active = this._active;
      var added = want.filter(function (c) { return !active.has(c); });
      var removed = Array.from(active).filter(function (c) { return want.indexOf(c) < 0; });
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

    /** Replace the connection at once, keeping the state unless the new one fails. */
    _restart() {
      this._teardown();
      this._open();
    }

    /** What a request asks for now; also the moment positions of dropped channels go. */
    _params() {
      var channels = this._desired();
      this._setActive(channels);
      return {channels: channels, cursor: this._cursor(channels), auth: this._auth};
    }

    _setActive(channels) {
      var active = this._active = new Set(channels);
      var positions = this._positions;
      Array.from(positions.keys()).forEach(function (c) { if (!active.has(c)) positions.delete(c); });
    }

    _cursor(channels) {
      var positions = this._positions;
      return channels.filter(function (c) { return positions.has(c); })
        .map(function (c) { return c + '=' + positions.get(c); }).join(',');
    }

    _start() {
      var win = this._env.window;
      if (win && win.addEventListener) win.addEventListener('online', this._onOnline);
      this._attempt = 0;
      this._setState('connecting', {transport: this._candidates[this._index]});
      this._open();
    }

    _stop(reason) {
      var name = this.transport;
      this._teardown();
      this._cancel('reconnect');
      this._cancel('sync');
      this._authCall = null;
      this._authWait = false;
      this._setActive([]);
      var win = this._env.window;
      if (win && win.removeEventListener) win.removeEventListener('online', this._onOnline);
      this._setState('disconnected', {transport: name, reason: reason});
    }

    _open() {
      if (!this._desired().length) return this._stop('idle');
      if (this._authStale && this._opts.getToken) return this._fetchToken();
      var self = this, name = this._candidates[this._index];
      var t = this._transport = new TRANSPORT_CLASSES[name](this, name);
      this._progress = false; // no channel frame on this connection yet
      if (t.streaming) {
        // A streaming response starts with `connected` at once. When it does
        // not come, something between us buffers the stream (for WebSocket,
        // the upgrade hangs): step down.
        this._after('first', this._opts.connectTimeout, function () {
          self._fail(t, {reason: 'connect_timeout', retry: name === 'websocket' ? 'next' : 'longpoll'});
        });
      }
      try {
        t.open();
      } catch (err) {
        this._fail(t, {reason: 'unsupported', retry: 'next', error: err});
      }
    }

    _teardown() {
      var t = this._transport;
      this._transport = null;
      this._cancel('first');
      this._cancel('ping');
      this._pingMs = 0;
      this._serverPing = 0;
      if (t) t.close();
    }

    /** The current transport ended: choose the next attempt and when. */
    _fail(t, info) {
      if (t !== this._transport) return;
      if (info.retry === 'token' && this._tokenExpired(t)) return;
      // "Reconnect at once" (close 1001, 4001) from a connection that served
      // no channel frame would only repeat itself (a catch-up the server
      // cannot send): pause first, as for a reconnect frame.
      if (info.retry === 'now' && !this._progress) info = Object.assign({}, info, {retry: 'backoff'});
      this._teardown();
      if (info.retry !== 'now') {
        this._emit('error', {type: 'transport', transport: t.name, reason: info.reason,
          code: info.code, message: info.message, error: info.error});
      }
      var n = this._candidates.length, i = this._index, delay = 0;
      if (info.retry !== 'now') {
        // Step down when this transport cannot work here; stay with one that
        // has worked before. Past the last one, start over, after a pause.
        var step = n > 1 && info.retry !== 'backoff' &&
          (info.retry === 'next' || info.retry === 'longpoll' || !this._worked.has(t.name));
        if (step) {
          var longpoll = this._candidates.indexOf('longpoll');
          i = info.retry === 'longpoll' && longpoll > i ? longpoll : i + 1;
        }
        if (i >= n) i = 0;
        if (!step || i === 0) {
          var o = this._opts;
          delay = backoff(this._attempt++, o.minReconnectDelay, o.maxReconnectDelay, this._env.random);
        }
      }
      this._index = i;
      this._setState('connecting', {transport: this._candidates[i], reason: info.reason});
      var self = this;
      this._after('reconnect', delay, function () { self._open(); });
    }

    // -- tokens --

    /** Call getToken() and connect with what it gives; retried with backoff when it fails. */
    _fetchToken() {
      var self = this, call = this._authCall = {};
      this._authWait = true;
      function settle(ok, value) {
        if (self._authCall !== call) return; // stopped, or setToken() came first
        self._authCall = null;
        if (ok && value != null && typeof value !== 'string') {
          ok = false;
          value = new TypeError('torchannels: getToken() must give a token string (or null for none)');
        }
        if (!ok) {
          self._emit('error', {type: 'token', transport: self.transport, reason: 'get_token',
            message: value && value.message, error: value});
          if (!self._authWait) return; // a listener called close() or setToken()
          var o = self._opts;
          var delay = backoff(self._authAttempt++, o.minReconnectDelay, o.maxReconnectDelay, self._env.random);
          return self._after('reconnect', delay, function () { self._open(); });
        }
        self._authWait = false;
        self._useToken(value);
        self._open();
      }
      var result;
      try {
        result = this._opts.getToken();
      } catch (err) {
        return settle(false, err);
      }
      Promise.resolve(result).then(function (v) { settle(true, v); }, function (err) { settle(false, err); });
    }

    _useToken(token) {
      this._auth = token || null;
      this._authStale = false;
      // Refusals for a token reason may not hold for this token: ask again.
      var denied = this._denied, again = false;
      denied.forEach(function (code, channel) {
        if (/^token_/.test(code)) {
          denied.delete(channel);
          again = true;
        }
      });
      if (again) this._scheduleSync();
    }

    /**
     * The server says the token behind `t` lapsed (a reconnect frame, close
     * 4002, or an error frame token_expired). With a newer token than t's
     * (setToken) or with getToken, replace the connection, keeping every
     * position, and return true; otherwise false (the caller goes on as
     * without tokens: the server will refuse the channels that need one).
     */
    _tokenExpired(t) {
      var newer = t.auth !== this._auth;
      if (!newer && !this._opts.getToken) return false;
      var delay = 0, o = this._opts;
      if (!newer) {
        this._authStale = true;
        this._authWait = true;
        // A fresh token that lapses again at once: pause before the next one.
        if (this._authAttempt > 0) {
          delay = backoff(this._authAttempt - 1, o.minReconnectDelay, o.maxReconnectDelay, this._env.random);
        }
        this._authAttempt++;
      }
      this._teardown();
      this._setState('connecting', {transport: t.name, reason: ReconnectReason.TOKEN_EXPIRED});
      var self = this;
      this._after('reconnect', delay, function () { self._open(); });
      return true;
    }

    /** A poll answer without a lapsed token: the token works. */
    _answered(t) {
      if (t === this._transport) this._authAttempt = 0;
    }

    _online() {
      // Back online: retry now instead of at the end of a backoff pause.
      if (!this._timers.reconnect) return;
      this._cancel('reconnect');
      this._attempt = 0;
      if (!this._worked.size) this._index = 0;
      this._open();
    }

    // -- frames --

    _frame(t, f) {
      if (t !== this._transport || !f || typeof f !== 'object') return;
      this._rearm();
      var channel = f.channel;
      switch (f.type) {
        case FrameType.CONNECTED:
          this._cancel('first');
          this._worked.add(t.name);
          this._attempt = 0;
          this._serverPing = f.ping > 0 ? f.ping : 0;
          if (this._serverPing && t.seesPings) this._watchPings();
          this._setState('connected', {transport: t.name});
          break;
        case FrameType.PING:
          if (!this._pingMs && this._serverPing) this._watchPings();
          this._authAttempt = 0; // the connection lived a ping interval: its token works
          break;
        case FrameType.MESSAGE:
          var data = f.data;
          if (!data || !this._active.has(data.channel)) return;
          this._progress = true;
          this._positions.set(data.channel, data.epoch + ':' + data.offset);
          this._deliver(data.channel, data);
          break;
        case FrameType.SUBSCRIBED:
          if (!this._active.has(channel)) return;
          this._progress = true;
          this._positions.set(channel, f.epoch + ':' + f.offset);
          (f.state || []).forEach(function (m) { this._deliver(channel, m); }, this);
          break;
        case FrameType.RESET:
          if (!this._active.has(channel)) return;
          this._positions.delete(channel);
          this._resetChannel(channel, f.reason);
          break;
        case FrameType.ERROR:
          if (!channel) {
            this._emit('error', {type: 'server', transport: t.name, code: f.code, message: f.message});
          } else if (!(f.code === ErrorCode.TOKEN_EXPIRED && this._active.has(channel) && this._tokenExpired(t))) {
            this._refuse(channel, f);
          }
          break;
        case FrameType.RECONNECT:
          if (f.reason === ReconnectReason.TOKEN_EXPIRED && this._tokenExpired(t)) break;
          // A planned end (e.g. the stream's byte limit): resume at once. But
          // a server that ends connections before serving anything (shutting
          // down, an expired token) gets a backoff pause, not a tight loop.
          if (this._progress) this._restart();
          else this._fail(t, {reason: f.reason});
          break;
        default: // unknown frame types are ignored (docs/protocol.md)
      }
    }

    _watchPings() {
      this._pingMs = this._serverPing * 1000 + this._opts.maxPingDelay;
      this._rearm();
    }

    _rearm() {
      if (!this._pingMs) return;
      var self = this, t = this._transport;
      this._after('ping', this._pingMs, function () { self._fail(t, {reason: 'ping_timeout'}); });
    }

    _deliver(channel, message) {
      this._subs.slice().forEach(function (s) {
        // Skip callbacks unsubscribed by an earlier callback of this frame.
        if (s.channel === channel && this._subs.indexOf(s) >= 0) this._call(s.callback, message);
      }, this);
    }

    _resetChannel(channel, reason) {
      this._subs.slice().forEach(function (s) {
        if (s.channel === channel && s.onReset) this._call(s.onReset, channel, reason);
      }, this);
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
      this._denied.set(channel, f.code);
      var error = {channel: channel, code: f.code, message: f.message};
      this._subs.slice().forEach(function (s) {
        if (s.channel === channel && s.onError) this._call(s.onError, error);
      }, this);
      this._emit('error', {type: 'channel', transport: this.transport, channel: channel,
        code: f.code, message: f.message});
      this._scheduleSync(); // disconnect if it was the last channel
    }

    // -- events, timers --

    _setState(state, info) {
      if (this.state === state) return;
      this.state = state;
      this._emit(state, info);
    }

    _emit(event, payload) {
      var list = this._listeners[event] || [];
      if (event === 'error' && !list.length && payload.type === 'callback' && root.console) {
        root.console.error('torchannels: a callback failed', payload.error);
      }
      list.slice().forEach(function (fn) {
        try {
          fn.call(this, payload);
        } catch (err) {
          if (event !== 'error') this._emit('error', {type: 'callback', error: err});
          else if (root.console) root.console.error('torchannels: an error listener failed', err);
        }
      }, this);
    }

    _call(fn) {
      // A failing application callback must not stop the frames after it.
      try {
        fn.apply(undefined, Array.prototype.slice.call(arguments, 1));
      } catch (err) {
        this._emit('error', {type: 'callback', error: err});
      }
    }

    _after(name, ms, fn) {
      var timers = this._timers;
      this._cancel(name);
      timers[name] = this._env.setTimeout(function () {
        timers[name] = null;
        fn();
      }, ms);
    }

    _cancel(name) {
      if (this._timers[name] != null) {
        this._env.clearTimeout(this._timers[name]);
        this._timers[name] = null;
      }
    }
  }

  /** Adds the seed's `$.torChannels(options)` to a jQuery object. */
  function registerJQuery($) {
    $.torChannels = function (options) { return new Client(options); };
    return $;
  }

  return {
    version: VERSION,
    Client: Client,
    FrameType: FrameType,
    ResetReason: ResetReason,
    ErrorCode: ErrorCode,
    ReconnectReason: ReconnectReason,
    CloseCode: CloseCode,
    TRANSPORTS: TRANSPORTS,
    backoff: backoff,
    registerJQuery: registerJQuery
  };
});
