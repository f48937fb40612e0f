'use strict';
// Why a transport failed: readable reasons ("blocked or unreachable" for a
// request that got no answer, a WebSocket refused before it opened), and the
// transport_failed event on every step-down.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, frames: F} = require('./fakes.js');

const errors = (ctx) => ctx.events.filter((e) => e.event === 'error');

test('every step-down emits transport_failed: the transport, the next, the status or close code, a readable reason', async () => {
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
      reason: 'refused or unreachable (close 1006 before open)'},
    {transport: 'sse', next: 'stream', status: null, code: null, reason: 'blocked or unreachable'},
    {transport: 'stream', next: 'longpoll', status: null, code: null, reason: 'blocked or unreachable'},
    {transport: 'longpoll', next: 'poll', status: 502, code: 502, reason: 'HTTP 502'},
  ]);
  assert.deepEqual(errors(ctx).map((e) => e.reason),
    ['refused or unreachable', 'blocked or unreachable', 'blocked or unreachable', 'http_error']);
  assert.ok(errors(ctx).every((e) => typeof e.message === 'string' && e.message), 'every error has a message');
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
    assert.equal(error.message, 'blocked or unreachable');
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

test('websocket close codes after open read as words', async () => {
  const cases = [[1001, 'server going away'], [1013, 'server cannot read its history'], [4001, 'fell behind'],
    [1006, 'connection lost'], [1000, 'closed by the server'], [4999, 'closed (4999)']];
  for (const [code, words] of cases) {
    const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws', reconnectingDelay: 0});
    ctx.client.subscribe('a', () => {});
    await ctx.clock.tick(0);
    ctx.WebSocket.instances[0].open();
    ctx.WebSocket.instances[0].frame(F.connected('websocket'));
    ctx.WebSocket.instances[0].drop(code);
    await ctx.clock.tick(0);
    assert.equal(ctx.states[2], `connected>reconnecting (${words})`, `close ${code}`);
  }
});
