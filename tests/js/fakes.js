'use strict';
// Fakes for the client's environment, in the spirit of centrifuge-js's
// fakeServer.ts: a manual clock, fetch with poll and NDJSON stream answers,
// EventSource, WebSocket and window. Each test drives the "server" side by hand.

const TorChannels = require('../../src/torchannels/static/torchannel.js');

/** Let pending promise callbacks (fetch, stream reads) run. */
async function flush() {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** setTimeout/clearTimeout on a clock that only moves when told. */
class Clock {
  constructor() {
    this.now = 0;
    this.timers = new Map();
    this.lastId = 0;
    this.setTimeout = (fn, ms) => {
      const id = ++this.lastId;
      this.timers.set(id, {id, at: this.now + Math.max(0, ms || 0), fn});
      return id;
    };
    this.clearTimeout = (id) => { this.timers.delete(id); };
  }

  /** Timers in the order they fire. */
  pending() {
    return [...this.timers.values()].sort((a, b) => a.at - b.at || a.id - b.id);
  }

  /** Advance `ms`, firing due timers in order and letting promises settle. */
  async tick(ms = 0) {
    const end = this.now + ms;
    await flush();
    for (;;) {
      const due = this.pending().find((t) => t.at <= end);
      if (!due) break;
      this.timers.delete(due.id);
      this.now = due.at;
      due.fn();
      await flush();
    }
    this.now = end;
  }
}

function parseCursor(text) {
  if (!text) return {};
  return Object.fromEntries(text.split(',').map((entry) => entry.split('=')));
}

function query(url) {
  const u = new URL(url, 'http://test.invalid');
  return {
    transport: u.searchParams.get('transport'),
    channels: u.searchParams.getAll('channel'),
    cursor: u.searchParams.get('cursor') || '',
    timeout: u.searchParams.get('timeout'),
    token: u.searchParams.get('token'),
    tokens: u.searchParams.getAll('token'),
    client: u.searchParams.get('client'),
    presence: u.searchParams.get('presence'),
    after: u.searchParams.get('after'),
    limit: u.searchParams.get('limit'),
    path: u.pathname,
  };
}

/** One fetch() call, answered by the test. */
class FakeRequest {
  constructor(url, init) {
    this.url = url;
    this.init = init || {};
    Object.assign(this, query(url));
    this.aborted = false;
    this._controller = null;
    this.promise = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    const signal = this.init.signal;
    if (signal) {
      signal.addEventListener('abort', () => {
        this.aborted = true;
        const err = new DOMException('The operation was aborted.', 'AbortError');
        this._reject(err);
        if (this._controller) {
          try { this._controller.error(err); } catch (e) { /* closed already */ }
        }
      });
    }
  }

  /** A poll/long-poll answer. */
  answer(frames, cursor = '') {
    this._resolve(new Response(JSON.stringify({cursor, frames}), {
      status: 200, headers: {'Content-Type': 'application/json'},
    }));
  }

  /** Any JSON document (a poll answer with more keys, a presence page). */
  json(doc, status = 200) {
    this._resolve(new Response(JSON.stringify(doc), {status, headers: {'Content-Type': 'application/json'}}));
  }

  /** An HTTP error answer; `code` gives the torchannels JSON body. */
  error(status, code, message = 'refused') {
    const body = code ? JSON.stringify({error: code, message}) : 'error';
    this._resolve(new Response(body, {status}));
  }

  /** Any answer: `body` as it is (a string) or as JSON, with `headers`. */
  reply(status, body, headers = {}) {
    this._resolve(new Response(typeof body === 'string' ? body : JSON.stringify(body), {status, headers}));
  }

  /** The JSON body sent (a POST's). */
  sent() {
    return JSON.parse(this.init.body);
  }

  /** A network failure. */
  fail() {
    this._reject(new TypeError('fetch failed'));
  }

  /** A streaming answer; returns a writer of NDJSON frames. */
  stream() {
    const encoder = new TextEncoder();
    const body = new ReadableStream({start: (controller) => { this._controller = controller; }});
    this._resolve(new Response(body, {status: 200, headers: {'Content-Type': 'application/x-ndjson'}}));
    const enqueue = (text) => {
      if (!this.aborted) this._controller.enqueue(encoder.encode(text)); // else: lost, as on a wire
    };
    return {
      write: (...frames) => enqueue(frames.map((f) => JSON.stringify(f) + '\n').join('')),
      raw: enqueue,
      /** Bytes as they are, e.g. a chunk that ends inside a UTF-8 character. */
      bytes: (chunk) => {
        if (!this.aborted) this._controller.enqueue(chunk);
      },
      end: () => this._controller.close(),
    };
  }

  cursorMap() {
    return parseCursor(this.cursor);
  }
}

class FakeHttp {
  constructor(attempts = []) {
    this.requests = [];
    this.fetch = (url, init) => {
      const request = new FakeRequest(url, init);
      this.requests.push(request);
      attempts.push(request.transport);
      return request.promise;
    };
  }

  last() {
    return this.requests[this.requests.length - 1];
  }
}

function fakeEventSourceClass(attempts = []) {
  class FakeEventSource {
    constructor(url, init) {
      this.url = url;
      this.init = init;
      Object.assign(this, query(url));
      this.listeners = {};
      this.closed = false;
      FakeEventSource.instances.push(this);
      attempts.push('sse');
    }

    addEventListener(type, fn) {
      (this.listeners[type] = this.listeners[type] || []).push(fn);
    }

    dispatch(type, event) {
      (this.listeners[type] || []).forEach((fn) => fn(event));
    }

    /** Send frames as the server's SSE encoding does (message frames as default events). */
    frame(...frames) {
      for (const f of frames) {
        if (f.type === 'message') this.dispatch('message', {type: 'message', data: JSON.stringify(f.data)});
        else {
          const name = f.type === 'error' ? 'channel_error' : f.type; // as transports/sse.py names it
          this.dispatch(name, {type: name, data: JSON.stringify(f)});
        }
      }
    }

    /** The connection failed (EventSource's own error event: no data). */
    fail() {
      this.dispatch('error', {type: 'error'});
    }

    close() {
      this.closed = true;
    }
  }
  FakeEventSource.instances = [];
  return FakeEventSource;
}

function fakeWebSocketClass(attempts = []) {
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.token = query(url).token;
      this.sent = [];
      this.readyState = 0;
      this.closedWith = null;
      FakeWebSocket.instances.push(this);
      attempts.push('websocket');
    }

    send(text) {
      if (this.readyState !== 1) throw new Error('send on a socket that is not open');
      this.sent.push(JSON.parse(text));
    }

    close(code) {
      this.closedWith = code;
      this.readyState = 3;
    }

    open() {
      this.readyState = 1;
      if (this.onopen) this.onopen({type: 'open'});
    }

    frame(...frames) {
      for (const f of frames) if (this.onmessage) this.onmessage({data: JSON.stringify(f)});
    }

    /** The server (or the network) closes the socket. */
    drop(code = 1006, reason = '') {
      this.readyState = 3;
      if (this.onerror) this.onerror({type: 'error'});
      if (this.onclose) this.onclose({code, reason});
    }
  }
  FakeWebSocket.instances = [];
  return FakeWebSocket;
}

class FakeWindow {
  constructor() {
    this.listeners = {};
  }

  addEventListener(type, fn) {
    (this.listeners[type] = this.listeners[type] || []).push(fn);
  }

  removeEventListener(type, fn) {
    this.listeners[type] = (this.listeners[type] || []).filter((f) => f !== fn);
  }

  dispatch(type) {
    (this.listeners[type] || []).slice().forEach((fn) => fn({type}));
  }
}

// Frame builders, as the server writes them (docs/protocol.md).
const frames = {
  connected: (transport, ping = 15) => ({type: 'connected', transport, ping}),
  subscribed: (channel, offset = 0, state, epoch = 'e1') =>
    Object.assign({type: 'subscribed', channel, epoch, offset}, state ? {state} : {}),
  message: (channel, offset, data = {}, epoch = 'e1') =>
    ({type: 'message', data: Object.assign({}, data, {channel, ts: 1764139200.5, epoch, offset})}),
  reset: (channel, reason = 'history_trimmed') => ({type: 'reset', channel, reason}),
  error: (channel, code = 'forbidden') =>
    Object.assign({type: 'error', code, message: `no ${channel}`}, channel ? {channel} : {}),
  reconnect: (reason = 'byte_limit') => ({type: 'reconnect', reason}),
  disconnect: (reason = 'disconnected_by_server', reconnect = false) => ({type: 'disconnect', reason, reconnect}),
  ping: () => ({type: 'ping'}),
  unsubscribed: (channel) => ({type: 'unsubscribed', channel}),
  /** A `subscribed` frame of a presence channel: `presence` is {clients, users, members, next}. */
  snapshot: (channel, presence, offset = 0, epoch = 'e1') =>
    ({type: 'subscribed', channel, epoch, offset, presence: Object.assign({next: null}, presence)}),
  presence: (channel, joins = [], leaves = []) =>
    ({type: 'presence', channel, joins: joins.map((user) => (typeof user === 'string' ? {user, info: null} : user)),
      leaves: leaves.map((user) => ({user}))}),
  /** The answers to a WebSocket `publish` command with `id`. */
  published: (id, channel, offset, epoch = 'e1') => ({type: 'published', id, channel, epoch, offset}),
  publishError: (id, channel, code, extra = {}) =>
    Object.assign({type: 'publish_error', id, channel, code, message: `not ${channel}`, retry: false}, extra),
};

/**
 * A client wired to fakes. `events` records its state and error events,
 * `attempts` the transport of every connection or request it made.
 */
function setup(options = {}) {
  const attempts = [];
  const clock = new Clock();
  const http = new FakeHttp(attempts);
  const WebSocket = fakeWebSocketClass(attempts);
  const EventSource = fakeEventSourceClass(attempts);
  const win = new FakeWindow();
  const doc = new FakeWindow(); // a document: visibilitychange
  doc.visibilityState = 'visible';
  const client = new TorChannels.Client(Object.assign({
    url: 'http://test.invalid/channels',
    fetch: http.fetch,
    WebSocket,
    EventSource,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    now: () => clock.now,
    window: win,
    document: doc,
    location: null,
  }, options));
  const events = [];
  for (const name of ['connecting', 'connected', 'disconnected', 'error']) {
    client.on(name, (payload) => events.push(Object.assign({event: name}, payload)));
  }
  // Every `state` event as 'from>to (reason)', and every transport_failed.
  const states = [];
  client.on('state', (e) => states.push(`${e.from}>${e.to} (${e.reason})`));
  const failed = [];
  client.on('transport_failed', (e) => failed.push(e));
  return {clock, http, WebSocket, EventSource, win, doc, client, events, states, failed, attempts};
}

/** Records what callbacks receive, as 'channel:text' strings. */
function recorder() {
  const got = [];
  const on = (tag) => (msg) => got.push(`${tag || msg.channel}:${msg.text}`);
  return {got, on};
}

module.exports = {
  TorChannels, Clock, FakeHttp, FakeWindow, fakeEventSourceClass, fakeWebSocketClass,
  frames, setup, recorder, flush, parseCursor,
};
