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
  assert.equal(ctx.client.state, 'connected', 'for reconnectingDelay');
  assert.equal(ctx.events.find((e) => e.event === 'error').reason, 'ping_timeout');
  await ctx.clock.tick(250); // it lived: the first retry within minReconnectDelay (0.5 * 500)
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

test('sse: the watchdog runs from the connected event; ping events keep the connection alive', async () => {
  const ctx = setup({transport: 'sse', maxPingDelay: 1000});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  const es = ctx.EventSource.instances[0];
  assert.ok(es.listeners.ping, 'listens to ping events');
  es.frame(F.connected('sse', 1), F.subscribed('a', 3));
  await ctx.clock.tick(1999);
  assert.equal(es.closed, false);
  await ctx.clock.tick(1);
  assert.equal(es.closed, true, 'no ping within 1 s + maxPingDelay: dead');
  assert.equal(ctx.events.find((e) => e.event === 'error').reason, 'ping_timeout');
  await ctx.clock.tick(750);
  const next = ctx.EventSource.instances[1];
  assert.equal(next.cursor, 'a=e1:3');
  next.frame(F.connected('sse', 1));
  for (let i = 0; i < 5; i++) {
    await ctx.clock.tick(1900);
    next.frame(F.ping()); // as the server sends it: event: ping, data {"type":"ping"}
  }
  assert.equal(next.closed, false, 'alive while pings come');
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
