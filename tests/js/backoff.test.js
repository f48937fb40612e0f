'use strict';
// Full-jitter exponential backoff, and the immediate retry when the browser
// comes back online.

const test = require('node:test');
const assert = require('node:assert/strict');
const {TorChannels, setup, frames: F} = require('./fakes.js');

const {backoff} = TorChannels;

test('backoff stays within [min, min(max, min + min * 2^attempt)]', () => {
  const min = 500, max = 20000;
  for (let attempt = 0; attempt < 40; attempt++) {
    const ceiling = Math.min(max, min + min * 2 ** attempt);
    assert.equal(backoff(attempt, min, max, () => 0), min, `attempt ${attempt}, random 0`);
    const high = backoff(attempt, min, max, () => 0.9999999);
    assert.ok(high <= ceiling && high >= ceiling - 1, `attempt ${attempt}: ${high} vs ${ceiling}`);
    for (let i = 0; i < 50; i++) {
      const d = backoff(attempt, min, max);
      assert.ok(d >= min && d <= ceiling, `attempt ${attempt}: ${d}`);
    }
  }
});

test('backoff is jittered: the same attempt gives spread-out delays', () => {
  const delays = new Set();
  for (let i = 0; i < 100; i++) delays.add(backoff(6, 500, 20000));
  assert.ok(delays.size > 50, `only ${delays.size} distinct delays`);
  assert.equal(backoff(3, 500, 20000, () => 0.5), 500 + 2000);
});

/** The pause before the pending reconnect, read off the fake clock. */
function pause(clock) {
  const t = clock.pending()[0];
  return t ? t.at - clock.now : null;
}

test('the client waits longer after each failure, and starts over once connected', async () => {
  const random = () => 0.75;
  const {clock, http, client} = setup({transport: 'longpoll', random, minReconnectDelay: 100, maxReconnectDelay: 1000});
  client.subscribe('a', () => {});
  await clock.tick(0);
  const pauses = [];
  for (let i = 0; i < 6; i++) {
    http.last().fail();
    await clock.tick(0);
    pauses.push(pause(clock));
    await clock.tick(pauses[i]);
  }
  // 100 + floor(0.75 * min(1000, 100 * 2^n)), at most 1000
  assert.deepEqual(pauses, [175, 250, 400, 700, 850, 850]);
  http.last().answer([F.subscribed('a', 0)]);
  await clock.tick(0);
  clock.timers.clear(); // drop the next long-poll's deadline
  http.last().fail();
  await clock.tick(0);
  assert.equal(pause(clock), 175, 'attempts reset after a successful connection');
});

test('the reconnect pause uses the injected random source', async () => {
  for (const [random, expected] of [[() => 0, 500], [() => 0.999, 999]]) {
    const {clock, http, client} = setup({transport: 'poll', random});
    client.subscribe('a', () => {});
    await clock.tick(0);
    http.last().fail();
    await clock.tick(0);
    assert.equal(pause(clock), expected);
  }
});

test('an online event retries at once instead of waiting out the pause', async () => {
  const {clock, http, client, win} = setup({transport: 'stream', minReconnectDelay: 10000, maxReconnectDelay: 60000});
  client.subscribe('a', () => {});
  await clock.tick(0);
  const s = http.last().stream();
  s.write(F.connected('stream'), F.subscribed('a', 0), F.message('a', 1));
  await clock.tick(0);
  s.end();
  await clock.tick(0);
  await clock.tick(1000);
  assert.equal(client.state, 'reconnecting');
  assert.equal(http.requests.length, 1, 'still waiting out the pause');
  win.dispatch('online');
  await clock.tick(0);
  assert.equal(http.requests.length, 2);
  assert.equal(http.last().cursor, 'a=e1:1');
  assert.equal(clock.now, 1000);
});

test('online while connected changes nothing; the listener goes with close()', async () => {
  const {clock, WebSocket, client, win} = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  assert.equal((win.listeners.online || []).length, 0, 'no listener before connecting');
  client.subscribe('a', () => {});
  await clock.tick(0);
  WebSocket.instances[0].open();
  WebSocket.instances[0].frame(F.connected('websocket'));
  assert.equal(win.listeners.online.length, 1);
  win.dispatch('online');
  await clock.tick(0);
  assert.equal(WebSocket.instances.length, 1);
  client.close();
  assert.equal(win.listeners.online.length, 0);
});

test('the first retry after a connection that lived comes within minReconnectDelay; then the backoff, capped at 10 s', async () => {
  for (const [random, first] of [[() => 0, 0], [() => 0.999, 499]]) {
    const {clock, http, client} = setup({transport: 'stream', random, reconnectingDelay: 0});
    client.subscribe('a', () => {});
    await clock.tick(0);
    const s = http.last().stream();
    s.write(F.connected('stream'), F.subscribed('a', 0));
    await clock.tick(2000); // lived 2 s
    s.end();
    if (first) {
      await clock.tick(first - 1);
      assert.equal(http.requests.length, 1);
    }
    await clock.tick(first ? 1 : 0);
    assert.equal(http.requests.length, 2, `retried after ${first} ms`);
    const pauses = [];
    for (let i = 0; i < 8; i++) {
      http.last().fail();
      await clock.tick(0);
      pauses.push(pause(clock));
      await clock.tick(pauses[i]);
    }
    if (random() === 0) assert.deepEqual(pauses, [500, 500, 500, 500, 500, 500, 500, 500]);
    else assert.deepEqual(pauses, [999, 1499, 2498, 4496, 8492, 10000, 10000, 10000]);
  }
});

test('a connection that lived under 2 s gets the backoff, not the quick first retry', async () => {
  const {clock, http, client} = setup({transport: 'stream', random: () => 0});
  client.subscribe('a', () => {});
  await clock.tick(0);
  const s = http.last().stream();
  s.write(F.connected('stream'), F.subscribed('a', 0));
  await clock.tick(1999);
  s.end();
  await clock.tick(0);
  assert.equal(pause(clock), 500);
});

test('offline gives the connection up at once, shows as reconnecting (offline), and online brings it back', async () => {
  const {clock, WebSocket, client, win, states, events} = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  client.subscribe('a', () => {});
  await clock.tick(0);
  WebSocket.instances[0].open();
  WebSocket.instances[0].frame(F.connected('websocket'), F.subscribed('a', 0), F.message('a', 1));
  await clock.tick(3000);
  win.dispatch('offline');
  assert.equal(WebSocket.instances[0].closedWith, 1000, 'given up');
  assert.equal(events.filter((e) => e.event === 'error').pop().reason, 'offline');
  await clock.tick(250);
  WebSocket.instances[1].drop(1006); // no network
  await clock.tick(750);
  assert.deepEqual(states.slice(2), ['connected>reconnecting (offline)']);
  win.dispatch('online');
  await clock.tick(0);
  assert.equal(WebSocket.instances.length, 3, 'at once');
  WebSocket.instances[2].open();
  assert.equal(WebSocket.instances[2].sent[0].cursor, 'a=e1:1');
  WebSocket.instances[2].frame(F.connected('websocket'));
  assert.equal(client.state, 'connected');
});

test('offline while disconnected or between attempts changes nothing', async () => {
  const {clock, http, client, win} = setup({transport: 'poll'});
  win.dispatch('offline');
  client.subscribe('a', () => {});
  await clock.tick(0);
  http.last().fail();
  await clock.tick(0);
  win.dispatch('offline'); // waiting out a pause: nothing to give up
  await clock.tick(0);
  assert.equal(http.requests.length, 1);
  assert.equal(client.state, 'connecting');
});
