'use strict';
// Why a transport failed: plain words a user understands ("server
// unreachable" for a request that got no answer or a WebSocket refused before
// it opened), technical detail apart, and the transport_failed event on every
// step-down.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, frames: F} = require('./fakes.js');

const errors = (ctx) => ctx.events.filter((e) => e.event === 'error');

test('every step-down emits transport_failed: the transport, the next, the status or close code, plain words, detail', async () => {
  const ctx = setup({websocketUrl: 'ws://x/ws'});
  const {clock, WebSocket, EventSource, http, client} = ctx;
  client.subscribe('a', () => {});
  await clock.tick(0);
  WebSocket.instances[0].drop(1006); // refused before it opened (a 403 from the origin check, say)
  await clock.tick(0);
  EventSource.instances[0].fail(); // no event at all before the error: blocked or unreachable
  await clock.tick(0);
  http.last().fail(); // stream: fetch() rejected (CORS, no server)
  await clock.tick(0);
  http.last().error(502); // longpoll: a proxy's answer, at once
  await clock.tick(0);
  assert.deepEqual(ctx.failed, [
    {transport: 'websocket', next: 'sse', status: null, code: 1006,
      reason: 'server unreachable', detail: 'close 1006 before open (refused or unreachable)'},
    {transport: 'sse', next: 'stream', status: null, code: null,
      reason: 'server unreachable', detail: 'EventSource failed before any event (blocked or unreachable)'},
    {transport: 'stream', next: 'longpoll', status: null, code: null,
      reason: 'server unreachable', detail: 'blocked or unreachable'},
    {transport: 'longpoll', next: 'poll', status: 502, code: 502, reason: 'server unavailable (502)', detail: 'HTTP 502'},
  ]);
  assert.deepEqual(errors(ctx).map((e) => e.reason),
    ['refused or unreachable', 'blocked or unreachable', 'blocked or unreachable', 'http_error']);
  assert.deepEqual(errors(ctx).map((e) => e.message), ctx.failed.map((e) => e.detail), 'the error message is the detail');
  assert.equal(errors(ctx)[3].status, 502);
});

test('a transport that fails again where it worked is retried, with no transport_failed', async () => {
  const ctx = setup({websocketUrl: 'ws://x/ws'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.WebSocket.instances[0].open();
  ctx.WebSocket.instances[0].frame(F.connected('websocket'));
  ctx.WebSocket.instances[0].drop(1006);
  await ctx.clock.tick(750); // it lived no time: the backoff, 500 + 0.5 * 500
  ctx.WebSocket.instances[1].drop(1006); // the hub is down: refused before open
  await ctx.clock.tick(1000); // the state names what ended the connection; the retries' failures are errors
  assert.deepEqual(ctx.attempts, ['websocket', 'websocket', 'websocket']);
  assert.deepEqual(ctx.failed, []);
  assert.deepEqual(errors(ctx).map((e) => e.reason), ['connection lost', 'refused or unreachable']);
  assert.equal(ctx.client.state, 'reconnecting');
  assert.deepEqual(ctx.states.slice(2), ['connected>reconnecting (connection lost)']);
});

for (const transport of ['poll', 'longpoll', 'stream', 'sse']) {
  test(`${transport}: a request that got no answer reports 'blocked or unreachable', not an undefined code`, async () => {
    const ctx = setup({transport});
    ctx.client.subscribe('a', () => {});
    await ctx.clock.tick(0);
    if (transport === 'sse') ctx.EventSource.instances[0].fail();
    else ctx.http.last().fail();
    await ctx.clock.tick(0);
    const [error] = errors(ctx);
    assert.equal(error.reason, 'blocked or unreachable');
    assert.match(error.message, /blocked or unreachable/);
    assert.equal(error.type, 'transport');
  });
}

test('sse: an EventSource error after events came is a lost connection', async () => {
  const ctx = setup({transport: 'sse'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  const es = ctx.EventSource.instances[0];
  es.frame(F.connected('sse'), F.subscribed('a', 0));
  es.fail();
  await ctx.clock.tick(0);
  assert.equal(errors(ctx)[0].reason, 'connection lost');
});

test('websocket close codes after open read as plain words, the code in the detail', async () => {
  const cases = [[1001, 'server restarting', 'close 1001: bye'], [1013, 'server temporarily unavailable', 'close 1013: bye'],
    [4001, 'connection too slow', 'close 4001: bye'], [1006, 'connection lost', 'close 1006'],
    [1000, 'connection closed by the server', 'close 1000: bye'], [4999, 'connection closed by the server', 'close 4999: bye']];
  for (const [code, words, detail] of cases) {
    const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws', reconnectingDelay: 0});
    const details = [];
    ctx.client.on('state', (e) => details.push(e.detail));
    ctx.client.subscribe('a', () => {});
    await ctx.clock.tick(0);
    ctx.WebSocket.instances[0].open();
    ctx.WebSocket.instances[0].frame(F.connected('websocket'), F.subscribed('a', 0));
    ctx.WebSocket.instances[0].drop(code, code === 1006 ? '' : 'bye');
    await ctx.clock.tick(0);
    assert.equal(ctx.states[2], `connected>reconnecting (${words})`, `close ${code}`);
    assert.deepEqual(details, [null, null, detail], `close ${code}`);
  }
});

/** A client connected over `transport`, then its connection ended by `end(ctx)`: the state event that follows. */
async function reconnectingAfter(transport, end) {
  const ctx = setup({transport, websocketUrl: 'ws://x/ws', reconnectingDelay: 0});
  const seen = [];
  ctx.client.on('state', (e) => seen.push(e));
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  if (transport === 'websocket') {
    ctx.WebSocket.instances[0].open();
    ctx.WebSocket.instances[0].frame(F.connected('websocket')); // no channel frame yet: a reconnect frame pauses
  } else {
    ctx.http.last().answer([F.subscribed('a', 0)]);
  }
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'connected');
  await end(ctx);
  await ctx.clock.tick(0);
  const last = seen[seen.length - 1];
  assert.equal(last.to, 'reconnecting', `${transport}: ${end}`);
  return {reason: last.reason, detail: last.detail};
}

test('every reason the status line shows is plain words; the technical detail is apart', async () => {
  // Poll: the next request goes out after pollInterval (2 s); `fn` ends it.
  const next = (fn) => async (ctx) => {
    await ctx.clock.tick(2000);
    await fn(ctx.http.last(), ctx);
  };
  const cases = [
    ['poll', next((r) => r.fail()),
      {reason: 'server unreachable', detail: 'blocked or unreachable'}],
    ['poll', next((r) => r.error(403)),
      {reason: 'access denied (403)', detail: 'HTTP 403'}],
    ['poll', next((r) => r.error(404)),
      {reason: 'not found (404)', detail: 'HTTP 404'}],
    ['poll', next((r) => r.error(500)),
      {reason: 'server error (500)', detail: 'HTTP 500'}],
    ['poll', next((r) => r.error(503, 'shutting_down', 'the server is shutting down')),
      {reason: 'server restarting', detail: 'HTTP 503 shutting_down: the server is shutting down'}],
    ['poll', next((r) => r.error(400, 'too_many_channels', 'at most 2')),
      {reason: 'request refused (400)', detail: 'HTTP 400 too_many_channels: at most 2'}],
    ['poll', next((r) => r.answer('not a list')),
      {reason: 'unreadable answer from the server', detail: 'bad_answer'}],
    ['poll', next((r, ctx) => ctx.clock.tick(10000)),
      {reason: 'server not responding', detail: 'no answer within 10000 ms'}],
    ['websocket', (ctx) => ctx.WebSocket.instances[0].frame(F.reconnect('shutdown')),
      {reason: 'server restarting', detail: 'reconnect frame (shutdown)'}],
    ['websocket', (ctx) => ctx.win.dispatch('offline'), {reason: 'offline', detail: "the browser's offline event"}],
  ];
  for (const [transport, end, expected] of cases) {
    assert.deepEqual(await reconnectingAfter(transport, end), expected, expected.detail);
  }
});

test('a lapsed token not renewed within reconnectingDelay shows as access expired', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws', reconnectingDelay: 0,
    token: 't1', getToken: () => new Promise(() => {})}); // the renewal never comes
  const seen = [];
  ctx.client.on('state', (e) => seen.push([e.to, e.reason, e.detail]));
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.WebSocket.instances[0].open();
  ctx.WebSocket.instances[0].frame(F.connected('websocket'), F.reconnect('token_expired'));
  await ctx.clock.tick(0);
  assert.deepEqual(seen.pop(), ['reconnecting', 'access expired', 'the server says the token lapsed']);
});

test('a server shutting down: the replacement refused before open shows as server restarting, not a close code', async () => {
  // The status line: "reconnecting (refused or unreachable (close 1006 before open))".
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  const seen = [];
  ctx.client.on('state', (e) => seen.push([e.to, e.reason, e.detail]));
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.WebSocket.instances[0].open();
  ctx.WebSocket.instances[0].frame(F.connected('websocket'), F.subscribed('a', 0), F.reconnect('shutdown'));
  ctx.WebSocket.instances[0].drop(1001, 'shutdown');
  await ctx.clock.tick(0);
  assert.equal(ctx.WebSocket.instances.length, 2, 'replaced at once');
  ctx.WebSocket.instances[1].drop(1006); // the server is gone: refused before open
  await ctx.clock.tick(1000);
  assert.equal(ctx.client.state, 'reconnecting');
  assert.deepEqual(seen.pop(), ['reconnecting', 'server restarting',
    'reconnect frame (shutdown), then close 1006 before open (refused or unreachable)']);
  assert.deepEqual(ctx.states.slice(2), ['connected>reconnecting (server restarting)']);
});

test('a planned replacement that fails for another reason than a shutdown names its own failure', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.WebSocket.instances[0].open();
  ctx.WebSocket.instances[0].frame(F.connected('websocket'), F.subscribed('a', 0), F.reconnect('byte_limit'));
  await ctx.clock.tick(0);
  ctx.WebSocket.instances[1].drop(1006);
  await ctx.clock.tick(1000);
  assert.deepEqual(ctx.states.slice(2), ['connected>reconnecting (server unreachable)']);
});
