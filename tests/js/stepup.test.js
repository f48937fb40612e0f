'use strict';
// Stepping back up: after a step-down, the client probes the better
// transports in the background (with backoff, at once on `online` and when
// the page becomes visible) and switches over from its positions: nothing
// lost, nothing twice. close() and a new subscribe() start from the best.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, recorder, frames: F} = require('./fakes.js');

const errors = (ctx) => ctx.events.filter((e) => e.event === 'error');

/** WebSocket refused, so the client is live over sse with a1 delivered. */
async function onSse(options = {}) {
  const ctx = setup(Object.assign({websocketUrl: 'ws://x/ws', maxPingDelay: 1e9}, options));
  const r = recorder();
  ctx.client.subscribe('a', r.on());
  await ctx.clock.tick(0);
  ctx.WebSocket.instances[0].drop(1006);
  await ctx.clock.tick(0);
  const es = ctx.EventSource.instances[0];
  es.frame(F.connected('sse'), F.subscribed('a', 0), F.message('a', 1, {text: 'a1'}));
  await ctx.clock.tick(0);
  assert.equal(ctx.client.transport, 'sse');
  return Object.assign(ctx, {r, es});
}

test('after a step-down, a probe finds the WebSocket back and the client switches without loss or repeats', async () => {
  const ctx = await onSse();
  await ctx.clock.tick(11249); // probeDelay 15 s: a pause in [7.5 s, 15 s] (0.5 -> 11.25 s)
  assert.equal(ctx.WebSocket.instances.length, 1);
  await ctx.clock.tick(1);
  assert.equal(ctx.WebSocket.instances.length, 2);
  const probe = ctx.WebSocket.instances[1];
  assert.equal(new URL(probe.url).searchParams.get('channel'), null);
  ctx.es.frame(F.message('a', 2, {text: 'a2'})); // the live connection goes on meanwhile
  probe.open();
  assert.deepEqual(probe.sent, [], 'a probe subscribes to nothing');
  probe.frame(F.connected('websocket'));
  await ctx.clock.tick(0);
  assert.equal(ctx.es.closed, true);
  assert.equal(probe.closedWith, 1000);
  const ws = ctx.WebSocket.instances[2];
  ws.open();
  assert.deepEqual(ws.sent, [{type: 'subscribe', channels: ['a'], cursor: 'a=e1:2'}]);
  ws.frame(F.connected('websocket'), F.message('a', 3, {text: 'a3'}));
  await ctx.clock.tick(0);
  assert.deepEqual(ctx.r.got, ['a:a1', 'a:a2', 'a:a3']);
  assert.equal(ctx.client.transport, 'websocket');
  assert.equal(ctx.client.state, 'connected');
  assert.deepEqual(ctx.states, ['disconnected>connecting (starting)', 'connecting>connected (connected over sse)']);
  assert.deepEqual(ctx.events.filter((e) => e.event === 'connected').map((e) => e.transport), ['sse', 'websocket']);
  assert.equal(errors(ctx).length, 1, 'only the first refusal');
  await ctx.clock.tick(600000);
  assert.equal(ctx.WebSocket.instances.length, 3, 'on the best transport: no more probes');
});

test('a failed probe is silent and the next waits longer (backoff up to maxProbeDelay)', async () => {
  const ctx = await onSse({maxProbeDelay: 60000});
  const probeTimes = [];
  let seen = 1;
  for (let t = 0; t < 400000; t += 250) {
    await ctx.clock.tick(250);
    if (ctx.WebSocket.instances.length > seen) {
      seen = ctx.WebSocket.instances.length;
      probeTimes.push(ctx.clock.now);
      ctx.WebSocket.instances[seen - 1].drop(1006); // still refused
    }
  }
  const gaps = probeTimes.map((at, i) => at - (i ? probeTimes[i - 1] : 0));
  // (c/2 + 0.5 * c/2) for c = 15 s, 30 s, 60 s, 60 s, ...
  assert.deepEqual(gaps.slice(0, 5), [11250, 22500, 45000, 45000, 45000]);
  assert.equal(errors(ctx).length, 1);
  assert.deepEqual(ctx.failed.length, 1);
  assert.equal(ctx.client.transport, 'sse');
  assert.equal(ctx.client.state, 'connected');
});

test('a probe that opens but never sends `connected` gives up after connectTimeout', async () => {
  const ctx = await onSse();
  await ctx.clock.tick(11250);
  const probe = ctx.WebSocket.instances[1];
  probe.open();
  await ctx.clock.tick(4999);
  assert.equal(probe.closedWith, null);
  await ctx.clock.tick(1);
  assert.equal(probe.closedWith, 1000);
  assert.equal(ctx.es.closed, false);
  assert.equal(errors(ctx).length, 1);
});

for (const [what, fire] of [
  ['online', (ctx) => ctx.win.dispatch('online')],
  ['visibilitychange (visible)', (ctx) => ctx.doc.dispatch('visibilitychange')],
]) {
  test(`${what} probes at once`, async () => {
    const ctx = await onSse();
    await ctx.clock.tick(1000);
    fire(ctx);
    await ctx.clock.tick(0);
    assert.equal(ctx.WebSocket.instances.length, 2);
    ctx.WebSocket.instances[1].drop(1006);
    await ctx.clock.tick(0);
    fire(ctx); // not again and again: at most one probe per connectTimeout
    await ctx.clock.tick(0);
    assert.equal(ctx.WebSocket.instances.length, 2);
    await ctx.clock.tick(5000);
    fire(ctx);
    await ctx.clock.tick(0);
    assert.equal(ctx.WebSocket.instances.length, 3);
  });
}

test('a hidden page does not probe on visibilitychange', async () => {
  const ctx = await onSse();
  ctx.doc.visibilityState = 'hidden';
  ctx.doc.dispatch('visibilitychange');
  await ctx.clock.tick(0);
  assert.equal(ctx.WebSocket.instances.length, 1);
});

test('after a buffering step-down to long-poll, a probe brings the stream back from the positions', async () => {
  const ctx = setup({transports: ['stream', 'longpoll'], maxPingDelay: 1e9});
  const r = recorder();
  ctx.client.subscribe('a', r.on());
  await ctx.clock.tick(0);
  ctx.http.last().stream(); // buffered: no `connected` frame
  await ctx.clock.tick(5000);
  assert.deepEqual(ctx.failed.map((e) => [e.transport, e.next, e.reason, e.detail]),
    [['stream', 'longpoll', 'server not responding', 'no connected frame within 5000 ms (a buffering proxy?)']]);
  ctx.http.last().answer([F.subscribed('a', 0), F.message('a', 1, {text: 'a1'})]);
  await ctx.clock.tick(0);
  assert.equal(ctx.client.transport, 'longpoll');
  const streams = () => ctx.http.requests.filter((q) => q.transport === 'stream');
  await ctx.clock.tick(11250);
  assert.equal(streams().length, 2, 'the probe');
  const probe = streams()[1];
  assert.equal(probe.cursor, 'a=e1:1');
  const held = ctx.http.requests.filter((q) => q.transport === 'longpoll').pop();
  held.answer([F.message('a', 2, {text: 'a2'})]);
  await ctx.clock.tick(0);
  const p = probe.stream();
  p.write(F.connected('stream'), F.message('a', 2, {text: 'a2 again'})); // ignored: a probe only listens for `connected`
  await ctx.clock.tick(0);
  assert.equal(probe.aborted, true);
  assert.equal(ctx.http.requests.filter((q) => q.transport === 'longpoll').pop().aborted, true);
  const live = streams()[2];
  assert.equal(live.cursor, 'a=e1:2');
  live.stream().write(F.connected('stream'), F.message('a', 3, {text: 'a3'}));
  await ctx.clock.tick(0);
  assert.deepEqual(r.got, ['a:a1', 'a:a2', 'a:a3']);
  assert.equal(ctx.client.transport, 'stream');
  assert.deepEqual(errors(ctx).map((e) => e.reason), ['connect_timeout']);
});

test('a connection lost while a probe runs stops the probe', async () => {
  const ctx = await onSse();
  await ctx.clock.tick(11250);
  const probe = ctx.WebSocket.instances[1];
  ctx.es.fail();
  await ctx.clock.tick(0);
  assert.equal(probe.closedWith, 1000);
});

test('close() and a new subscribe() start from the best transport again', async () => {
  const ctx = await onSse();
  ctx.client.close();
  ctx.client.subscribe('b', () => {});
  await ctx.clock.tick(0);
  assert.deepEqual(ctx.attempts, ['websocket', 'sse', 'websocket']);
  assert.equal(ctx.client.transport, 'websocket');
});

test('on the best transport, nothing is probed: not later, not on online or visibilitychange', async () => {
  const ctx = setup({websocketUrl: 'ws://x/ws', maxPingDelay: 1e9});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.WebSocket.instances[0].open();
  ctx.WebSocket.instances[0].frame(F.connected('websocket'));
  ctx.win.dispatch('online');
  ctx.doc.dispatch('visibilitychange');
  await ctx.clock.tick(600000);
  assert.equal(ctx.WebSocket.instances.length, 1);
  assert.deepEqual(ctx.attempts, ['websocket']);
});

test('a forced transport never probes', async () => {
  const ctx = setup({transport: 'longpoll', websocketUrl: 'ws://x/ws'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.subscribed('a', 0)]);
  await ctx.clock.tick(0);
  ctx.win.dispatch('online');
  for (let i = 0; i < 10; i++) {
    await ctx.clock.tick(30000);
    ctx.http.last().answer([]);
  }
  assert.deepEqual(new Set(ctx.attempts), new Set(['longpoll']));
});
