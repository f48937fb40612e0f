'use strict';
// Subscription tokens (the standalone server): the `token` query parameter on
// every request, getToken() for a fresh one when the server says it lapsed
// (reconnect token_expired, close 4002, error token_expired), setToken().

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, recorder, parseCursor, frames: F} = require('./fakes.js');

/** A getToken() that answers from a list, recording each call. */
function tokens(...answers) {
  const calls = [];
  const getToken = () => {
    calls.push(answers.length);
    const next = answers.shift();
    return typeof next === 'function' ? next() : next;
  };
  return {getToken, calls};
}

/** A promise settled by hand. */
function deferred() {
  let resolve, reject;
  const promise = new Promise((a, b) => { resolve = a; reject = b; });
  return {promise, resolve, reject};
}

const errorsOf = (ctx, type) => ctx.events.filter((e) => e.event === 'error' && (!type || e.type === type));

test('the token rides in the query of every HTTP request, EventSource and WebSocket URL', async () => {
  const token = 'eyJ0.a+b/c=';
  for (const transport of ['websocket', 'sse', 'stream', 'longpoll', 'poll']) {
    const ctx = setup({transport, token, url: 'http://test.invalid/channels?token=old&x=1'});
    ctx.client.subscribe('news', () => {});
    await ctx.clock.tick(0);
    const url = transport === 'websocket' ? ctx.WebSocket.instances[0].url
      : transport === 'sse' ? ctx.EventSource.instances[0].url : ctx.http.last().url;
    const q = new URL(url).searchParams;
    assert.deepEqual(q.getAll('token'), [token], `${transport}: ${url}`);
    assert.equal(q.get('x'), '1', 'the rest of the url query is kept');
    if (transport !== 'websocket') assert.deepEqual(q.getAll('channel'), ['news']);
  }
  const plain = setup({transport: 'stream'});
  plain.client.subscribe('news', () => {});
  await plain.clock.tick(0);
  assert.ok(!plain.http.last().url.includes('token'), 'no token, no parameter');
});

test('every later poll carries the token too', async () => {
  const ctx = setup({transport: 'longpoll', token: 't1'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.subscribed('a', 0)]);
  await ctx.clock.tick(0);
  assert.deepEqual(ctx.http.requests.map((r) => r.token), ['t1', 't1']);
});

test('token and getToken are checked', () => {
  assert.throws(() => setup({token: 42}), TypeError);
  assert.throws(() => setup({getToken: 'abc'}), TypeError);
  const {client} = setup({transport: 'poll'});
  assert.throws(() => client.setToken({}), TypeError);
});

test('without a token, getToken() is asked before the first connection, once', async () => {
  const d = deferred();
  const t = tokens(() => d.promise);
  const ctx = setup({transport: 'stream', getToken: t.getToken});
  ctx.client.subscribe('a', () => {});
  ctx.client.subscribe('b', () => {});
  await ctx.clock.tick(0);
  assert.equal(t.calls.length, 1);
  assert.equal(ctx.http.requests.length, 0, 'waits for the token');
  assert.equal(ctx.client.state, 'connecting');
  d.resolve('fresh');
  await ctx.clock.tick(0);
  assert.equal(ctx.http.requests.length, 1);
  assert.equal(ctx.http.last().token, 'fresh');
  assert.deepEqual(ctx.http.last().channels, ['a', 'b']);
  ctx.http.last().stream().write(F.connected('stream'), F.subscribed('a', 0));
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'connected');
  assert.equal(t.calls.length, 1);
});

test('with a token, getToken() is not asked until the token lapses', async () => {
  const t = tokens('t2');
  const ctx = setup({transport: 'longpoll', token: 't1', getToken: t.getToken});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  assert.equal(t.calls.length, 0);
  assert.equal(ctx.http.last().token, 't1');
});

test('getToken() giving null connects without a token', async () => {
  const t = tokens(null);
  const ctx = setup({transport: 'poll', getToken: t.getToken});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  assert.equal(t.calls.length, 1);
  assert.equal(ctx.http.requests.length, 1);
  assert.equal(ctx.http.last().token, null);
  assert.deepEqual(errorsOf(ctx), []);
});

for (const transport of ['stream', 'sse']) {
  test(`${transport}: reconnect token_expired gets a fresh token and resumes every channel from its position`, async () => {
    const t = tokens(Promise.resolve('t2'));
    const ctx = setup({transport, token: 't1', getToken: t.getToken});
    const r = recorder();
    const errors = [];
    ctx.client.subscribe('a', r.on(), {onError: (e) => errors.push(e)});
    ctx.client.subscribe('b', r.on(), {onError: (e) => errors.push(e)});
    await ctx.clock.tick(0);
    const send = (n, ...frames) => {
      if (transport === 'sse') ctx.EventSource.instances[n].frame(...frames);
      else ctx.http.requests[n].stream().write(...frames);
    };
    const request = (n) => (transport === 'sse' ? ctx.EventSource.instances[n] : ctx.http.requests[n]);
    send(0, F.connected(transport), F.subscribed('a', 0), F.subscribed('b', 4),
      F.message('a', 1, {text: 'a1'}), F.reconnect('token_expired'));
    await ctx.clock.tick(0);
    assert.equal(t.calls.length, 1);
    assert.ok(transport === 'sse' ? request(0).closed : request(0).aborted);
    const next = request(1);
    assert.ok(next, 'reconnected');
    assert.equal(next.token, 't2');
    assert.deepEqual(next.channels, ['a', 'b']);
    assert.deepEqual(parseCursor(next.cursor), {a: 'e1:1', b: 'e1:4'});
    assert.equal(ctx.clock.now, 0, 'at once');
    send(1, F.connected(transport), F.message('a', 2, {text: 'a2'}), F.message('b', 5, {text: 'b5'}));
    await ctx.clock.tick(0);
    assert.deepEqual(r.got, ['a:a1', 'a:a2', 'b:b5']);
    assert.deepEqual(errors, []);
    assert.deepEqual(errorsOf(ctx), []);
    assert.equal(ctx.client.state, 'connected');
    // Renewed within reconnectingDelay: no state change; the 0.1 `connected` event marks the new connection.
    assert.deepEqual(ctx.events.map((e) => [e.event, e.reason]),
      [['connecting', undefined], ['connected', undefined], ['connected', undefined]]);
    assert.deepEqual(ctx.states, ['disconnected>connecting (starting)', `connecting>connected (connected over ${transport})`]);
  });
}

test('websocket: close 4002 gets a fresh token and a new socket that resumes', async () => {
  const t = tokens('t2');
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/channels/ws', token: 't1', getToken: t.getToken});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  const ws = ctx.WebSocket.instances[0];
  assert.equal(ws.token, 't1');
  ws.open();
  ws.frame(F.connected('websocket'), F.subscribed('a', 0), F.message('a', 1));
  ws.drop(4002, 'token_expired');
  await ctx.clock.tick(0);
  assert.equal(t.calls.length, 1);
  assert.equal(ctx.WebSocket.instances.length, 2);
  const next = ctx.WebSocket.instances[1];
  assert.equal(next.url, 'ws://x/channels/ws?token=t2');
  next.open();
  assert.deepEqual(next.sent, [{type: 'subscribe', channels: ['a'], cursor: 'a=e1:1'}]);
  assert.deepEqual(errorsOf(ctx), []);
});

test('websocket: the server\'s reconnect token_expired then close 4002 refresh once', async () => {
  const t = tokens('t2', 't3');
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws', token: 't1', getToken: t.getToken});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  const ws = ctx.WebSocket.instances[0];
  ws.open();
  ws.frame(F.connected('websocket'), F.subscribed('a', 0), F.reconnect('token_expired'));
  ws.drop(4002, 'token_expired');
  await ctx.clock.tick(0);
  assert.equal(t.calls.length, 1);
  assert.equal(ctx.WebSocket.instances.length, 2);
  assert.equal(ctx.WebSocket.instances[1].token, 't2');
});

test('longpoll: error token_expired keeps the channel (no onError) and asks again with a fresh token', async () => {
  const t = tokens('t2');
  const ctx = setup({transport: 'longpoll', token: 't1', getToken: t.getToken});
  const r = recorder();
  const errors = [];
  ctx.client.subscribe('private', r.on(), {onError: (e) => errors.push(e)});
  ctx.client.subscribe('public', r.on());
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.subscribed('private', 0), F.subscribed('public', 0), F.message('private', 1, {text: 'p1'})]);
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.message('public', 1, {text: 'pub1'}), F.error('private', 'token_expired')]);
  await ctx.clock.tick(0);
  assert.deepEqual(errors, []);
  assert.equal(t.calls.length, 1);
  assert.equal(ctx.http.requests.length, 3);
  const next = ctx.http.last();
  assert.equal(next.token, 't2');
  assert.deepEqual(next.channels, ['private', 'public']);
  assert.deepEqual(parseCursor(next.cursor), {private: 'e1:1', public: 'e1:1'});
  next.answer([F.message('private', 2, {text: 'p2'})]);
  await ctx.clock.tick(0);
  assert.deepEqual(r.got, ['private:p1', 'public:pub1', 'private:p2']);
  assert.deepEqual(errorsOf(ctx), []);
});

test('websocket: error token_expired on an in-band subscribe opens a socket with a fresh token', async () => {
  const t = tokens('t2');
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws', token: 't1', getToken: t.getToken});
  const errors = [];
  ctx.client.subscribe('public', () => {});
  await ctx.clock.tick(0);
  const ws = ctx.WebSocket.instances[0];
  ws.open();
  ws.frame(F.connected('websocket'), F.subscribed('public', 3));
  ctx.client.subscribe('private', () => {}, {onError: (e) => errors.push(e)});
  await ctx.clock.tick(0);
  assert.deepEqual(ws.sent[1], {type: 'subscribe', channels: ['private']});
  ws.frame(F.error('private', 'token_expired'));
  await ctx.clock.tick(0);
  assert.deepEqual(errors, []);
  assert.equal(ws.closedWith, 1000);
  const next = ctx.WebSocket.instances[1];
  assert.equal(next.token, 't2');
  next.open();
  assert.deepEqual(next.sent, [{type: 'subscribe', channels: ['public', 'private'], cursor: 'public=e1:3'}]);
});

test('without getToken a lapsed token ends in onError for the channels the server refuses; the others go on', async () => {
  const ctx = setup({transport: 'stream', token: 't1'});
  const r = recorder();
  const errors = [];
  ctx.client.subscribe('private', r.on(), {onError: (e) => errors.push(e)});
  ctx.client.subscribe('public', r.on());
  await ctx.clock.tick(0);
  ctx.http.last().stream().write(F.connected('stream'), F.subscribed('private', 0), F.subscribed('public', 0),
    F.message('private', 1, {text: 'p1'}), F.reconnect('token_expired'));
  await ctx.clock.tick(0);
  assert.equal(ctx.http.requests.length, 2, 'reconnects at once, as for any reconnect frame');
  assert.equal(ctx.http.last().token, 't1');
  assert.deepEqual(parseCursor(ctx.http.last().cursor), {private: 'e1:1', public: 'e1:0'});
  const s = ctx.http.last().stream();
  s.write(F.connected('stream'), F.error('private', 'token_expired'), F.message('public', 1, {text: 'pub1'}));
  await ctx.clock.tick(0);
  assert.deepEqual(errors, [{channel: 'private', code: 'token_expired', message: 'no private'}]);
  assert.deepEqual(r.got, ['private:p1', 'public:pub1']);
  s.end();
  await ctx.clock.tick(750);
  assert.deepEqual(ctx.http.last().channels, ['public'], 'the refused channel is not asked for again');
});

test('without getToken, websocket close 4002 is reported and retried after a pause, as before', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws', token: 't1'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.WebSocket.instances[0].open();
  ctx.WebSocket.instances[0].frame(F.connected('websocket'), F.subscribed('a', 0));
  ctx.WebSocket.instances[0].drop(4002, 'token_expired');
  await ctx.clock.tick(749);
  assert.equal(ctx.WebSocket.instances.length, 1);
  assert.deepEqual(errorsOf(ctx).map((e) => [e.type, e.code]), [['transport', 4002]]);
  await ctx.clock.tick(1);
  assert.equal(ctx.WebSocket.instances.length, 2);
  assert.equal(ctx.WebSocket.instances[1].token, 't1');
});

test('getToken failures (throw, reject, no string) are reported and retried with backoff', async () => {
  const t = tokens(() => { throw new Error('offline'); }, () => Promise.reject(new Error('500')), 42, 'good');
  const ctx = setup({transport: 'poll', getToken: t.getToken});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  assert.equal(t.calls.length, 1);
  const pauses = [];
  for (let i = 0; i < 3; i++) {
    const due = ctx.clock.pending()[0];
    pauses.push(due.at - ctx.clock.now);
    await ctx.clock.tick(due.at - ctx.clock.now);
  }
  assert.deepEqual(pauses, [750, 1000, 1500], 'backoff: 500 + 0.5 * min(20000, 500 * 2^n)');
  assert.equal(t.calls.length, 4);
  assert.equal(ctx.http.requests.length, 1);
  assert.equal(ctx.http.last().token, 'good');
  const failures = errorsOf(ctx, 'token');
  assert.deepEqual(failures.map((e) => e.message), ['offline', '500', failures[2].message]);
  assert.match(failures[2].message, /string/);
  assert.ok(failures[0].error instanceof Error);
});

test('a fresh token that lapses at once is not fetched in a tight loop; a ping shows a token works', async () => {
  const t = tokens('t2', 't3', 't4', 't5', 't6');
  const ctx = setup({transport: 'stream', token: 't1', getToken: t.getToken});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().stream().write(F.connected('stream', 15), F.subscribed('a', 0), F.reconnect('token_expired'));
  await ctx.clock.tick(0);
  assert.equal(t.calls.length, 1, 'the first refresh is at once');
  const pauses = [];
  for (let i = 0; i < 2; i++) {
    ctx.http.last().stream().write(F.connected('stream', 15), F.error('a', 'token_expired'));
    await ctx.clock.tick(0);
    const due = ctx.clock.pending()[0];
    pauses.push(due.at - ctx.clock.now);
    await ctx.clock.tick(due.at - ctx.clock.now);
  }
  assert.deepEqual(pauses, [750, 1000]);
  assert.equal(t.calls.length, 3);
  const s = ctx.http.last().stream();
  s.write(F.connected('stream', 15), F.ping());
  await ctx.clock.tick(0);
  s.write(F.reconnect('token_expired'));
  await ctx.clock.tick(0);
  assert.equal(t.calls.length, 4, 'after a ping the next refresh is at once again');
  assert.equal(ctx.http.last().token, 't5');
});

test('token_required and other token errors go to onError and are not retried; setToken asks again', async () => {
  const ctx = setup({transport: 'longpoll', getToken: tokens(null).getToken});
  const r = recorder();
  const errors = [];
  const onError = (e) => errors.push(`${e.channel}:${e.code}`);
  ctx.client.subscribe('p1', r.on(), {onError});
  ctx.client.subscribe('p2', r.on(), {onError});
  ctx.client.subscribe('mine', r.on(), {onError});
  ctx.client.subscribe('public', r.on());
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.error('p1', 'token_required'), F.error('p2', 'token_bad_signature'),
    F.error('mine', 'forbidden'), F.subscribed('public', 0)]);
  await ctx.clock.tick(30000);
  assert.deepEqual(errors, ['p1:token_required', 'p2:token_bad_signature', 'mine:forbidden']);
  assert.deepEqual(ctx.http.last().channels, ['public']);
  const held = ctx.http.last();
  ctx.client.setToken('good');
  await ctx.clock.tick(0);
  assert.equal(held.aborted, true);
  const next = ctx.http.last();
  assert.equal(next.token, 'good');
  assert.deepEqual(next.channels, ['p1', 'p2', 'public'], 'token refusals asked again, forbidden not');
  assert.equal(next.cursor, 'public=e1:0');
  next.answer([F.subscribed('p1', 0), F.message('p1', 1, {text: 'x'})]);
  await ctx.clock.tick(0);
  assert.deepEqual(r.got, ['p1:x']);
  // forbidden needs an explicit subscribe again, which works with the new token
  ctx.client.subscribe('mine', r.on('again'));
  await ctx.clock.tick(0);
  assert.deepEqual(ctx.http.last().channels, ['p1', 'p2', 'mine', 'public']);
  assert.equal(ctx.http.last().token, 'good');
});

test('setToken then subscribe again works after a refusal when every channel was refused', async () => {
  const ctx = setup({transport: 'stream', token: 'bad'});
  const errors = [];
  ctx.client.subscribe('p', () => {}, {onError: (e) => errors.push(e.code)});
  await ctx.clock.tick(0);
  ctx.http.last().stream().write(F.connected('stream'), F.error('p', 'token_malformed'));
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'disconnected');
  assert.deepEqual(errors, ['token_malformed']);
  ctx.client.setToken('good');
  await ctx.clock.tick(0);
  assert.equal(ctx.http.requests.length, 2, 'the refused channel is asked again with the new token');
  assert.equal(ctx.http.last().token, 'good');
  assert.deepEqual(ctx.http.last().channels, ['p']);
  const got = [];
  ctx.client.subscribe('p', (m) => got.push(m.text));
  await ctx.clock.tick(0);
  ctx.http.last().stream().write(F.connected('stream'), F.subscribed('p', 0), F.message('p', 1, {text: 'ok'}));
  await ctx.clock.tick(0);
  assert.deepEqual(got, ['ok']);
  assert.equal(ctx.client.state, 'connected');
});

test('setToken keeps a live stream; when its old token lapses it reconnects at once with the new one', async () => {
  const t = tokens('from-getToken');
  const ctx = setup({transport: 'stream', token: 't1', getToken: t.getToken});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  const first = ctx.http.last();
  const s = first.stream();
  s.write(F.connected('stream'), F.subscribed('a', 0), F.message('a', 1));
  await ctx.clock.tick(0);
  ctx.client.setToken('t2');
  await ctx.clock.tick(0);
  assert.equal(first.aborted, false, 'not dropped for a new token');
  assert.equal(ctx.http.requests.length, 1);
  s.write(F.reconnect('token_expired'));
  await ctx.clock.tick(0);
  assert.equal(t.calls.length, 0, 'the newer token is used, not getToken()');
  assert.equal(ctx.http.last().token, 't2');
  assert.equal(ctx.http.last().cursor, 'a=e1:1');
});

test('websocket: after setToken a new channel comes with a new socket carrying the new token', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws', token: 't1'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  const ws = ctx.WebSocket.instances[0];
  ws.open();
  ws.frame(F.connected('websocket'), F.subscribed('a', 2));
  ctx.client.setToken('t2');
  await ctx.clock.tick(0);
  assert.equal(ws.closedWith, null);
  ctx.client.subscribe('b', () => {});
  await ctx.clock.tick(0);
  assert.equal(ws.sent.length, 1, 'not in-band: the socket is authorized by t1');
  assert.equal(ws.closedWith, 1000);
  const next = ctx.WebSocket.instances[1];
  assert.equal(next.token, 't2');
  next.open();
  assert.deepEqual(next.sent, [{type: 'subscribe', channels: ['a', 'b'], cursor: 'a=e1:2'}]);
});

test('setToken while getToken() is pending connects with it; the late answer is ignored', async () => {
  const d = deferred();
  const ctx = setup({transport: 'poll', getToken: () => d.promise});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  assert.equal(ctx.http.requests.length, 0);
  ctx.client.setToken('manual');
  await ctx.clock.tick(0);
  assert.equal(ctx.http.requests.length, 1);
  assert.equal(ctx.http.last().token, 'manual');
  d.resolve('late');
  await ctx.clock.tick(0);
  assert.equal(ctx.http.requests.length, 1);
  ctx.http.last().answer([F.subscribed('a', 0)]);
  await ctx.clock.tick(2000);
  assert.equal(ctx.http.last().token, 'manual');
});

test('close() while getToken() is pending: nothing connects afterwards', async () => {
  const d = deferred();
  const ctx = setup({transport: 'poll', getToken: () => d.promise});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.client.close();
  d.resolve('t');
  await ctx.clock.tick(60000);
  assert.equal(ctx.http.requests.length, 0);
  assert.equal(ctx.client.state, 'disconnected');
  assert.equal(ctx.clock.timers.size, 0);
});

test('close() then subscribe again while getToken() was pending: the old answer is dropped, one connection', async () => {
  const first = deferred();
  const t = tokens(() => first.promise, 'second');
  const ctx = setup({transport: 'poll', getToken: t.getToken});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.client.close();
  ctx.client.subscribe('b', () => {});
  first.resolve('first');
  await ctx.clock.tick(0);
  assert.equal(t.calls.length, 2, 'the new connection asks for its own token');
  assert.equal(ctx.http.requests.length, 1);
  assert.equal(ctx.http.last().token, 'second');
  assert.deepEqual(ctx.http.last().channels, ['b']);
});

test('longpoll: a clean answer shows the token works, so the next lapse refreshes at once', async () => {
  const t = tokens('t2', 't3', 't4');
  const ctx = setup({transport: 'longpoll', token: 't1', getToken: t.getToken});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.subscribed('a', 0)]);
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.error('a', 'token_expired')]);
  await ctx.clock.tick(0);
  assert.equal(t.calls.length, 1);
  assert.equal(ctx.http.last().token, 't2');
  ctx.http.last().answer([F.message('a', 1)]);
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.error('a', 'token_expired')]);
  await ctx.clock.tick(0);
  assert.equal(t.calls.length, 2, 'no pause');
  assert.equal(ctx.http.last().token, 't3');
  assert.equal(ctx.http.last().cursor, 'a=e1:1');
  ctx.http.last().answer([F.error('a', 'token_expired')]); // t3 lapsed at once: pause
  await ctx.clock.tick(749);
  assert.equal(t.calls.length, 2);
  await ctx.clock.tick(1);
  assert.equal(t.calls.length, 3);
});

test('an error listener may close() the client on a getToken failure: no retry follows', async () => {
  const t = tokens(() => Promise.reject(new Error('logged out')), 'never');
  const ctx = setup({transport: 'poll', getToken: t.getToken});
  ctx.client.on('error', (e) => { if (e.type === 'token') ctx.client.close(); });
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'disconnected');
  assert.equal(ctx.clock.timers.size, 0, 'no retry pending');
  await ctx.clock.tick(60000);
  assert.equal(t.calls.length, 1);
  assert.equal(ctx.http.requests.length, 0);
});

test('longpoll: a held poll answered with reconnect token_expired asks getToken() and polls on with the cursor', async () => {
  const t = tokens('t2');
  const ctx = setup({transport: 'longpoll', token: 't1', getToken: t.getToken});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.subscribed('a', 0), F.message('a', 1)]);
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.reconnect('token_expired')]);
  await ctx.clock.tick(0);
  assert.equal(t.calls.length, 1);
  assert.equal(ctx.http.requests.length, 3);
  assert.equal(ctx.http.last().token, 't2');
  assert.equal(ctx.http.last().cursor, 'a=e1:1');
  assert.deepEqual(errorsOf(ctx), []);
});
