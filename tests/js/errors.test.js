'use strict';
// Error frames: a refused channel is told to its subscriptions (onError) and
// not asked for again; the other channels go on.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, recorder, frames: F} = require('./fakes.js');

test('stream: forbidden tells onError, stops asking for the channel, keeps the others', async () => {
  const ctx = setup({transport: 'stream'});
  const r = recorder();
  const errors = [];
  ctx.client.subscribe('secret', r.on(), {onError: (e) => errors.push(e)});
  ctx.client.subscribe('news', r.on());
  await ctx.clock.tick(0);
  const s = ctx.http.last().stream();
  s.write(F.connected('stream'), F.error('secret', 'forbidden'), F.subscribed('news', 0),
    F.message('news', 1, {text: 'n1'}));
  await ctx.clock.tick(0);
  assert.deepEqual(errors, [{channel: 'secret', code: 'forbidden', message: 'no secret'}]);
  const event = ctx.events.find((e) => e.event === 'error');
  assert.deepEqual([event.type, event.channel, event.code], ['channel', 'secret', 'forbidden']);
  assert.equal(ctx.http.requests.length, 1, 'no re-ask just for a refused channel');
  s.end();
  await ctx.clock.tick(750);
  assert.deepEqual(ctx.http.last().channels, ['news']);
  assert.equal(ctx.http.last().cursor, 'news=e1:1');
  assert.deepEqual(r.got, ['news:n1']);
});

test('longpoll: a refused channel is not asked for on the next poll', async () => {
  const ctx = setup({transport: 'longpoll'});
  ctx.client.subscribe('secret', () => {});
  ctx.client.subscribe('news', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.error('secret', 'token_required'), F.subscribed('news', 0)]);
  await ctx.clock.tick(0);
  assert.deepEqual(ctx.http.last().channels, ['news']);
  assert.equal(ctx.http.requests.length, 2);
});

test('websocket: forbidden channel dropped; subscribing to it again asks the server again', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  const r = recorder();
  const errors = [];
  ctx.client.subscribe('secret', r.on(), {onError: (e) => errors.push(e.code)});
  ctx.client.subscribe('news', r.on());
  await ctx.clock.tick(0);
  const ws = ctx.WebSocket.instances[0];
  ws.open();
  ws.frame(F.connected('websocket'), F.error('secret'), F.subscribed('news', 0), F.message('news', 1, {text: 'n'}));
  await ctx.clock.tick(0);
  assert.deepEqual(errors, ['forbidden']);
  assert.equal(ws.sent.length, 1);
  assert.equal(ctx.client.state, 'connected');
  ctx.client.subscribe('secret', r.on());
  await ctx.clock.tick(0);
  assert.deepEqual(ws.sent[1], {type: 'subscribe', channels: ['secret']});
  ws.frame(F.subscribed('secret', 0), F.message('secret', 1, {text: 's'}));
  assert.deepEqual(r.got, ['news:n', 'secret:s', 'secret:s']);
});

test('when every channel is refused the client disconnects', async () => {
  const ctx = setup({transport: 'sse'});
  ctx.client.subscribe('secret', () => {});
  await ctx.clock.tick(0);
  const es = ctx.EventSource.instances[0];
  es.frame(F.connected('sse'), F.error('secret'));
  await ctx.clock.tick(60000);
  assert.equal(ctx.client.state, 'disconnected');
  assert.equal(es.closed, true);
  assert.equal(ctx.EventSource.instances.length, 1);
});

test('an error frame with no channel is reported and the socket stays', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  const ws = ctx.WebSocket.instances[0];
  ws.open();
  ws.frame(F.connected('websocket'), F.error(null, 'bad_message'));
  const event = ctx.events.find((e) => e.event === 'error');
  assert.deepEqual([event.type, event.code], ['server', 'bad_message']);
  assert.equal(ctx.client.state, 'connected');
  assert.equal(ws.closedWith, null);
});

test('websocket close 1009 (command too big) is reported and retried after a pause', async () => {
  const ctx = setup({websocketUrl: 'ws://x/ws'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.WebSocket.instances[0].open();
  ctx.WebSocket.instances[0].drop(1009, 'message too big');
  await ctx.clock.tick(0);
  const event = ctx.events.find((e) => e.event === 'error');
  assert.deepEqual([event.type, event.code], ['transport', 1009]);
  assert.deepEqual(ctx.attempts, ['websocket'], 'another transport would not help');
  await ctx.clock.tick(750);
  assert.deepEqual(ctx.attempts, ['websocket', 'websocket']);
});

test('sse: channel_error events are refusals; EventSource error events are connection failures', async () => {
  const ctx = setup({transport: 'sse'});
  const errors = [];
  ctx.client.subscribe('secret', () => {}, {onError: (e) => errors.push(e)});
  ctx.client.subscribe('news', () => {});
  await ctx.clock.tick(0);
  const es = ctx.EventSource.instances[0];
  es.frame(F.connected('sse'), F.subscribed('news', 2));
  es.dispatch('channel_error', {type: 'channel_error',
    data: JSON.stringify({type: 'error', channel: 'secret', code: 'forbidden', message: 'no'})});
  assert.deepEqual(errors, [{channel: 'secret', code: 'forbidden', message: 'no'}]);
  assert.equal(es.closed, false, 'a refused channel does not end the connection');
  // EventSource's own error event (the connection broke), even one carrying
  // data, is no channel refusal.
  es.dispatch('error', {type: 'error', data: JSON.stringify({type: 'error', channel: 'news', code: 'forbidden'})});
  assert.equal(errors.length, 1);
  assert.equal(es.closed, true);
  assert.equal(ctx.events.filter((e) => e.event === 'error').pop().type, 'transport');
  await ctx.clock.tick(750);
  const next = ctx.EventSource.instances[1];
  assert.deepEqual(next.channels, ['news']);
  assert.equal(next.cursor, 'news=e1:2');
});
