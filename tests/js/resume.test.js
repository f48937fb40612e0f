'use strict';
// Resume: every (re)connect and poll carries each channel's own position,
// tracked from the frames exactly as docs/protocol.md says.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, recorder, parseCursor, frames: F} = require('./fakes.js');

test('stream resumes every channel from its own position after a drop', async () => {
  const {clock, http, client, events} = setup({transport: 'stream'});
  client.subscribe('a', () => {});
  client.subscribe('b', () => {});
  await clock.tick(0);
  const s = http.last().stream();
  s.write(F.connected('stream'), F.subscribed('a', 0), F.subscribed('b', 5, [], 'zz'),
    F.message('a', 1), F.message('a', 2), F.message('a', 3), F.message('b', 6, {}, 'zz'));
  await clock.tick(0);
  s.end(); // the server went away without a reconnect frame: back off
  await clock.tick(0);
  assert.equal(client.state, 'connected', 'for reconnectingDelay');
  assert.equal(http.requests.length, 1);
  await clock.tick(750); // 500 + floor(0.5 * 500)
  assert.equal(http.requests.length, 2);
  const again = http.last();
  assert.deepEqual(again.channels, ['a', 'b']);
  assert.deepEqual(again.cursorMap(), {a: 'e1:3', b: 'zz:6'});
  assert.deepEqual(events.map((e) => e.event), ['connecting', 'connected', 'error']);
  await clock.tick(250); // not connected again after reconnectingDelay
  assert.equal(client.state, 'reconnecting');
  assert.deepEqual(events.map((e) => e.event), ['connecting', 'connected', 'error', 'connecting']);
});

test('a reset forgets the position; the following subscribed frame sets it', async () => {
  const {clock, http, client} = setup({transport: 'longpoll'});
  client.subscribe('a', () => {});
  client.subscribe('b', () => {});
  await clock.tick(0);
  http.last().answer([F.subscribed('a', 3), F.subscribed('b', 9)]);
  await clock.tick(0);
  assert.deepEqual(http.last().cursorMap(), {a: 'e1:3', b: 'e1:9'});
  http.last().answer([F.reset('a', 'epoch_changed')]);
  await clock.tick(0);
  assert.deepEqual(http.last().cursorMap(), {b: 'e1:9'});
  http.last().answer([F.reset('b'), F.subscribed('b', 2, [], 'e2')]);
  await clock.tick(0);
  assert.deepEqual(http.last().cursorMap(), {b: 'e2:2'});
});

test('websocket resumes with the cursor in its subscribe command', async () => {
  const {clock, WebSocket, client} = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  client.subscribe('a', () => {});
  client.subscribe('b', () => {});
  await clock.tick(0);
  const ws = WebSocket.instances[0];
  ws.open();
  ws.frame(F.connected('websocket'), F.subscribed('a', 0), F.subscribed('b', 0), F.message('b', 1));
  ws.drop(1006);
  await clock.tick(750);
  assert.equal(WebSocket.instances.length, 2);
  const next = WebSocket.instances[1];
  next.open();
  assert.deepEqual(next.sent, [{type: 'subscribe', channels: ['a', 'b'], cursor: 'a=e1:0,b=e1:1'}]);
});

for (const [name, code] of [['going away', 1001], ['slow consumer', 4001]]) {
  test(`websocket close ${code} (${name}) reconnects at once with positions`, async () => {
    const {clock, WebSocket, client, events} = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
    client.subscribe('a', () => {});
    await clock.tick(0);
    const ws = WebSocket.instances[0];
    ws.open();
    ws.frame(F.connected('websocket'), F.subscribed('a', 0), F.message('a', 1));
    ws.drop(code);
    await clock.tick(0);
    assert.equal(WebSocket.instances.length, 2);
    WebSocket.instances[1].open();
    assert.equal(WebSocket.instances[1].sent[0].cursor, 'a=e1:1');
    assert.ok(!events.some((e) => e.event === 'error'), 'a planned reconnect is no error');
  });
}

test('websocket close 1000 from the server reconnects after a backoff pause', async () => {
  const {clock, WebSocket, client} = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  client.subscribe('a', () => {});
  await clock.tick(0);
  WebSocket.instances[0].open();
  WebSocket.instances[0].frame(F.connected('websocket'));
  WebSocket.instances[0].drop(1000);
  await clock.tick(749);
  assert.equal(WebSocket.instances.length, 1);
  await clock.tick(1);
  assert.equal(WebSocket.instances.length, 2);
});

test('a reconnect frame reconnects at once with the cursor (sse)', async () => {
  const {clock, EventSource, client, events} = setup({transport: 'sse'});
  client.subscribe('a', () => {});
  await clock.tick(0);
  const es = EventSource.instances[0];
  es.frame(F.connected('sse'), F.subscribed('a', 0), F.message('a', 1), F.reconnect('byte_limit'));
  assert.equal(es.closed, true);
  assert.equal(EventSource.instances.length, 2);
  assert.equal(EventSource.instances[1].cursor, 'a=e1:1');
  assert.equal(client.state, 'connected', 'a planned reconnect is no state change');
  EventSource.instances[1].frame(F.connected('sse'), F.message('a', 2));
  assert.deepEqual(events.map((e) => e.event), ['connecting', 'connected']);
  assert.equal(clock.now, 0);
});

test('sse closes a failed EventSource and resumes itself, with the cursor in the URL', async () => {
  const {clock, EventSource, client} = setup({transport: 'sse'});
  client.subscribe('a', () => {});
  await clock.tick(0);
  const es = EventSource.instances[0];
  es.frame(F.connected('sse'), F.subscribed('a', 0), F.message('a', 1), F.message('a', 2));
  es.fail();
  assert.equal(es.closed, true, 'the browser must not reconnect on its own');
  await clock.tick(750);
  assert.equal(EventSource.instances.length, 2);
  assert.equal(EventSource.instances[1].cursor, 'a=e1:2');
});

test('stream reconnect frame: the next request resumes at once', async () => {
  const {clock, http, client} = setup({transport: 'stream'});
  const r = recorder();
  client.subscribe('a', r.on());
  await clock.tick(0);
  const first = http.last();
  const s = first.stream();
  s.write(F.connected('stream'), F.subscribed('a', 0), F.message('a', 1, {text: '1'}), F.reconnect());
  await clock.tick(0);
  assert.equal(first.aborted, true);
  assert.equal(http.requests.length, 2);
  assert.equal(http.last().cursor, 'a=e1:1');
  assert.deepEqual(r.got, ['a:1']);
});

test('a reconnect frame before anything was served waits out a pause instead of looping', async () => {
  const {clock, http, client} = setup({transport: 'stream'});
  client.subscribe('a', () => {});
  await clock.tick(0);
  let s = http.last().stream();
  s.write(F.connected('stream'), F.subscribed('a', 0), F.reconnect());
  await clock.tick(0);
  assert.equal(http.requests.length, 2, 'served something: at once');
  s = http.last().stream();
  s.write(F.connected('stream'), F.reconnect('shutdown'));
  await clock.tick(0);
  assert.equal(http.requests.length, 2, 'served nothing: not at once');
  assert.equal(client.state, 'connected', 'for reconnectingDelay');
  await clock.tick(750);
  assert.equal(http.requests.length, 3);
  assert.equal(http.last().cursor, 'a=e1:0');
});

for (const transport of ['stream', 'sse']) {
  test(`${transport}: reconnect slow_consumer resumes at once from the last frame that arrived`, async () => {
    const {clock, http, EventSource, client, events} = setup({transport});
    const r = recorder();
    client.subscribe('a', r.on());
    client.subscribe('b', r.on());
    await clock.tick(0);
    let s, closed;
    if (transport === 'stream') {
      const req = http.last();
      const w = req.stream();
      s = (...f) => w.write(...f);
      closed = () => req.aborted;
    } else {
      const es = EventSource.instances[0];
      s = (...f) => es.frame(...f);
      closed = () => es.closed;
    }
    // The server dropped what it had not written (a:3, b:2) and ends with reconnect.
    s(F.connected(transport), F.subscribed('a', 0), F.subscribed('b', 0),
      F.message('a', 1, {text: '1'}), F.message('a', 2, {text: '2'}), F.message('b', 1, {text: 'b1'}),
      F.reconnect('slow_consumer'));
    await clock.tick(0);
    assert.equal(closed(), true);
    const next = transport === 'stream' ? http.last() : EventSource.instances[1];
    assert.ok(next, 'a new connection');
    assert.equal(clock.now, 0, 'at once');
    assert.deepEqual(parseCursor(next.cursor), {a: 'e1:2', b: 'e1:1'});
    const more = [F.connected(transport), F.message('a', 3, {text: '3'}), F.message('b', 2, {text: 'b2'})];
    if (transport === 'stream') next.stream().write(...more);
    else next.frame(...more);
    await clock.tick(0);
    assert.deepEqual(r.got, ['a:1', 'a:2', 'b:b1', 'a:3', 'b:b2']);
    assert.ok(!events.some((e) => e.event === 'error'), 'a planned reconnect is no error');
    assert.equal(client.state, 'connected');
  });
}

test('websocket close 4001 before any channel frame pauses with backoff instead of looping', async () => {
  const {clock, WebSocket, client, events} = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  client.subscribe('a', () => {});
  await clock.tick(0);
  for (const [i, pause] of [[0, 750], [1, 750]]) { // each `connected` restarts the count
    const ws = WebSocket.instances[i];
    ws.open();
    ws.frame(F.connected('websocket')); // the catch-up was too big to send: cut off at once
    ws.drop(4001, 'slow_consumer');
    await clock.tick(pause - 1);
    assert.equal(WebSocket.instances.length, i + 1, `pause ${i}`);
    await clock.tick(1);
    assert.equal(WebSocket.instances.length, i + 2);
  }
  assert.deepEqual(events.filter((e) => e.event === 'error').map((e) => e.code), [4001, 4001]);
  assert.equal(client.transport, 'websocket');
});
