'use strict';
// Subscribing and unsubscribing while connected, without disturbing the
// other channels: in-band over WebSocket, by re-asking over HTTP.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, recorder, frames: F} = require('./fakes.js');

async function connectedSocket(ctx, ...channels) {
  await ctx.clock.tick(0);
  const ws = ctx.WebSocket.instances[ctx.WebSocket.instances.length - 1];
  ws.open();
  ws.frame(F.connected('websocket'), ...channels.map((c) => F.subscribed(c, 0)));
  return ws;
}

test('websocket: unsubscribe stops delivery and keeps the other channels', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  const r = recorder();
  const a = ctx.client.subscribe('a', r.on());
  ctx.client.subscribe('b', r.on());
  const ws = await connectedSocket(ctx, 'a', 'b');
  ws.frame(F.message('a', 1, {text: '1'}));
  assert.equal(ctx.client.unsubscribe(a), true);
  assert.equal(ctx.client.unsubscribe(a), false);
  ws.frame(F.message('a', 2, {text: 'late'})); // still in flight: not delivered
  await ctx.clock.tick(0);
  assert.deepEqual(ws.sent.slice(1), [{type: 'unsubscribe', channels: ['a']}]);
  ws.frame(F.message('a', 3, {text: 'later'}), F.unsubscribed('a'), F.message('b', 1, {text: 'b1'}));
  assert.deepEqual(r.got, ['a:1', 'b:b1']);
  assert.equal(ctx.WebSocket.instances.length, 1, 'the same socket');
  ws.drop(1006);
  await ctx.clock.tick(750);
  const next = ctx.WebSocket.instances[1];
  next.open();
  assert.deepEqual(next.sent, [{type: 'subscribe', channels: ['b'], cursor: 'b=e1:1'}]);
});

test('websocket: subscribe while connected joins in-band on the same socket', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  const r = recorder();
  ctx.client.subscribe('a', r.on());
  const ws = await connectedSocket(ctx, 'a');
  ws.frame(F.message('a', 1, {text: '1'}));
  ctx.client.subscribe('b', r.on());
  ctx.client.subscribe('c', r.on());
  await ctx.clock.tick(0);
  assert.deepEqual(ws.sent.slice(1), [{type: 'subscribe', channels: ['b', 'c']}]);
  ws.frame(F.subscribed('b', 0, [{text: 'b-state', channel: 'b', ts: 1, epoch: 'e1', offset: 0}]),
    F.message('a', 2, {text: '2'}));
  assert.deepEqual(r.got, ['a:1', 'b:b-state', 'a:2']);
  assert.equal(ctx.WebSocket.instances.length, 1);
});

test('websocket: frames of an old subscription are dropped until the server confirms the unsubscribe', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  const r = recorder();
  const token = ctx.client.subscribe('a', r.on('old'));
  ctx.client.subscribe('keep', r.on());
  const ws = await connectedSocket(ctx, 'a', 'keep');
  ctx.client.unsubscribe(token);
  await ctx.clock.tick(0);
  ctx.client.subscribe('a', r.on('new'));
  await ctx.clock.tick(0);
  assert.deepEqual(ws.sent.slice(1), [{type: 'unsubscribe', channels: ['a']}, {type: 'subscribe', channels: ['a']}]);
  ws.frame(F.message('a', 5, {text: 'old-5'}), F.unsubscribed('a'),
    F.subscribed('a', 0), F.message('a', 1, {text: 'fresh-1'}));
  assert.deepEqual(r.got, ['new:fresh-1']);
});

test('unsubscribe and subscribe again in the same tick changes nothing on the wire', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  const r = recorder();
  const token = ctx.client.subscribe('a', r.on('old'));
  const ws = await connectedSocket(ctx, 'a');
  ctx.client.unsubscribe(token);
  ctx.client.subscribe('a', r.on('new'));
  await ctx.clock.tick(0);
  assert.equal(ws.sent.length, 1);
  ws.frame(F.message('a', 1, {text: '1'}));
  assert.deepEqual(r.got, ['new:1']);
});

test('stream: subscribe while connected asks again with the new list and the current cursor', async () => {
  const ctx = setup({transport: 'stream'});
  const r = recorder();
  ctx.client.subscribe('a', r.on());
  await ctx.clock.tick(0);
  const first = ctx.http.last();
  const s = first.stream();
  s.write(F.connected('stream'), F.subscribed('a', 0), F.message('a', 1, {text: '1'}), F.message('a', 2, {text: '2'}));
  await ctx.clock.tick(0);
  ctx.client.subscribe('b', r.on());
  await ctx.clock.tick(0);
  assert.equal(first.aborted, true);
  const second = ctx.http.last();
  assert.deepEqual(second.channels, ['a', 'b']);
  assert.equal(second.cursor, 'a=e1:2');
  s.write(F.message('a', 3, {text: 'from the old stream'})); // too late: ignored
  const s2 = second.stream();
  s2.write(F.connected('stream'), F.subscribed('b', 0), F.message('a', 3, {text: '3'}), F.message('b', 1, {text: 'b1'}));
  await ctx.clock.tick(0);
  assert.deepEqual(r.got, ['a:1', 'a:2', 'a:3', 'b:b1']);
  assert.deepEqual(ctx.events.map((e) => e.event), ['connecting', 'connected'], 'no state change for a channel change');
});

test('sse: unsubscribe re-asks without the channel and without its position', async () => {
  const ctx = setup({transport: 'sse'});
  const r = recorder();
  const a = ctx.client.subscribe('a', r.on());
  ctx.client.subscribe('b', r.on());
  await ctx.clock.tick(0);
  const es = ctx.EventSource.instances[0];
  es.frame(F.connected('sse'), F.subscribed('a', 0), F.subscribed('b', 0), F.message('b', 1, {text: 'b1'}));
  ctx.client.unsubscribe(a);
  es.frame(F.message('a', 1, {text: 'a1'})); // before the re-ask: nobody listens
  await ctx.clock.tick(0);
  assert.equal(es.closed, true);
  const next = ctx.EventSource.instances[1];
  assert.deepEqual(next.channels, ['b']);
  assert.equal(next.cursor, 'b=e1:1');
  assert.deepEqual(r.got, ['b:b1']);
});

test('longpoll: a new channel aborts the held request and asks again', async () => {
  const ctx = setup({transport: 'longpoll'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.subscribed('a', 4)]);
  await ctx.clock.tick(0);
  const held = ctx.http.last();
  ctx.client.subscribe('b', () => {});
  await ctx.clock.tick(0);
  assert.equal(held.aborted, true);
  assert.deepEqual(ctx.http.last().channels, ['a', 'b']);
  assert.equal(ctx.http.last().cursor, 'a=e1:4');
});

test('several callbacks per channel; each token removes only its own', async () => {
  const ctx = setup({transport: 'longpoll'});
  const r = recorder();
  const one = ctx.client.subscribe('a', r.on('one'));
  ctx.client.subscribe('a', r.on('two'));
  await ctx.clock.tick(0);
  assert.deepEqual(ctx.http.last().channels, ['a'], 'the channel is asked for once');
  ctx.http.last().answer([F.subscribed('a', 0), F.message('a', 1, {text: 'x'})]);
  await ctx.clock.tick(0);
  ctx.client.unsubscribe(one);
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.message('a', 2, {text: 'y'})]);
  await ctx.clock.tick(0);
  assert.deepEqual(r.got, ['one:x', 'two:x', 'two:y']);
});

test('the last unsubscribe disconnects; a new subscribe connects again', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  const token = ctx.client.subscribe('a', () => {});
  const ws = await connectedSocket(ctx, 'a');
  ctx.client.unsubscribe(token);
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'disconnected');
  assert.equal(ws.closedWith, 1000);
  assert.deepEqual(ctx.events.pop(), {event: 'disconnected', transport: 'websocket', reason: 'idle'});
  assert.equal(ctx.clock.timers.size, 0);
  ctx.client.subscribe('b', () => {});
  await ctx.clock.tick(0);
  assert.equal(ctx.WebSocket.instances.length, 2);
  assert.equal(ctx.client.state, 'connecting');
});

test('close() disconnects, drops every subscription and leaves no timer', async () => {
  const ctx = setup({transport: 'stream'});
  const r = recorder();
  ctx.client.subscribe('a', r.on());
  await ctx.clock.tick(0);
  const req = ctx.http.last();
  const s = req.stream();
  s.write(F.connected('stream'), F.subscribed('a', 0));
  await ctx.clock.tick(0);
  ctx.client.close();
  assert.equal(req.aborted, true);
  assert.equal(ctx.client.state, 'disconnected');
  assert.equal(ctx.client.transport, null);
  assert.equal(ctx.events.pop().reason, 'closed');
  assert.equal(ctx.clock.timers.size, 0);
  await ctx.clock.tick(60000);
  assert.equal(ctx.http.requests.length, 1);
  assert.deepEqual(r.got, []);
});

test('subscribe checks the channel name and the callback', () => {
  const {client} = setup({transport: 'poll'});
  for (const bad of ['', 'a,b', 'a=b', 'x'.repeat(129), 'sp ace', 42]) {
    assert.throws(() => client.subscribe(bad, () => {}), TypeError, String(bad));
  }
  assert.throws(() => client.subscribe('ok', null), TypeError);
  assert.equal(typeof client.subscribe('A-z_0.9:/@#$', () => {}), 'number');
});

test('websocket: until the unsubscribed answer every frame of the channel is the old subscription\'s, even an error', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  const r = recorder();
  const errors = [];
  const old = ctx.client.subscribe('a', r.on('old'), {onError: (e) => errors.push(`old:${e.code}`)});
  ctx.client.subscribe('keep', r.on());
  const ws = await connectedSocket(ctx, 'a', 'keep');
  ctx.client.unsubscribe(old);
  await ctx.clock.tick(0);
  ctx.client.subscribe('a', r.on('new'), {onError: (e) => errors.push(`new:${e.code}`)});
  await ctx.clock.tick(0);
  ws.frame(F.error('a', 'token_expired'), F.message('a', 7, {text: 'old-7'}), F.unsubscribed('a'),
    F.subscribed('a', 0), F.message('a', 1, {text: 'fresh'}));
  assert.deepEqual(errors, []);
  assert.deepEqual(r.got, ['new:fresh']);
  assert.equal(ctx.client.state, 'connected');
});

test('websocket: a refused subscribe (an error per named channel) tells each onError, keeps the socket and the others', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  const r = recorder();
  const errors = [];
  const onError = (e) => errors.push(`${e.channel}:${e.code}`);
  ctx.client.subscribe('a', r.on());
  const ws = await connectedSocket(ctx, 'a');
  ctx.client.subscribe('b', r.on(), {onError});
  ctx.client.subscribe('c', r.on(), {onError});
  await ctx.clock.tick(0);
  assert.deepEqual(ws.sent[1], {type: 'subscribe', channels: ['b', 'c']});
  ws.frame(F.error('b', 'too_many_channels'), F.error('c', 'too_many_channels'), F.message('a', 1, {text: 'a1'}));
  await ctx.clock.tick(0);
  assert.deepEqual(errors, ['b:too_many_channels', 'c:too_many_channels']);
  assert.deepEqual(r.got, ['a:a1']);
  assert.equal(ws.sent.length, 2, 'not asked again by itself');
  assert.equal(ws.closedWith, null);
  assert.equal(ctx.WebSocket.instances.length, 1);
  ws.drop(1006);
  await ctx.clock.tick(750);
  ctx.WebSocket.instances[1].open();
  assert.deepEqual(ctx.WebSocket.instances[1].sent, [{type: 'subscribe', channels: ['a'], cursor: 'a=e1:1'}]);
});
