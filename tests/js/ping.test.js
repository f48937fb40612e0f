'use strict';
// Dead connections: the `connected` frame gives the ping interval; silence
// longer than that plus maxPingDelay drops the connection and reconnects.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, frames: F} = require('./fakes.js');

test('websocket: missing pings reconnect; pings and frames keep it alive', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws', maxPingDelay: 2000});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  const ws = ctx.WebSocket.instances[0];
  ws.open();
  ws.frame(F.connected('websocket', 1), F.subscribed('a', 0));
  await ctx.clock.tick(2900);
  ws.frame(F.ping());
  await ctx.clock.tick(2900);
  ws.frame(F.message('a', 1));
  await ctx.clock.tick(2999);
  assert.equal(ws.closedWith, null, 'alive while something arrives every 3 s');
  await ctx.clock.tick(1);
  assert.equal(ws.closedWith, 1000);
  assert.equal(ctx.client.state, 'connecting');
  assert.equal(ctx.events.find((e) => e.event === 'error').reason, 'ping_timeout');
  await ctx.clock.tick(750);
  assert.equal(ctx.WebSocket.instances.length, 2);
  ctx.WebSocket.instances[1].open();
  assert.equal(ctx.WebSocket.instances[1].sent[0].cursor, 'a=e1:1');
});

test('stream: missing pings reconnect with the cursor', async () => {
  const ctx = setup({transport: 'stream'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  const req = ctx.http.last();
  req.stream().write(F.connected('stream', 15), F.subscribed('a', 2));
  await ctx.clock.tick(24999); // 15 s + the default maxPingDelay of 10 s
  assert.equal(req.aborted, false);
  await ctx.clock.tick(1);
  assert.equal(req.aborted, true);
  await ctx.clock.tick(750);
  assert.equal(ctx.http.requests.length, 2);
  assert.equal(ctx.http.last().cursor, 'a=e1:2');
});

test('sse: pings are invisible comments, so only a ping event arms the watchdog', async () => {
  const ctx = setup({transport: 'sse', maxPingDelay: 1000});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  const es = ctx.EventSource.instances[0];
  es.frame(F.connected('sse', 1), F.subscribed('a', 0));
  await ctx.clock.tick(60000);
  assert.equal(es.closed, false, 'a quiet channel is no dead connection');
  es.frame(F.ping());
  await ctx.clock.tick(2000);
  assert.equal(es.closed, true);
});

test('longpoll: an answer that never comes is abandoned and asked again', async () => {
  const ctx = setup({transport: 'longpoll', requestTimeout: 5000});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.subscribed('a', 1)]);
  await ctx.clock.tick(0);
  const held = ctx.http.last();
  await ctx.clock.tick(29999); // 25 s hold + 5 s
  assert.equal(held.aborted, false);
  await ctx.clock.tick(1);
  assert.equal(held.aborted, true);
  await ctx.clock.tick(750);
  assert.equal(ctx.http.last().cursor, 'a=e1:1');
});
