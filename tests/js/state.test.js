'use strict';
// The connection state machine: disconnected -> connecting -> connected, and
// back; one event per move, none for a retry or a replaced connection.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, frames: F} = require('./fakes.js');

/** Every 0.1 state event with the state the client reported while it ran. */
function watch(client) {
  const seen = [];
  for (const name of ['connecting', 'connected', 'disconnected']) {
    client.on(name, (e) => seen.push(`${name}/${client.state}/${e.reason || ''}`));
  }
  return seen;
}

test('each move fires one state event, then its 0.1 event, with client.state already moved', async () => {
  const ctx = setup({transport: 'stream'});
  const seen = watch(ctx.client);
  const states = [];
  ctx.client.on('state', (e) => states.push([e.from, e.to, e.reason, e.detail, e.transport, ctx.client.state]));
  assert.equal(ctx.client.state, 'disconnected');
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().fail(); // a failed attempt while connecting: no event
  await ctx.clock.tick(750);
  assert.equal(ctx.client.state, 'connecting');
  let s = ctx.http.last().stream();
  s.write(F.connected('stream'), F.subscribed('a', 0), F.reconnect()); // replaced while connected: no event
  await ctx.clock.tick(0);
  s = ctx.http.last().stream();
  s.write(F.connected('stream'));
  await ctx.clock.tick(0);
  s.end(); // lost
  await ctx.clock.tick(999);
  assert.equal(ctx.client.state, 'connected', 'not yet: reconnectingDelay');
  await ctx.clock.tick(1);
  assert.equal(ctx.client.state, 'reconnecting');
  ctx.http.last().stream().write(F.connected('stream'));
  await ctx.clock.tick(0);
  ctx.client.close();
  assert.deepEqual(states, [
    ['disconnected', 'connecting', 'starting', null, 'stream', 'connecting'],
    ['connecting', 'connected', 'connected over stream', null, 'stream', 'connected'],
    ['connected', 'reconnecting', 'connection closed by the server', 'closed', 'stream', 'reconnecting'],
    ['reconnecting', 'connected', 'connected over stream', null, 'stream', 'connected'],
    ['connected', 'disconnected', 'closed', null, 'stream', 'disconnected'],
  ]);
  assert.deepEqual(seen, [
    'connecting/connecting/', 'connected/connected/', 'connecting/reconnecting/connection closed by the server',
    'connected/connected/', 'disconnected/disconnected/closed',
  ]);
  assert.equal(ctx.http.requests.length, 4);
});

test('a loss repaired within reconnectingDelay never shows; the 0.1 connected event marks it', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.WebSocket.instances[0].open();
  ctx.WebSocket.instances[0].frame(F.connected('websocket'), F.subscribed('a', 0));
  await ctx.clock.tick(10000);
  ctx.WebSocket.instances[0].drop(1006);
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'connected');
  await ctx.clock.tick(250); // it lived: the first retry within minReconnectDelay
  assert.equal(ctx.WebSocket.instances.length, 2);
  ctx.WebSocket.instances[1].open();
  ctx.WebSocket.instances[1].frame(F.connected('websocket'));
  await ctx.clock.tick(5000);
  assert.deepEqual(ctx.states, ['disconnected>connecting (starting)', 'connecting>connected (connected over websocket)']);
  assert.deepEqual(ctx.events.map((e) => e.event), ['connecting', 'connected', 'error', 'connected']);
  assert.equal(ctx.events[2].reason, 'connection lost');
});

test('reconnectingDelay is an option: 0 shows every loss at once', async () => {
  const ctx = setup({transport: 'stream', reconnectingDelay: 0});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().stream().write(F.connected('stream'));
  await ctx.clock.tick(0);
  ctx.http.requests[0]._controller.error(new TypeError('network')); // the body breaks off
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'reconnecting');
  assert.deepEqual(ctx.states.slice(2), ['connected>reconnecting (connection lost)']);
});

test('the first connection never shows as reconnecting, however often it fails', async () => {
  const ctx = setup({transport: 'poll'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  for (let i = 0; i < 5; i++) {
    const n = ctx.http.requests.length;
    ctx.http.last().fail();
    while (ctx.http.requests.length === n) await ctx.clock.tick(10);
  }
  assert.equal(ctx.client.state, 'connecting');
  assert.deepEqual(ctx.states, ['disconnected>connecting (starting)']);
  assert.ok(ctx.events.filter((e) => e.event === 'error').every((e) => e.reason === 'blocked or unreachable'));
});

test('client.state is read-only', () => {
  const {client} = setup({transport: 'poll'});
  assert.throws(() => { client.state = 'connected'; }, TypeError);
  assert.equal(client.state, 'disconnected');
});

test('an error listener that calls close() leaves the client disconnected, with nothing pending', async () => {
  const ctx = setup({transport: 'stream'});
  const seen = watch(ctx.client);
  ctx.client.on('error', () => ctx.client.close());
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().fail();
  await ctx.clock.tick(0);
  assert.deepEqual(seen, ['connecting/connecting/', 'disconnected/disconnected/closed']);
  assert.deepEqual(ctx.states, ['disconnected>connecting (starting)', 'connecting>disconnected (closed)']);
  assert.equal(ctx.clock.timers.size, 0);
  await ctx.clock.tick(60000);
  assert.equal(ctx.http.requests.length, 1);
  ctx.client.subscribe('b', () => {});
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'connecting', 'usable again');
  assert.deepEqual(ctx.http.last().channels, ['b']);
});

test('a state listener that calls close() on connecting or reconnecting leaves nothing running', async () => {
  for (const when of ['connecting', 'reconnecting']) {
    const ctx = setup({transport: 'stream'});
    ctx.client.on('state', (e) => { if (e.to === when) ctx.client.close(); });
    ctx.client.subscribe('a', () => {});
    await ctx.clock.tick(0);
    if (when === 'reconnecting') {
      ctx.http.last().stream().write(F.connected('stream'));
      await ctx.clock.tick(0);
      ctx.http.requests[0]._controller.error(new TypeError('cut'));
      await ctx.clock.tick(0);
      ctx.http.last().fail(); // the retry fails too
      await ctx.clock.tick(1000);
    }
    const requests = ctx.http.requests.length;
    assert.equal(ctx.client.state, 'disconnected', when);
    await ctx.clock.tick(60000);
    assert.equal(ctx.http.requests.length, requests, `${when}: nothing after close()`);
    assert.equal(ctx.clock.timers.size, 0, when);
    // The 0.1 event comes after `state`: not at all once a state listener closed.
    assert.equal(ctx.events.filter((e) => e.event === 'connecting').length, when === 'connecting' ? 0 : 1, when);
  }
});
