'use strict';
// The connection state machine: disconnected -> connecting -> connected, and
// back; one event per move, none for a retry or a replaced connection.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, frames: F} = require('./fakes.js');

/** Every state event with the state the client reported while it ran. */
function watch(client) {
  const seen = [];
  for (const name of ['connecting', 'connected', 'disconnected']) {
    client.on(name, (e) => seen.push(`${name}/${client.state}/${e.reason || ''}`));
  }
  return seen;
}

test('each move fires its event once, with client.state already moved', async () => {
  const ctx = setup({transport: 'stream'});
  const seen = watch(ctx.client);
  assert.equal(ctx.client.state, 'disconnected');
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().fail(); // a failed attempt while connecting: no event
  await ctx.clock.tick(750);
  let s = ctx.http.last().stream();
  s.write(F.connected('stream'), F.subscribed('a', 0), F.reconnect()); // replaced while connected: no event
  await ctx.clock.tick(0);
  s = ctx.http.last().stream();
  s.write(F.connected('stream'));
  await ctx.clock.tick(0);
  s.end(); // lost
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'connecting');
  await ctx.clock.tick(750);
  ctx.http.last().stream().write(F.connected('stream'));
  await ctx.clock.tick(0);
  ctx.client.close();
  assert.deepEqual(seen, [
    'connecting/connecting/', 'connected/connected/', 'connecting/connecting/closed',
    'connected/connected/', 'disconnected/disconnected/closed',
  ]);
  assert.equal(ctx.http.requests.length, 4);
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
  assert.equal(ctx.clock.timers.size, 0);
  await ctx.clock.tick(60000);
  assert.equal(ctx.http.requests.length, 1);
  ctx.client.subscribe('b', () => {});
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'connecting', 'usable again');
  assert.deepEqual(ctx.http.last().channels, ['b']);
});
