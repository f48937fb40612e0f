'use strict';
// The server's control frames (issue 19): a `disconnect` frame (or WebSocket
// close 4003/4004) ends the connection on purpose, with or without a
// reconnect; channel errors `unsubscribed` and `token_revoked`.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, recorder, parseCursor, frames: F} = require('./fakes.js');

const ALL = ['websocket', 'sse', 'stream', 'longpoll', 'poll'];
const POLLING = ['longpoll', 'poll'];

/**
 * The server's side of `transport` for a client made by setup(): the
 * connections (sockets, EventSources, fetch requests) the client opened,
 * and frames sent on the latest. Streams open with `connected`; a polling
 * client's frames are the answer to its pending request.
 */
function server(ctx, transport) {
  const polling = POLLING.includes(transport);
  const writers = new Map();
  const list = () => (transport === 'websocket' ? ctx.WebSocket.instances
    : transport === 'sse' ? ctx.EventSource.instances : ctx.http.requests);
  const last = () => list()[list().length - 1];
  return {
    count: () => list().length,
    last,
    /** Accept the latest connection (a poll: answer it) with these frames after `connected`. */
    connect(...frames) {
      const c = last();
      if (polling) return c.json({cursor: '', frames, client: `c${list().length}.SIG`});
      if (transport === 'websocket') c.open();
      this.send(F.connected(transport), ...frames);
    },
    /** Frames on the latest connection (a poll: the answer to the pending request). */
    send(...frames) {
      const c = last();
      if (polling) return c.json({cursor: '', frames, client: `c${list().length}.SIG`});
      if (transport === 'websocket' || transport === 'sse') return c.frame(...frames);
      if (!writers.has(c)) writers.set(c, c.stream());
      writers.get(c).write(...frames);
    },
    /** Where the latest connection resumes from: {channel: 'epoch:offset'}. */
    cursor() {
      const c = last();
      if (transport !== 'websocket') return parseCursor(c.cursor);
      const command = c.sent.find((m) => m.type === 'subscribe');
      return Object.fromEntries((command.cursor || '').split(',').filter(Boolean).map((e) => e.split('=')));
    },
    /** The channels the latest connection asks for. */
    channels() {
      const c = last();
      if (transport !== 'websocket') return c.channels;
      return c.sent.filter((m) => m.type === 'subscribe').flatMap((m) => m.channels);
    },
  };
}

/** A client of `transport` serving channels a (at 0) and b (at 4), with the server's side. */
async function live(transport, options = {}) {
  const ctx = setup(Object.assign({transport, websocketUrl: 'ws://test.invalid/ws'}, options));
  const r = recorder();
  const errors = [];
  const onError = (e) => errors.push(`${e.channel}:${e.code}`);
  const tokens = {a: ctx.client.subscribe('a', r.on(), {onError}), b: ctx.client.subscribe('b', r.on(), {onError})};
  await ctx.clock.tick(0);
  const srv = server(ctx, transport);
  srv.connect(F.subscribed('a', 0), F.subscribed('b', 4));
  await ctx.clock.tick(0);
  // A polling client asks again (at once, or after pollInterval): the next frames answer that request.
  if (POLLING.includes(transport)) await ctx.clock.tick(ctx.client._opts.pollInterval);
  assert.equal(ctx.client.state, 'connected');
  return Object.assign(ctx, {srv, got: r.got, errors, tokens});
}

/** Advance the clock in small steps until `done()` (at most `ms`): no bare sleep. */
async function until(ctx, done, ms = 30000) {
  for (let waited = 0; !done(); waited += 10) {
    assert.ok(waited < ms, `not within ${ms} ms`);
    await ctx.clock.tick(10);
  }
}

/** A getToken() giving t2, t3, ...; `calls` counts its calls. */
function counter() {
  const t = {calls: 0, getToken: () => `t${++t.calls + 1}`};
  return t;
}

/** Every state change with its detail: 'from>to (reason; detail)'. */
function details(ctx) {
  const seen = [];
  ctx.client.on('state', (e) => seen.push(`${e.from}>${e.to} (${e.reason}; ${e.detail})`));
  return seen;
}

for (const transport of ALL) {
  test(`${transport}: disconnect with reconnect false ends every subscription for good, with the frame's reason`, async () => {
    for (const reason of ['disconnected_by_server', 'token_revoked']) {
      const ctx = await live(transport);
      const seen = details(ctx);
      ctx.srv.send(F.message('a', 1, {text: 'last'}), F.disconnect(reason, false));
      await ctx.clock.tick(0);
      assert.equal(ctx.client.state, 'disconnected', reason);
      assert.equal(ctx.client.transport, null);
      assert.deepEqual(seen, [`connected>disconnected (${reason}; disconnect frame (${reason}))`]);
      assert.deepEqual(ctx.events.filter((e) => e.event === 'disconnected').map((e) => e.reason), [reason]);
      assert.deepEqual(ctx.got, ['a:last'], 'the frames before it are delivered');
      assert.deepEqual(ctx.events.filter((e) => e.event === 'error'), [], 'no error event: the state says it');
      // The transport is given up: the socket closed, the EventSource closed, the stream aborted.
      const c = ctx.srv.last();
      if (transport === 'websocket') assert.equal(c.closedWith, 1000);
      if (transport === 'sse') assert.equal(c.closed, true);
      if (transport === 'stream') assert.equal(c.aborted, true);
      // What a server does next (the end of the response, close 4003) changes nothing.
      if (transport === 'websocket') c.drop(4003, reason);
      if (transport === 'sse') c.fail();
      // Nothing is retried, however long: no timer is left, no request or socket made.
      const made = ctx.srv.count();
      assert.equal(ctx.clock.timers.size, 0, `${transport} ${reason}: no timer left`);
      await ctx.clock.tick(10 * 60 * 1000);
      assert.equal(ctx.srv.count(), made, `${transport} ${reason}: no new connection`);
      assert.equal(ctx.attempts.length, made);
      assert.equal(ctx.client.state, 'disconnected');
      // The subscriptions are gone, as after close().
      assert.equal(ctx.client.unsubscribe(ctx.tokens.a), false);
      assert.equal(ctx.client.members('a'), null);
    }
  });
}

test('a disconnect frame without a reason reads as disconnected_by_server', async () => {
  const ctx = await live('stream');
  ctx.srv.send({type: 'disconnect', reconnect: false});
  await ctx.clock.tick(0);
  assert.deepEqual(ctx.states.slice(-1), ['connected>disconnected (disconnected_by_server)']);
});

test('a disconnect frame whose reconnect is not true does not reconnect', async () => {
  const ctx = await live('stream');
  ctx.srv.send({type: 'disconnect', reason: 'disconnected_by_server'});
  await ctx.clock.tick(60000);
  assert.equal(ctx.client.state, 'disconnected');
  assert.equal(ctx.http.requests.length, 1);
});

test('websocket: close 4003 without the frame is a disconnect with the close reason', async () => {
  for (const [reason, expected, detail] of [
    ['token_revoked', 'token_revoked', 'close 4003: token_revoked'],
    ['', 'disconnected_by_server', 'close 4003'],
  ]) {
    const ctx = await live('websocket');
    const seen = details(ctx);
    ctx.srv.last().drop(4003, reason);
    await ctx.clock.tick(0);
    assert.deepEqual(seen, [`connected>disconnected (${expected}; ${detail})`]);
    assert.equal(ctx.clock.timers.size, 0);
    await ctx.clock.tick(60000);
    assert.equal(ctx.WebSocket.instances.length, 1, 'never reopened');
    assert.deepEqual(ctx.events.filter((e) => e.event === 'error'), []);
  }
});

test('websocket: close 4003 before the socket connected is a disconnect too', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.WebSocket.instances[0].open();
  ctx.WebSocket.instances[0].drop(4003, 'disconnected_by_server');
  await ctx.clock.tick(0);
  assert.deepEqual(ctx.states, ['disconnected>connecting (starting)', 'connecting>disconnected (disconnected_by_server)']);
  assert.equal(ctx.clock.timers.size, 0);
});

test('after a disconnect, subscribe() starts again: a new client id, only the new channels', async () => {
  const ctx = await live('poll');
  const first = ctx.http.requests[0];
  const second = ctx.http.last();
  assert.equal(first.client, null);
  assert.equal(second.client, 'c1.SIG', 'a polling client names its id');
  ctx.srv.send(F.disconnect('disconnected_by_server', false));
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'disconnected');
  const again = [];
  ctx.client.subscribe('c', (m) => again.push(m.text));
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'connecting');
  const req = ctx.http.last();
  assert.equal(ctx.http.requests.length, 3);
  assert.deepEqual(req.channels, ['c'], 'the old subscriptions are not asked for');
  assert.equal(req.client, null, 'the old client id is dropped');
  assert.equal(req.cursor, '');
  req.json({cursor: '', frames: [F.subscribed('c', 0), F.message('c', 1, {text: 'hi'})], client: 'c9.SIG'});
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'connected');
  assert.deepEqual(again, ['hi']);
  assert.deepEqual(ctx.got, [], 'the old callbacks hear nothing');
});

test('a disconnected listener may subscribe again at once', async () => {
  const ctx = await live('websocket');
  ctx.client.on('disconnected', () => ctx.client.subscribe('c', () => {}));
  ctx.srv.send(F.disconnect());
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'connecting');
  assert.equal(ctx.WebSocket.instances.length, 2);
  ctx.WebSocket.instances[1].open();
  assert.deepEqual(ctx.WebSocket.instances[1].sent, [{type: 'subscribe', channels: ['c']}]);
});

test('disconnect token_revoked: with getToken the next start asks for a fresh token; without, the token is kept', async () => {
  const t = counter();
  const ctx = await live('stream', {token: 't1', getToken: t.getToken});
  ctx.srv.send(F.disconnect('token_revoked', false));
  await ctx.clock.tick(0);
  assert.equal(t.calls, 0, 'nothing asked while disconnected');
  ctx.client.subscribe('c', () => {});
  await ctx.clock.tick(0);
  assert.equal(t.calls, 1);
  assert.equal(ctx.http.last().token, 't2');

  const plain = await live('stream', {token: 't1'});
  plain.srv.send(F.disconnect('token_revoked', false));
  await plain.clock.tick(0);
  plain.client.subscribe('c', () => {});
  await plain.clock.tick(0);
  assert.equal(plain.http.last().token, 't1');

  const other = await live('stream', {token: 't1', getToken: t.getToken});
  other.srv.send(F.disconnect('disconnected_by_server', false));
  await other.clock.tick(0);
  other.client.subscribe('c', () => {});
  await other.clock.tick(0);
  assert.equal(other.http.last().token, 't1', 'only a revoked token is replaced');
  assert.equal(t.calls, 1);
});

for (const transport of ALL) {
  test(`${transport}: disconnect with reconnect true reconnects at once with a fresh token, from the positions`, async () => {
    const t = counter();
    const ctx = await live(transport, {token: 't1', getToken: t.getToken});
    const before = ctx.srv.count();
    if (POLLING.includes(transport)) assert.equal(ctx.srv.last().client, 'c1.SIG');
    ctx.srv.send(F.message('a', 1, {text: 'x'}), F.disconnect('disconnected_by_server', true));
    await ctx.clock.tick(0);
    assert.equal(t.calls, 1, 'getToken() once');
    assert.equal(ctx.srv.count(), before + 1, 'a new connection at once');
    const c = ctx.srv.last();
    assert.equal(transport === 'websocket' ? c.token : c.token, 't2');
    if (transport === 'websocket') c.open();
    assert.deepEqual(ctx.srv.channels(), ['a', 'b']);
    assert.deepEqual(ctx.srv.cursor(), {a: 'e1:1', b: 'e1:4'});
    if (POLLING.includes(transport)) assert.equal(c.client, null, 'a polling client drops its id');
    if (transport === 'websocket') {
      ctx.srv.send(F.connected('websocket'), F.message('b', 5, {text: 'y'}));
    } else if (POLLING.includes(transport)) {
      ctx.srv.send(F.message('b', 5, {text: 'y'}));
    } else {
      ctx.srv.send(F.connected(transport), F.message('b', 5, {text: 'y'}));
    }
    await ctx.clock.tick(0);
    assert.deepEqual(ctx.got, ['a:x', 'b:y']);
    assert.deepEqual(ctx.states, ['disconnected>connecting (starting)', 'connecting>connected (connected over ' +
      `${transport})`], 'the state stays connected');
    assert.deepEqual(ctx.events.filter((e) => e.event === 'error'), []);
    assert.deepEqual(ctx.errors, []);
  });
}

test('websocket: close 4004 without the frame reconnects at once with a fresh token', async () => {
  const t = counter();
  const ctx = await live('websocket', {token: 't1', getToken: t.getToken});
  ctx.srv.send(F.message('a', 2, {text: 'x'}));
  ctx.srv.last().drop(4004, 'disconnected_by_server');
  await ctx.clock.tick(0);
  assert.equal(t.calls, 1);
  assert.equal(ctx.WebSocket.instances.length, 2);
  const ws = ctx.WebSocket.instances[1];
  assert.equal(ws.token, 't2');
  ws.open();
  assert.deepEqual(ws.sent, [{type: 'subscribe', channels: ['a', 'b'], cursor: 'a=e1:2,b=e1:4'}]);
  assert.equal(ctx.client.state, 'connected');
});

test('a disconnect frame followed by close 4004 reconnects once', async () => {
  const ctx = await live('websocket');
  const first = ctx.srv.last();
  first.frame(F.disconnect('disconnected_by_server', true));
  first.drop(4004, 'disconnected_by_server');
  await ctx.clock.tick(0);
  assert.equal(ctx.WebSocket.instances.length, 2);
  ctx.srv.connect();
  await ctx.clock.tick(5000);
  assert.equal(ctx.WebSocket.instances.length, 2);
  assert.equal(ctx.client.state, 'connected');
});

test('without getToken, reconnect true keeps the token; a second one before a ping waits a backoff pause', async () => {
  const ctx = await live('stream', {token: 't1'});
  ctx.srv.send(F.disconnect('disconnected_by_server', true));
  await ctx.clock.tick(0);
  assert.equal(ctx.http.requests.length, 2);
  assert.equal(ctx.http.last().token, 't1');
  // The new connection is ended again before it proved good: a pause, not a loop.
  ctx.srv.send(F.connected('stream'), F.disconnect('disconnected_by_server', true));
  await ctx.clock.tick(0);
  assert.equal(ctx.http.requests.length, 2, 'not at once');
  await ctx.clock.tick(749); // backoff(0) with random 0.5: 500 + 250
  assert.equal(ctx.http.requests.length, 2);
  await ctx.clock.tick(1);
  assert.equal(ctx.http.requests.length, 3);
  // A connection that lived a ping interval proved good: the next is at once again.
  ctx.srv.send(F.connected('stream'), F.ping());
  await ctx.clock.tick(0);
  ctx.srv.send(F.disconnect('disconnected_by_server', true));
  await ctx.clock.tick(0);
  assert.equal(ctx.http.requests.length, 4);
});

test('a reconnect that takes longer than reconnectingDelay shows, in plain words', async () => {
  const ctx = await live('websocket');
  ctx.srv.send(F.disconnect('token_revoked', true));
  await ctx.clock.tick(1000);
  assert.deepEqual(ctx.states.slice(-1), ['connected>reconnecting (access revoked)']);
});

// ---- channel errors ----

for (const transport of ['websocket', 'stream', 'longpoll']) {
  test(`${transport}: error unsubscribed stops that channel only, and it is not asked for again`, async () => {
    const ctx = await live(transport);
    const channelErrors = [];
    ctx.client.on('error', (e) => channelErrors.push([e.type, e.channel, e.code]));
    const made = ctx.srv.count();
    ctx.srv.send(F.error('a', 'unsubscribed'), F.message('b', 5, {text: 'still'}));
    await ctx.clock.tick(0);
    assert.deepEqual(ctx.errors, ['a:unsubscribed'], 'onError, as for forbidden');
    assert.deepEqual(channelErrors, [['channel', 'a', 'unsubscribed']]);
    assert.deepEqual(ctx.got, ['b:still']);
    assert.equal(ctx.client.state, 'connected');
    if (transport === 'websocket') {
      assert.equal(ctx.srv.count(), made, 'the socket is kept');
      assert.deepEqual(ctx.srv.last().sent.filter((m) => m.type === 'unsubscribe'), [],
        'the server dropped it already: nothing to send');
    }
    if (transport === 'stream') assert.equal(ctx.srv.count(), made, 'the stream is kept');
    if (transport === 'longpoll') {
      assert.deepEqual(ctx.srv.last().channels, ['b'], 'the next poll names b only');
    }
    // A reconnect does not bring it back.
    const cut = ctx.srv.count();
    if (transport === 'websocket') ctx.srv.last().drop(1006);
    if (transport === 'stream') ctx.http.last()._controller.error(new TypeError('cut'));
    if (transport === 'longpoll') ctx.srv.last().fail();
    await until(ctx, () => ctx.srv.count() > cut);
    const c = ctx.srv.last();
    if (transport === 'websocket') c.open();
    assert.deepEqual(ctx.srv.channels(), ['b']);
    assert.deepEqual(ctx.srv.cursor(), {b: 'e1:5'});
    // An explicit subscribe asks the server again.
    ctx.srv.connect();
    await ctx.clock.tick(0);
    ctx.client.subscribe('a', () => {});
    await ctx.clock.tick(0);
    if (transport === 'websocket') {
      assert.deepEqual(c.sent.slice(-1), [{type: 'subscribe', channels: ['a']}]);
    } else {
      // In first-subscribe order: the refused subscription of a is still registered.
      assert.deepEqual(ctx.srv.channels(), ['a', 'b']);
    }
  });
}

test('unsubscribed from the last channel: the client goes idle, nothing left running', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  ctx.client.subscribe('a', () => {}, {onError: () => {}});
  await ctx.clock.tick(0);
  const ws = ctx.WebSocket.instances[0];
  ws.open();
  ws.frame(F.connected('websocket'), F.subscribed('a', 0), F.error('a', 'unsubscribed'));
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'disconnected');
  assert.deepEqual(ctx.states.slice(-1), ['connected>disconnected (idle)']);
  assert.equal(ctx.clock.timers.size, 0);
  await ctx.clock.tick(60000);
  assert.equal(ctx.WebSocket.instances.length, 1);
});

test('error token_revoked with getToken: one fresh token, the channels resume; revoked again: refused', async () => {
  const t = counter();
  const ctx = await live('stream', {token: 't1', getToken: t.getToken});
  ctx.srv.send(F.message('a', 1, {text: 'x'}), F.error('a', 'token_revoked'));
  await ctx.clock.tick(0);
  assert.equal(t.calls, 1);
  assert.equal(ctx.http.requests.length, 2);
  assert.equal(ctx.http.last().token, 't2');
  assert.deepEqual(ctx.http.last().channels, ['a', 'b']);
  assert.deepEqual(ctx.http.last().cursorMap(), {a: 'e1:1', b: 'e1:4'});
  assert.deepEqual(ctx.errors, [], 'no onError for a renewed token');
  // The fresh token is refused too, before it proved good: no second renewal, as forbidden.
  ctx.srv.send(F.connected('stream'), F.error('a', 'token_revoked'), F.message('b', 5, {text: 'y'}));
  await ctx.clock.tick(0);
  assert.equal(t.calls, 1);
  assert.deepEqual(ctx.errors, ['a:token_revoked']);
  assert.equal(ctx.http.requests.length, 2, 'b goes on on the same stream');
  assert.deepEqual(ctx.got, ['a:x', 'b:y']);
  // Once a token proved good (a ping), a later revocation gets its one renewal again; the
  // renewal asks again for the channels refused for a token reason, as every renewal does.
  ctx.srv.send(F.ping(), F.error('b', 'token_revoked'));
  await ctx.clock.tick(0);
  assert.equal(t.calls, 2);
  assert.equal(ctx.http.last().token, 't3');
  assert.deepEqual(ctx.http.last().channels, ['a', 'b']);
  assert.deepEqual(ctx.errors, ['a:token_revoked']);
});

test('error token_revoked on a poll answer with getToken renews once too', async () => {
  const t = counter();
  const ctx = await live('poll', {token: 't1', getToken: t.getToken});
  ctx.srv.send(F.error('a', 'token_revoked'));
  await ctx.clock.tick(0);
  assert.equal(t.calls, 1);
  assert.equal(ctx.http.last().token, 't2');
  assert.deepEqual(ctx.http.last().channels, ['a', 'b']);
  ctx.srv.send(F.error('a', 'token_revoked'));
  await ctx.clock.tick(0);
  assert.equal(t.calls, 1);
  assert.deepEqual(ctx.errors, ['a:token_revoked']);
});

test('error token_revoked without getToken is refused as forbidden; setToken asks again', async () => {
  const ctx = await live('websocket', {token: 't1'});
  ctx.srv.send(F.error('a', 'token_revoked'), F.message('b', 5, {text: 'y'}));
  await ctx.clock.tick(0);
  assert.deepEqual(ctx.errors, ['a:token_revoked']);
  assert.equal(ctx.WebSocket.instances.length, 1, 'no reconnect');
  assert.deepEqual(ctx.got, ['b:y']);
  await ctx.clock.tick(10000); // within the ping watchdog's limit: the socket lives on
  assert.equal(ctx.WebSocket.instances.length, 1, 'no reconnect');
  assert.deepEqual(ctx.WebSocket.instances[0].sent, [{type: 'subscribe', channels: ['a', 'b']}], 'a is not asked again');
  // A new token may not be revoked: the channel is asked for again with it.
  ctx.client.setToken('t2');
  await ctx.clock.tick(0);
  assert.equal(ctx.WebSocket.instances.length, 2, 'a socket keeps its URL token: a new one');
  const ws = ctx.WebSocket.instances[1];
  assert.equal(ws.token, 't2');
  ws.open();
  assert.deepEqual(ws.sent, [{type: 'subscribe', channels: ['a', 'b'], cursor: 'b=e1:5'}]);
});

test('error token_revoked with a newer token from setToken reconnects with it, without getToken', async () => {
  const t = counter();
  const ctx = await live('sse', {token: 't1', getToken: t.getToken});
  ctx.client.setToken('t9');
  ctx.srv.send(F.error('b', 'token_revoked'));
  await ctx.clock.tick(0);
  assert.equal(t.calls, 0);
  assert.equal(ctx.EventSource.instances.length, 2);
  assert.equal(ctx.EventSource.instances[1].token, 't9');
  assert.deepEqual(ctx.errors, []);
});
