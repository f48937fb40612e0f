'use strict';
// Transport negotiation: websocket -> sse -> stream -> longpoll -> poll,
// stepping down only while a transport has never worked, and from a stream
// to long-poll when a proxy buffers it.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, frames: F} = require('./fakes.js');

const tried = (ctx) => ctx.attempts;

test('each transport that fails before connecting hands over to the next, at once', async () => {
  const ctx = (setup({websocketUrl: 'ws://x/ws'}));
  const {clock, WebSocket, EventSource, http, client, events} = ctx;
  client.subscribe('a', () => {});
  await clock.tick(0);
  WebSocket.instances[0].drop(1006); // the upgrade failed
  await clock.tick(0);
  EventSource.instances[0].fail();
  await clock.tick(0);
  http.last().fail(); // stream: network error
  await clock.tick(0);
  http.last().error(502); // longpoll: a proxy error
  await clock.tick(0);
  assert.deepEqual(tried(ctx), ['websocket', 'sse', 'stream', 'longpoll', 'poll']);
  assert.equal(clock.now, 0, 'no backoff pause while stepping down');
  http.last().answer([F.subscribed('a', 0)]);
  await clock.tick(0);
  assert.equal(client.state, 'connected');
  assert.equal(client.transport, 'poll');
  assert.deepEqual(events.filter((e) => e.event !== 'error').map((e) => [e.event, e.transport]),
    [['connecting', 'websocket'], ['connected', 'poll']]);
  assert.deepEqual(events.filter((e) => e.event === 'error').map((e) => e.transport),
    ['websocket', 'sse', 'stream', 'longpoll']);
});

test('when every transport failed, it starts over from the first after a pause', async () => {
  const ctx = (setup({websocketUrl: 'ws://x/ws', transports: ['websocket', 'longpoll']}));
  const {clock, WebSocket, http, client} = ctx;
  client.subscribe('a', () => {});
  await clock.tick(0);
  WebSocket.instances[0].drop(1006);
  await clock.tick(0);
  http.last().fail();
  await clock.tick(749);
  assert.deepEqual(tried(ctx), ['websocket', 'longpoll']);
  await clock.tick(1);
  assert.deepEqual(tried(ctx), ['websocket', 'longpoll', 'websocket']);
});

test('a transport that worked is retried after a pause, not given up', async () => {
  const ctx = (setup({websocketUrl: 'ws://x/ws'}));
  const {clock, WebSocket, client} = ctx;
  client.subscribe('a', () => {});
  await clock.tick(0);
  WebSocket.instances[0].open();
  WebSocket.instances[0].frame(F.connected('websocket'));
  WebSocket.instances[0].drop(1006);
  await clock.tick(750);
  assert.deepEqual(tried(ctx), ['websocket', 'websocket']);
  WebSocket.instances[1].drop(1006); // fails again before connecting: still the one that worked
  await clock.tick(1000); // 500 + floor(0.5 * 1000): the second pause
  assert.deepEqual(tried(ctx), ['websocket', 'websocket', 'websocket']);
});

test('a forced transport never steps down', async () => {
  const ctx = (setup({transport: 'stream'}));
  const {clock, http, client} = ctx;
  client.subscribe('a', () => {});
  await clock.tick(0);
  http.last().fail();
  await clock.tick(750);
  http.last().stream(); // no `connected` frame: would be a buffering proxy
  await clock.tick(5000);
  await clock.tick(20000);
  assert.ok(tried(ctx).length >= 4, tried(ctx).join());
  assert.deepEqual(new Set(tried(ctx)), new Set(['stream']));
});

test('the transports option limits and orders the candidates', async () => {
  const ctx = (setup({transports: ['poll', 'sse']}));
  const {clock, http, client} = ctx;
  client.subscribe('a', () => {});
  await clock.tick(0);
  http.last().fail();
  await clock.tick(0);
  assert.deepEqual(tried(ctx), ['poll', 'sse']);
});

test('a server without the transport (unknown_transport) is stepped past even after it worked', async () => {
  const ctx = (setup({transports: ['stream', 'longpoll']}));
  const {clock, http, client, events} = ctx;
  client.subscribe('a', () => {});
  await clock.tick(0);
  const s = http.last().stream();
  s.write(F.connected('stream'));
  await clock.tick(0);
  s.end();
  await clock.tick(750);
  http.last().error(400, 'unknown_transport');
  await clock.tick(0);
  assert.deepEqual(tried(ctx), ['stream', 'stream', 'longpoll']);
  assert.equal(events.filter((e) => e.event === 'error').pop().code, 'unknown_transport');
});

test('a 503 from a server shutting down is retried on the same transport after a pause', async () => {
  const ctx = setup({transports: ['stream', 'longpoll']});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().error(503, 'shutting_down');
  await ctx.clock.tick(750);
  assert.deepEqual(ctx.attempts, ['stream', 'stream']);
});

test('any other 400 is retried on the same transport after a pause, and reported', async () => {
  const ctx = (setup({transports: ['stream', 'longpoll']}));
  const {clock, http, client, events} = ctx;
  client.subscribe('a', () => {});
  await clock.tick(0);
  http.last().error(400, 'too_many_channels', 'more than 64 channels');
  await clock.tick(750);
  assert.deepEqual(tried(ctx), ['stream', 'stream']);
  const error = events.find((e) => e.event === 'error');
  assert.equal(error.type, 'transport');
  assert.equal(error.code, 'too_many_channels');
  assert.equal(error.message, 'more than 64 channels');
});

test('a WebSocket constructor that throws counts as a failed transport', async () => {
  const ctx = setup({websocketUrl: 'ws://x/ws', WebSocket: function () { throw new SyntaxError('bad url'); }});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  assert.equal(ctx.EventSource.instances.length, 1);
  assert.equal(ctx.client.transport, 'sse');
});

// A proxy that buffers streamed responses: no `connected` frame arrives.

test('sse without a connected frame in time steps down to longpoll', async () => {
  const ctx = (setup({connectTimeout: 3000, websocketUrl: 'ws://x/ws', transports: ['sse', 'stream', 'longpoll', 'poll']}));
  const {clock, EventSource, http, client} = ctx;
  client.subscribe('a', () => {});
  await clock.tick(2999);
  assert.deepEqual(tried(ctx), ['sse']);
  await clock.tick(1);
  assert.equal(EventSource.instances[0].closed, true);
  assert.deepEqual(tried(ctx), ['sse', 'longpoll'], 'skips stream: it would be buffered too');
  http.last().answer([F.subscribed('a', 0)]);
  await clock.tick(0);
  assert.equal(client.transport, 'longpoll');
  assert.equal(client.state, 'connected');
});

test('a buffered stream (frames held back) is abandoned for longpoll', async () => {
  const ctx = (setup({transports: ['stream', 'longpoll']}));
  const {clock, http} = ctx;
  ctx.client.subscribe('a', () => {});
  await clock.tick(0);
  const req = http.last();
  req.stream(); // headers came, the body is held by the proxy
  await clock.tick(5000);
  assert.equal(req.aborted, true);
  assert.deepEqual(tried(ctx), ['stream', 'longpoll']);
});

test('a stream that worked before still steps down when it is buffered', async () => {
  const ctx = (setup({transports: ['stream', 'longpoll']}));
  const {clock, http} = ctx;
  ctx.client.subscribe('a', () => {});
  await clock.tick(0);
  const s = http.last().stream();
  s.write(F.connected('stream'), F.subscribed('a', 0));
  await clock.tick(0);
  s.write(F.reconnect());
  await clock.tick(0);
  http.last().stream(); // this time the proxy buffers
  await clock.tick(5000);
  assert.deepEqual(tried(ctx), ['stream', 'stream', 'longpoll']);
  assert.equal(http.last().cursor, 'a=e1:0');
});

test('a websocket that never says connected hands over to the next transport', async () => {
  const ctx = (setup({websocketUrl: 'ws://x/ws'}));
  const {clock, WebSocket} = ctx;
  ctx.client.subscribe('a', () => {});
  await clock.tick(0);
  WebSocket.instances[0].open();
  await clock.tick(5000);
  assert.equal(WebSocket.instances[0].closedWith, 1000);
  assert.deepEqual(tried(ctx), ['websocket', 'sse']);
});
