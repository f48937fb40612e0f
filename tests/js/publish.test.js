'use strict';
// client.publish(): a `publish` command on the open WebSocket, answered by
// `published` / `publish_error` with its id, or a POST of {channel, data} to
// the subscribe URL; PublishError for every way it fails.

const test = require('node:test');
const assert = require('node:assert/strict');
const vm = require('node:vm');
const {setup, frames: F, TorChannels} = require('./fakes.js');

const {PublishError, ErrorCode} = TorChannels;

async function socket(ctx) {
  await ctx.clock.tick(0);
  const ws = ctx.WebSocket.instances[ctx.WebSocket.instances.length - 1];
  ws.open();
  ws.frame(F.connected('websocket'));
  return ws;
}

/** A client connected over a WebSocket carrying `room`. */
async function connected(options = {}) {
  const ctx = setup(Object.assign({transport: 'websocket', websocketUrl: 'ws://x/ws'}, options));
  ctx.client.subscribe('room', () => {}, {onError: (e) => ctx.refused.push(e)});
  ctx.refused = [];
  const ws = await socket(ctx);
  ws.frame(F.subscribed('room', 0));
  return Object.assign(ctx, {ws});
}

/** The outcome of a publish: the result, or the PublishError's fields. */
function outcome(promise) {
  return promise.then((result) => ({result}), (err) => {
    assert.ok(err instanceof PublishError, `a PublishError: ${err}`);
    assert.ok(err instanceof Error);
    assert.equal(err.name, 'PublishError');
    return {code: err.code, message: err.message, retry: err.retry, retryAfter: err.retryAfter, status: err.status,
      channel: err.channel};
  });
}

const publishes = (ws) => ws.sent.filter((c) => c.type === 'publish');

// ---- over the WebSocket ----

test('websocket: each publish is a command with a fresh id; answers match by id, in any order', async () => {
  const ctx = await connected();
  const first = outcome(ctx.client.publish('room', {text: 'one'}));
  const second = outcome(ctx.client.publish('lobby', {text: 'two', n: [1, 2]}));
  const sent = publishes(ctx.ws);
  assert.deepEqual(sent.map(({type, channel, data}) => ({type, channel, data})), [
    {type: 'publish', channel: 'room', data: {text: 'one'}},
    {type: 'publish', channel: 'lobby', data: {text: 'two', n: [1, 2]}},
  ]);
  const [a, b] = sent.map((c) => c.id);
  assert.ok(Number.isInteger(a) && Number.isInteger(b) && a !== b, `two ids: ${a}, ${b}`);
  // The second is answered first.
  ctx.ws.frame(F.published(b, 'lobby', 7, 'e9'), F.published(a, 'room', 19, '3f9a0c12'));
  assert.deepEqual(await second, {result: {channel: 'lobby', epoch: 'e9', offset: 7}});
  assert.deepEqual(await first, {result: {channel: 'room', epoch: '3f9a0c12', offset: 19}});
  assert.equal(ctx.http.requests.length, 0, 'no HTTP request');
  // A third publish gets an id of its own too; an answer for an unknown id is ignored.
  const third = outcome(ctx.client.publish('room', {text: 'three'}));
  const c = publishes(ctx.ws)[2].id;
  assert.ok(c !== a && c !== b);
  ctx.ws.frame(F.published(a, 'room', 20), F.published(c, 'room', 21));
  assert.deepEqual(await third, {result: {channel: 'room', epoch: 'e1', offset: 21}});
  assert.equal(ctx.client.state, 'connected');
  assert.equal(ctx.events.filter((e) => e.event === 'error').length, 0);
});

test('websocket: publish_error rejects with the server\'s code, message and retry; nothing else is touched', async () => {
  const ctx = await connected();
  const forbidden = outcome(ctx.client.publish('room', {text: 'hi'}));
  const limited = outcome(ctx.client.publish('room', {text: 'again'}));
  const backend = outcome(ctx.client.publish('room', {text: 'spam'}));
  const [a, b, c] = publishes(ctx.ws).map((cmd) => cmd.id);
  ctx.ws.frame(
    F.publishError(b, 'room', 'rate_limited', {message: 'slow down', retry: true, retry_after: 0.4}),
    F.publishError(a, 'room', 'publish_forbidden', {message: 'room is read-only'}),
    F.publishError(c, 'room', 'muted', {message: 'you are muted'}), // a publish backend's own code
  );
  assert.deepEqual(await forbidden, {code: 'publish_forbidden', message: 'room is read-only', retry: false,
    retryAfter: null, status: 0, channel: 'room'});
  assert.deepEqual(await limited, {code: 'rate_limited', message: 'slow down', retry: true, retryAfter: 0.4,
    status: 0, channel: 'room'});
  assert.deepEqual(await backend, {code: 'muted', message: 'you are muted', retry: false, retryAfter: null,
    status: 0, channel: 'room'});
  assert.deepEqual(ctx.refused, [], 'no onError: the channel is not refused');
  assert.equal(ctx.events.filter((e) => e.event === 'error').length, 0, 'no error event');
  ctx.ws.frame(F.message('room', 1, {text: 'still here'}));
  assert.equal(ctx.client.state, 'connected');
});

test('websocket: a publish_error without a retry flag is retryable by its code', async () => {
  const ctx = await connected();
  const codes = ['proxy_unavailable', 'broker_unavailable', 'rate_limited', 'proxy_error', 'publish_too_large'];
  const calls = codes.map(() => outcome(ctx.client.publish('room', {text: 'x'})));
  publishes(ctx.ws).forEach((cmd, i) => {
    const f = F.publishError(cmd.id, 'room', codes[i]);
    delete f.retry;
    ctx.ws.frame(f);
  });
  assert.deepEqual((await Promise.all(calls)).map((o) => [o.code, o.retry]), [['proxy_unavailable', true],
    ['broker_unavailable', true], ['rate_limited', true], ['proxy_error', false], ['publish_too_large', false]]);
});

test('websocket: the socket closing before the answer rejects with connection_lost (retry), not sent again', async () => {
  const ctx = await connected();
  const waiting = outcome(ctx.client.publish('room', {text: 'lost?'}));
  const id = publishes(ctx.ws)[0].id;
  const old = ctx.ws;
  old.drop(1006);
  const got = await waiting;
  assert.equal(got.code, 'connection_lost');
  assert.equal(got.retry, true);
  assert.equal(got.status, 0);
  assert.match(got.message, /may or may not have been published/);
  // The client reconnects; the command is not repeated on the new socket, nor over HTTP.
  await ctx.clock.tick(1000);
  const ws = await socket(ctx);
  assert.notEqual(ws, old);
  assert.deepEqual(publishes(ws), []);
  assert.equal(ctx.http.requests.length, 0);
  // A late answer on the old socket finds nothing waiting.
  old.frame(F.published(id, 'room', 3));
  // The new socket carries new publishes.
  const next = outcome(ctx.client.publish('room', {text: 'again'}));
  ws.frame(F.published(publishes(ws)[0].id, 'room', 4));
  assert.deepEqual(await next, {result: {channel: 'room', epoch: 'e1', offset: 4}});
});

test('websocket: close() and a server disconnect reject what waits with connection_lost', async () => {
  const ctx = await connected();
  const closed = outcome(ctx.client.publish('room', {text: 'a'}));
  ctx.client.close();
  assert.deepEqual([(await closed).code, (await closed).retry], ['connection_lost', true]);
  const again = await connected();
  const kicked = outcome(again.client.publish('room', {text: 'b'}));
  again.ws.frame(F.disconnect('disconnected_by_server', false));
  assert.equal((await kicked).code, 'connection_lost');
});

test('websocket: no answer within requestTimeout rejects with timeout (retry); a late answer is ignored', async () => {
  const ctx = await connected({requestTimeout: 3000});
  const waiting = outcome(ctx.client.publish('room', {text: 'slow'}));
  await ctx.clock.tick(2999);
  ctx.ws.frame(F.ping());
  await ctx.clock.tick(1);
  const got = await waiting;
  assert.deepEqual([got.code, got.retry, got.status], ['timeout', true, 0]);
  ctx.ws.frame(F.published(publishes(ctx.ws)[0].id, 'room', 5));
  assert.equal(ctx.client.state, 'connected');
});

test('websocket: the answer for a channel being unsubscribed still reaches its publish', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  const token = ctx.client.subscribe('room', () => {});
  ctx.client.subscribe('keep', () => {});
  const ws = await socket(ctx);
  ws.frame(F.subscribed('room', 0), F.subscribed('keep', 0));
  const done = outcome(ctx.client.publish('room', {text: 'bye'}));
  const refused = outcome(ctx.client.publish('room', {text: 'bye again'}));
  ctx.client.unsubscribe(token);
  await ctx.clock.tick(0);
  assert.deepEqual(ws.sent.slice(1).map((c) => c.type), ['publish', 'publish', 'unsubscribe']);
  const [a, b] = publishes(ws).map((c) => c.id);
  ws.frame(F.published(a, 'room', 2), F.publishError(b, 'room', 'rate_limited', {retry: true, retry_after: 1}));
  assert.deepEqual(await done, {result: {channel: 'room', epoch: 'e1', offset: 2}});
  assert.deepEqual([(await refused).code, (await refused).retryAfter], ['rate_limited', 1]);
});

test('a WebSocket not open yet, or under an older token than setToken\'s, leaves the publish to HTTP', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws', token: 'T1'});
  ctx.client.subscribe('room', () => {});
  await ctx.clock.tick(0);
  const ws = ctx.WebSocket.instances[0];
  ctx.client.publish('room', {text: 'early'});
  assert.equal(ctx.http.requests.length, 1, 'connecting: over HTTP');
  assert.equal(ctx.http.last().token, 'T1');
  ws.open();
  ws.frame(F.connected('websocket'));
  ctx.client.setToken('T2'); // the socket keeps T1
  ctx.client.publish('room', {text: 'new token'});
  assert.deepEqual(publishes(ws), []);
  assert.equal(ctx.http.requests.length, 2);
  assert.equal(ctx.http.last().token, 'T2');
});

// ---- over HTTP ----

test('HTTP: a POST of {channel, data} to the subscribe URL, with the token and the credentials of reads', async () => {
  const ctx = setup({url: 'http://test.invalid/channels?app=1&token=old', token: 'T1', withCredentials: true});
  const call = outcome(ctx.client.publish('room:1', {text: 'hi', nested: {a: [1, null]}}));
  assert.equal(ctx.client.state, 'disconnected', 'a publish connects nothing');
  const req = ctx.http.last();
  assert.equal(ctx.http.requests.length, 1);
  assert.equal(req.path, '/channels');
  assert.equal(req.url, 'http://test.invalid/channels?app=1&token=T1');
  assert.deepEqual(req.tokens, ['T1'], 'the client\'s token replaces the one in url');
  assert.equal(req.init.method, 'POST');
  assert.deepEqual(req.init.headers, {'Content-Type': 'application/json'});
  assert.equal(req.init.credentials, 'include');
  assert.deepEqual(req.sent(), {channel: 'room:1', data: {text: 'hi', nested: {a: [1, null]}}});
  req.json({channel: 'room:1', epoch: '3f9a0c12', offset: 19});
  assert.deepEqual(await call, {result: {channel: 'room:1', epoch: '3f9a0c12', offset: 19}});
  assert.equal(ctx.clock.timers.size, 0, 'no timer left behind');
});

test('HTTP: without a token none is sent, and credentials stay same-origin', async () => {
  const ctx = setup();
  ctx.client.publish('room', {text: 'hi'});
  const req = ctx.http.last();
  assert.equal(req.url, 'http://test.invalid/channels');
  assert.equal(req.init.credentials, 'same-origin');
});

test('HTTP transports publish over HTTP while connected, beside the poll', async () => {
  const ctx = setup({transport: 'longpoll', token: 'T1'});
  ctx.client.subscribe('room', () => {});
  await ctx.clock.tick(0);
  const poll = ctx.http.last();
  assert.equal(poll.transport, 'longpoll');
  const call = outcome(ctx.client.publish('room', {text: 'hi'}));
  const req = ctx.http.last();
  assert.notEqual(req, poll);
  assert.deepEqual([req.init.method, req.transport, req.token], ['POST', null, 'T1']);
  req.json({channel: 'room', epoch: 'e1', offset: 1});
  assert.deepEqual(await call, {result: {channel: 'room', epoch: 'e1', offset: 1}});
  assert.equal(poll.aborted, false, 'the poll is not disturbed');
});

test('HTTP errors: the body\'s code and message, the status, retry and retryAfter', async () => {
  const ctx = setup();
  const body = (code, extra = {}) => Object.assign({error: code, message: `m ${code}`}, extra);
  const cases = [
    // [status, body, headers, expected {code, retry, retryAfter}]
    [400, body('bad_json'), {}, ['bad_json', false, null]],
    [400, body('invalid_channel'), {}, ['invalid_channel', false, null]],
    [400, body('invalid_message'), {}, ['invalid_message', false, null]],
    [403, body('publish_forbidden'), {}, ['publish_forbidden', false, null]],
    [403, body('token_expired'), {}, ['token_expired', false, null]],
    [403, body('token_required'), {}, ['token_required', false, null]],
    [403, body('muted'), {}, ['muted', false, null]], // a publish backend's own code
    [413, body('publish_too_large'), {}, ['publish_too_large', false, null]],
    [429, body('rate_limited'), {'Retry-After': '2'}, ['rate_limited', true, 2]],
    [429, body('rate_limited', {retry_after: 0.25}), {'Retry-After': '1'}, ['rate_limited', true, 0.25]],
    [503, body('proxy_unavailable'), {}, ['proxy_unavailable', true, null]],
    [503, body('proxy_error'), {}, ['proxy_error', false, null]],
    [503, body('broker_unavailable'), {'Retry-After': '5'}, ['broker_unavailable', true, 5]],
  ];
  for (const [status, doc, headers, [code, retry, retryAfter]] of cases) {
    const call = outcome(ctx.client.publish('room', {text: 'x'}));
    ctx.http.last().reply(status, doc, headers);
    assert.deepEqual(await call, {code, message: `m ${code}`, retry, retryAfter, status, channel: 'room'},
      `${status} ${code}`);
  }
  assert.equal(ErrorCode.RATE_LIMITED, 'rate_limited');
});

test('HTTP: an answer without a torchannels body is http_error (retry for 502-504); a bad 200 is bad_answer', async () => {
  const ctx = setup();
  const cases = [
    [502, '<html>Bad Gateway</html>', 'http_error', true],
    [504, '', 'http_error', true],
    [500, 'oops', 'http_error', false],
    [404, 'not here', 'http_error', false],
    [200, '{"cursor": "", "frames": []}', 'bad_answer', false],
    [200, 'not json', 'bad_answer', false],
  ];
  for (const [status, text, code, retry] of cases) {
    const call = outcome(ctx.client.publish('room', {text: 'x'}));
    ctx.http.last().reply(status, text);
    const got = await call;
    assert.deepEqual([got.code, got.retry, got.status], [code, retry, status], `${status} ${text}`);
  }
});

test('HTTP: Retry-After as an HTTP date counts the seconds from now', async () => {
  const ctx = setup({now: () => Date.parse('2026-01-01T00:00:00Z')});
  const call = outcome(ctx.client.publish('room', {text: 'x'}));
  ctx.http.last().reply(429, {error: 'rate_limited', message: 'slow'}, {'Retry-After': 'Thu, 01 Jan 2026 00:00:30 GMT'});
  assert.equal((await call).retryAfter, 30);
});

test('HTTP: a network failure is network_error (retry); no answer within requestTimeout is timeout', async () => {
  const ctx = setup({requestTimeout: 1000});
  const failed = outcome(ctx.client.publish('room', {text: 'x'}));
  ctx.http.last().fail();
  const got = await failed;
  assert.deepEqual([got.code, got.retry, got.status, got.retryAfter], ['network_error', true, 0, null]);
  assert.match(got.message, /fetch failed/);
  const slow = outcome(ctx.client.publish('room', {text: 'y'}));
  await ctx.clock.tick(1000);
  const late = await slow;
  assert.deepEqual([late.code, late.retry, late.status], ['timeout', true, 0]);
  assert.ok(ctx.http.last().aborted, 'the request was aborted');
  assert.equal(ctx.clock.timers.size, 0, 'no timer left behind');
});

test('HTTP: a fetch that throws at once is a network_error too', async () => {
  const ctx = setup({fetch: () => { throw new TypeError('blocked'); }});
  const got = await outcome(ctx.client.publish('room', {text: 'x'}));
  assert.deepEqual([got.code, got.retry], ['network_error', true]);
});

// ---- arguments ----

class Point { constructor() { this.x = 1; } }
const cyclic = {};
cyclic.self = cyclic;

test('bad arguments reject with invalid_channel or invalid_message, status 0, and send nothing', async () => {
  for (const transport of ['websocket', 'longpoll']) {
    const ctx = setup({transport, websocketUrl: 'ws://x/ws'});
    ctx.client.subscribe('room', () => {});
    await ctx.clock.tick(0);
    let ws = null;
    if (transport === 'websocket') ws = await socket(ctx);
    const before = ctx.http.requests.length;
    const cases = [
      ['', {text: 'x'}, 'invalid_channel'],
      ['no spaces', {text: 'x'}, 'invalid_channel'],
      ['x'.repeat(129), {text: 'x'}, 'invalid_channel'],
      [42, {text: 'x'}, 'invalid_channel'],
      [undefined, {text: 'x'}, 'invalid_channel'],
      ['room', undefined, 'invalid_message'],
      ['room', null, 'invalid_message'],
      ['room', 'hi', 'invalid_message'],
      ['room', 7, 'invalid_message'],
      ['room', [1, 2], 'invalid_message'],
      ['room', new Date(0), 'invalid_message'],
      ['room', new Map(), 'invalid_message'],
      ['room', new Point(), 'invalid_message'],
      ['room', {text: 'x', sender: {user: 'admin'}}, 'invalid_message'],
      ['room', {channel: 'other'}, 'invalid_message'],
      ['room', {ts: 1, epoch: 'e', offset: 3}, 'invalid_message'],
      ['room', cyclic, 'invalid_message'],
      ['room', {big: 10n}, 'invalid_message'],
    ];
    for (const [channel, data, code] of cases) {
      let promise;
      assert.doesNotThrow(() => { promise = ctx.client.publish(channel, data); }, 'never throws');
      const got = await outcome(promise);
      assert.equal(got.code, code, `${transport}: ${String(channel)} ${String(data)}`);
      assert.deepEqual([got.status, got.retry, got.retryAfter], [0, false, null]);
      assert.equal(got.channel, typeof channel === 'string' ? channel : null);
    }
    assert.equal(ctx.http.requests.length, before, `${transport}: no HTTP request`);
    if (ws) assert.deepEqual(publishes(ws), [], 'no command');
    const reserved = await outcome(ctx.client.publish('room', {sender: 1, ts: 2}));
    assert.match(reserved.message, /must not carry ts, sender: the server sets them/);
    ctx.client.close();
  }
});

test('plain objects of any kind are accepted: another realm\'s, Object.create(null)', async () => {
  const ctx = setup();
  const bare = Object.create(null);
  bare.text = 'bare';
  for (const data of [vm.runInNewContext('({text: "framed"})'), bare, {}]) {
    const call = outcome(ctx.client.publish('room', data));
    assert.deepEqual(ctx.http.last().sent().data, Object.assign({}, data));
    ctx.http.last().json({channel: 'room', epoch: 'e1', offset: 1});
    assert.ok((await call).result);
  }
});

test('PublishError is exported, and constructible as the d.ts declares', () => {
  const err = new PublishError('rate_limited', 'slow down', {retry: true, retryAfter: 2, status: 429, channel: 'c'});
  assert.deepEqual([err.name, err.code, err.message, err.retry, err.retryAfter, err.status, err.channel],
    ['PublishError', 'rate_limited', 'slow down', true, 2, 429, 'c']);
  const bare = new PublishError('timeout');
  assert.deepEqual([bare.message, bare.retry, bare.retryAfter, bare.status, bare.channel],
    ['timeout', false, null, 0, null]);
});
