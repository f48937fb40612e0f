'use strict';
// State and reset: state messages come through the normal callbacks, then
// later messages; on reset, onReset runs first.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, frames: F} = require('./fakes.js');

const stateOf = (channel, offset, ...texts) =>
  texts.map((text) => ({text, channel, ts: 1, epoch: 'e1', offset}));

test('a fresh join delivers the state, then later messages', async () => {
  const {clock, http, client} = setup({transport: 'stream'});
  const got = [];
  client.subscribe('board', (m) => got.push(m.text));
  await clock.tick(0);
  const s = http.last().stream();
  s.write(F.connected('stream'), F.subscribed('board', 40, stateOf('board', 40, 's1', 's2')),
    F.message('board', 41, {text: 'm41'}));
  await clock.tick(0);
  assert.deepEqual(got, ['s1', 's2', 'm41']);
  s.end();
  await clock.tick(750);
  assert.equal(http.last().cursor, 'board=e1:41');
});

test('reset calls onReset (subscription, then client option) before the new state', async () => {
  const calls = [];
  const {clock, http, client} = setup({transport: 'stream', onReset: (ch, reason) => calls.push(`client-reset:${ch}:${reason}`)});
  client.subscribe('board', (m) => calls.push(`msg:${m.text}`),
    {onReset: (ch, reason) => calls.push(`sub-reset:${ch}:${reason}`)});
  client.subscribe('other', (m) => calls.push(`other:${m.text}`));
  await clock.tick(0);
  let s = http.last().stream();
  s.write(F.connected('stream'), F.subscribed('board', 0), F.subscribed('other', 0),
    F.message('board', 1, {text: 'm1'}));
  await clock.tick(0);
  s.end();
  await clock.tick(750);
  assert.deepEqual(http.last().cursorMap(), {board: 'e1:1', other: 'e1:0'});
  s = http.last().stream();
  s.write(F.connected('stream'), F.reset('board', 'history_trimmed'),
    F.subscribed('board', 90, stateOf('board', 90, 's1', 's2')), F.message('board', 91, {text: 'm91'}));
  await clock.tick(0);
  assert.deepEqual(calls, [
    'msg:m1',
    'sub-reset:board:history_trimmed',
    'client-reset:board:history_trimmed',
    'msg:s1', 'msg:s2', 'msg:m91',
  ]);
});

test('reset over websocket and sse reaches onReset too', async () => {
  for (const transport of ['websocket', 'sse']) {
    const calls = [];
    const {clock, WebSocket, EventSource, client} = setup({transport, websocketUrl: 'ws://x/ws'});
    client.subscribe('c', (m) => calls.push(m.text), {onReset: (ch, reason) => calls.push(`reset:${reason}`)});
    await clock.tick(0);
    let server = transport === 'sse' ? EventSource.instances[0] : WebSocket.instances[0];
    if (transport === 'websocket') server.open();
    server.frame(F.connected(transport), F.reset('c', 'epoch_changed'),
      F.subscribed('c', 3, stateOf('c', 3, 'fresh'), 'e2'));
    assert.deepEqual(calls, ['reset:epoch_changed', 'fresh'], transport);
  }
});

test('a failing callback does not stop the frames after it', async () => {
  const {clock, http, client, events} = setup({transport: 'longpoll'});
  const got = [];
  client.subscribe('a', (m) => { if (m.text === 'bad') throw new Error('app bug'); got.push(m.text); });
  await clock.tick(0);
  http.last().answer([F.subscribed('a', 0), F.message('a', 1, {text: 'bad'}), F.message('a', 2, {text: 'good'})]);
  await clock.tick(0);
  assert.deepEqual(got, ['good']);
  assert.equal(http.last().cursor, 'a=e1:2');
  const error = events.find((e) => e.event === 'error');
  assert.equal(error.type, 'callback');
  assert.equal(error.error.message, 'app bug');
});
