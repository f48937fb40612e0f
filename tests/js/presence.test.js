'use strict';
// Who is here: the live member list of a presence channel (a snapshot from
// `subscribed`, then `presence` frames, replaced by the next snapshot after a
// reconnect), the one-off read client.presence() over WebSocket and HTTP,
// and the client id sent back on polls.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, frames: F, TorChannels} = require('./fakes.js');

const ANN = {user: 'ann', info: {name: 'Ann'}, clients: 2};
const BOB = {user: 'bob', info: null, clients: 1};

/** Every 'presence' event, and a short form of each: 'snapshot|diff users=N [members]'. */
function watch(client) {
  const events = [];
  client.on('presence', (e) => events.push(e));
  const short = () => events.map((e) => `${e.snapshot ? 'snapshot' : 'diff'} ${e.channel} users=${e.users} ` +
    `[${e.members.map((m) => `${m.user}*${m.clients}`).join(' ')}]${e.complete ? '' : ' partial'}`);
  return {events, short};
}

async function socket(ctx) {
  await ctx.clock.tick(0);
  const ws = ctx.WebSocket.instances[ctx.WebSocket.instances.length - 1];
  ws.open();
  ws.frame(F.connected('websocket'));
  return ws;
}

async function stream(ctx) {
  await ctx.clock.tick(0);
  const s = ctx.http.last().stream();
  s.write(F.connected('stream'));
  return s;
}

test('a snapshot, then joins and leaves applied: each change is one presence event with the whole list', async () => {
  const ctx = setup({transport: 'stream'});
  const p = watch(ctx.client);
  ctx.client.subscribe('room', () => {});
  const s = await stream(ctx);
  assert.equal(ctx.client.members('room'), null, 'no snapshot yet');
  s.write(F.snapshot('room', {clients: 3, users: 2, members: [BOB, ANN]}));
  await ctx.clock.tick(0);
  assert.deepEqual(p.events[0], {channel: 'room', members: [ANN, BOB], users: 2, clients: 3, complete: true,
    joins: [], leaves: [], snapshot: true});
  s.write(F.presence('room', [{user: 'carl', info: {name: 'Carl'}}], ['bob']));
  await ctx.clock.tick(0);
  assert.deepEqual(p.events[1], {channel: 'room', users: 2, clients: 3, complete: true, snapshot: false,
    members: [ANN, {user: 'carl', info: {name: 'Carl'}, clients: 1}],
    joins: [{user: 'carl', info: {name: 'Carl'}}], leaves: [{user: 'bob'}]});
  assert.deepEqual(ctx.client.members('room'), p.events[1].members);
  // A join the snapshot already had and a leave of someone absent change nothing but say what came.
  s.write(F.presence('room', ['ann'], ['zed']));
  await ctx.clock.tick(0);
  assert.deepEqual(p.short(), ['snapshot room users=2 [ann*2 bob*1]', 'diff room users=2 [ann*2 carl*1]',
    'diff room users=2 [ann*2 carl*1]']);
  assert.deepEqual(p.events[2].joins, [{user: 'ann', info: null}]);
  // The list handed out is the app's: changing it changes nothing inside.
  ctx.client.members('room').pop();
  assert.equal(ctx.client.members('room').length, 2);
});

test('the list is sorted by user id in code point order, as the server pages it', async () => {
  const ctx = setup({transport: 'stream'});
  ctx.client.subscribe('room', () => {});
  const s = await stream(ctx);
  s.write(F.snapshot('room', {clients: 1, users: 1, members: [{user: 'b', info: null, clients: 1}]}));
  // U+1F600 (a surrogate pair in UTF-16) sorts after U+FF5E in code points, before it in UTF-16 units.
  s.write(F.presence('room', ['\u{1F600}', '\uFF5E', 'B', 'a']));
  await ctx.clock.tick(0);
  assert.deepEqual(ctx.client.members('room').map((m) => m.user), ['B', 'a', 'b', '\uFF5E', '\u{1F600}']);
});

test('websocket: after a reconnect the new snapshot replaces the list, whatever diffs came before', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  const p = watch(ctx.client);
  ctx.client.subscribe('room', () => {});
  let ws = await socket(ctx);
  ws.frame(F.snapshot('room', {clients: 3, users: 2, members: [ANN, BOB]}), F.presence('room', ['carl']));
  assert.deepEqual(ctx.client.members('room').map((m) => m.user), ['ann', 'bob', 'carl']);
  ws.drop(1006);
  // While away, diffs are missed: the server's new snapshot is the truth.
  await ctx.clock.tick(750);
  ws = await socket(ctx);
  assert.deepEqual(ws.sent, [{type: 'subscribe', channels: ['room'], cursor: 'room=e1:0'}]);
  ws.frame(F.snapshot('room', {clients: 1, users: 1, members: [{user: 'dora', info: null, clients: 1}]}));
  assert.deepEqual(p.short(), ['snapshot room users=2 [ann*2 bob*1]', 'diff room users=3 [ann*2 bob*1 carl*1]',
    'snapshot room users=1 [dora*1]']);
  assert.deepEqual(ctx.client.members('room').map((m) => m.user), ['dora']);
});

test('a poll answer\'s snapshot replaces the list too (HTTP transports resubscribe on each request)', async () => {
  const ctx = setup({transport: 'poll'});
  const p = watch(ctx.client);
  ctx.client.subscribe('room', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.snapshot('room', {clients: 2, users: 2, members: [ANN, BOB]})], 'room=e1:0');
  await ctx.clock.tick(2000);
  ctx.http.last().answer([F.presence('room', [], ['ann'])], 'room=e1:0');
  await ctx.clock.tick(2000);
  ctx.http.last().answer([F.snapshot('room', {clients: 2, users: 1, members: [{user: 'bob', info: null, clients: 2}]})],
    'room=e1:0');
  await ctx.clock.tick(0);
  assert.deepEqual(p.short(), ['snapshot room users=2 [ann*2 bob*1]', 'diff room users=1 [bob*1]',
    'snapshot room users=1 [bob*2]']);
});

test('sse: presence frames arrive as `presence` events', async () => {
  const ctx = setup({transport: 'sse'});
  const p = watch(ctx.client);
  ctx.client.subscribe('room', () => {});
  await ctx.clock.tick(0);
  const es = ctx.EventSource.instances[0];
  es.frame(F.connected('sse'), F.snapshot('room', {clients: 1, users: 1, members: [BOB]}), F.presence('room', ['ann']));
  await ctx.clock.tick(0);
  assert.deepEqual(p.short(), ['snapshot room users=1 [bob*1]', 'diff room users=2 [ann*1 bob*1]']);
});

test('a first page only: complete is false, users counts those beyond it, joins and leaves apply', async () => {
  const ctx = setup({transport: 'stream'});
  const p = watch(ctx.client);
  ctx.client.subscribe('big', () => {});
  const s = await stream(ctx);
  s.write(F.snapshot('big', {clients: 400, users: 250, members: [ANN, BOB], next: 'Ym9i.sig'}));
  s.write(F.presence('big', ['aaron'], ['zoe', 'bob']));
  await ctx.clock.tick(0);
  assert.deepEqual(p.short(), ['snapshot big users=250 [ann*2 bob*1] partial',
    'diff big users=249 [aaron*1 ann*2] partial']);
  assert.equal(p.events[1].clients, 400, 'clients as of the snapshot');
});

test('no list for channels without presence, unsubscribed or refused: their frames emit nothing', async () => {
  const ctx = setup({transport: 'stream'});
  const p = watch(ctx.client);
  const plain = ctx.client.subscribe('plain', () => {});
  const room = ctx.client.subscribe('room', () => {});
  ctx.client.subscribe('other', () => {}, {onError: () => {}});
  let s = await stream(ctx);
  s.write(F.subscribed('plain', 0), F.presence('plain', ['ann']), F.snapshot('room', {clients: 1, users: 1,
    members: [BOB]}), F.snapshot('other', {clients: 1, users: 1, members: [BOB]}));
  await ctx.clock.tick(0);
  assert.equal(ctx.client.members('plain'), null);
  assert.equal(ctx.client.members('nowhere'), null);
  s.write(F.error('other', 'forbidden'));
  await ctx.clock.tick(0);
  assert.equal(ctx.client.members('other'), null, 'refused: no list');
  ctx.client.unsubscribe(room);
  await ctx.clock.tick(0);
  assert.equal(ctx.client.members('room'), null, 'unsubscribed: no list');
  s = ctx.http.last().stream();
  s.write(F.connected('stream'), F.presence('room', ['late']));
  await ctx.clock.tick(0);
  assert.deepEqual(p.short(), ['snapshot room users=1 [bob*1]', 'snapshot other users=1 [bob*1]']);
  ctx.client.unsubscribe(plain);
});

test('a listener that throws becomes an error event; the list is still applied', async () => {
  const ctx = setup({transport: 'stream'});
  ctx.client.on('presence', () => { throw new Error('app bug'); });
  ctx.client.subscribe('room', () => {});
  const s = await stream(ctx);
  s.write(F.snapshot('room', {clients: 1, users: 1, members: [BOB]}), F.presence('room', ['ann']));
  await ctx.clock.tick(0);
  assert.deepEqual(ctx.client.members('room').map((m) => m.user), ['ann', 'bob']);
  assert.deepEqual(ctx.events.filter((e) => e.event === 'error').map((e) => [e.type, e.error.message]),
    [['callback', 'app bug'], ['callback', 'app bug']]);
});

// ---- client.presence(): one page, read now ----

const PAGE = {members: [ANN, BOB], next: 'Ym9i.sig', clients: 3, users: 5};

test('websocket: presence() is a presence command, answered by presence_page in order per channel', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws', token: 'T1'});
  ctx.client.subscribe('room', () => {});
  const ws = await socket(ctx);
  ws.frame(F.snapshot('room', {clients: 3, users: 5, members: [ANN]}));
  const first = ctx.client.presence('room', {limit: 2});
  const second = ctx.client.presence('room', {after: 'Ym9i.sig'});
  assert.deepEqual(ws.sent.slice(1), [{type: 'presence', channel: 'room', limit: 2},
    {type: 'presence', channel: 'room', after: 'Ym9i.sig'}]);
  ws.frame(Object.assign({type: 'presence_page', channel: 'room'}, PAGE),
    {type: 'presence_page', channel: 'room', members: [], next: null, clients: 3, users: 5});
  assert.deepEqual(await first, Object.assign({channel: 'room'}, PAGE));
  assert.deepEqual(await second, {channel: 'room', members: [], next: null, clients: 3, users: 5});
  assert.equal(ctx.http.requests.length, 0, 'no HTTP request');
});

test('websocket: a channel the socket does not carry is read over HTTP', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws', token: 'T1'});
  ctx.client.subscribe('room', () => {});
  const ws = await socket(ctx);
  const read = ctx.client.presence('lobby');
  assert.equal(ws.sent.length, 1, 'only the subscribe');
  const req = ctx.http.last();
  assert.equal(req.presence, 'lobby');
  req.json(Object.assign({channel: 'lobby'}, PAGE));
  assert.deepEqual(await read, Object.assign({channel: 'lobby'}, PAGE));
});

test('HTTP: presence() GETs the subscribe URL with presence=, after=, limit= and the token', async () => {
  const ctx = setup({url: 'http://test.invalid/channels?app=1', token: 'T1', withCredentials: true});
  const read = ctx.client.presence('room', {after: 'a b', limit: 50});
  assert.equal(ctx.client.state, 'disconnected', 'a read connects nothing');
  const req = ctx.http.last();
  assert.equal(req.path, '/channels');
  assert.deepEqual([req.presence, req.after, req.limit, req.token, req.transport], ['room', 'a b', '50', 'T1', null]);
  assert.match(req.url, /[?&]app=1&/);
  assert.equal(req.init.credentials, 'include');
  req.json(Object.assign({channel: 'room'}, PAGE));
  assert.deepEqual(await read, Object.assign({channel: 'room'}, PAGE));
});

test('a refused read rejects with a PresenceError naming the code; the subscription is not touched', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  const refused = [];
  ctx.client.subscribe('room', () => {}, {onError: (e) => refused.push(e)});
  const ws = await socket(ctx);
  ws.frame(F.subscribed('room', 0));
  const read = ctx.client.presence('room');
  ws.frame({type: 'error', channel: 'room', code: 'presence_disabled', message: 'room has no presence'});
  await assert.rejects(read, (err) => {
    assert.ok(err instanceof TorChannels.PresenceError);
    assert.ok(err instanceof Error);
    assert.deepEqual([err.name, err.code, err.channel, err.status, err.message],
      ['PresenceError', 'presence_disabled', 'room', null, 'room has no presence']);
    return true;
  });
  assert.deepEqual(refused, []);
  assert.equal(ctx.events.filter((e) => e.event === 'error').length, 0);
  ws.frame(F.message('room', 1, {text: 'still here'}));
  assert.equal(ctx.client.state, 'connected');
});

test('HTTP errors: the server\'s code and status, a network failure, a timeout, an unreadable answer', async () => {
  const ctx = setup({requestTimeout: 1000});
  const cases = [
    [(req) => req.error(400, 'presence_disabled', 'no presence'), 'presence_disabled', 400],
    [(req) => req.error(400, 'invalid_cursor', 'tampered'), 'invalid_cursor', 400],
    [(req) => req.error(403, 'forbidden', 'not yours'), 'forbidden', 403],
    [(req) => req.error(502), 'http_error', 502],
    [(req) => req.fail(), 'unreachable', null],
    [() => ctx.clock.tick(1000), 'timeout', null],
    [(req) => req.json({cursor: '', frames: []}), 'bad_answer', 200],
  ];
  for (const [serve, code, status] of cases) {
    const outcome = ctx.client.presence('room').then(() => 'resolved', (err) => err);
    await serve(ctx.http.last());
    const err = await outcome;
    assert.ok(err instanceof TorChannels.PresenceError, `${code}: ${err}`);
    assert.deepEqual([err.code, err.status, err.channel], [code, status, 'room']);
  }
  assert.ok(ctx.http.requests[5].aborted, 'the late request was aborted');
  assert.equal(ctx.clock.timers.size, 0, 'no timer left behind');
});

test('bad arguments throw a TypeError at once', () => {
  const {client} = setup();
  const typeError = (what) => ({name: 'TypeError', message: new RegExp(`^torchannels: .*${what}`)});
  assert.throws(() => client.presence('no spaces'), typeError('invalid channel name'));
  assert.throws(() => client.presence('room', {limit: 0}), typeError('limit'));
  assert.throws(() => client.presence('room', {limit: 2.5}), typeError('limit'));
  assert.throws(() => client.presence('room', {after: 7}), typeError('after'));
});

test('websocket: a read still waiting when the socket goes is asked again over HTTP', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws', token: 'T1'});
  ctx.client.subscribe('room', () => {});
  const ws = await socket(ctx);
  ws.frame(F.subscribed('room', 0));
  const read = ctx.client.presence('room', {limit: 10});
  ws.drop(1006);
  await ctx.clock.tick(0);
  const req = ctx.http.requests.find((r) => r.presence);
  assert.deepEqual([req.presence, req.limit, req.token], ['room', '10', 'T1']);
  req.json(Object.assign({channel: 'room'}, PAGE));
  assert.deepEqual(await read, Object.assign({channel: 'room'}, PAGE));
  // The old socket's late answer, if any, finds nothing waiting.
  ws.frame(Object.assign({type: 'presence_page', channel: 'room'}, PAGE));
});

test('websocket: a read with no answer within requestTimeout rejects with timeout', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws', requestTimeout: 3000});
  ctx.client.subscribe('room', () => {});
  const ws = await socket(ctx);
  ws.frame(F.subscribed('room', 0));
  const read = ctx.client.presence('room');
  const outcome = read.then(() => 'resolved', (err) => err.code);
  await ctx.clock.tick(2999);
  ws.frame(F.ping());
  await ctx.clock.tick(1);
  assert.equal(await outcome, 'timeout');
});

test('websocket: a presence_page for a channel being unsubscribed still answers its read', async () => {
  const ctx = setup({transport: 'websocket', websocketUrl: 'ws://x/ws'});
  const token = ctx.client.subscribe('room', () => {});
  ctx.client.subscribe('keep', () => {});
  const ws = await socket(ctx);
  ws.frame(F.subscribed('room', 0), F.subscribed('keep', 0));
  const read = ctx.client.presence('room');
  ctx.client.unsubscribe(token);
  await ctx.clock.tick(0);
  assert.deepEqual(ws.sent.slice(1).map((c) => c.type), ['presence', 'unsubscribe']);
  ws.frame(Object.assign({type: 'presence_page', channel: 'room'}, PAGE));
  assert.deepEqual(await read, Object.assign({channel: 'room'}, PAGE));
});

// ---- the client id ----

test('longpoll and poll send back the client id the server gave, and keep the newest', async () => {
  for (const transport of ['longpoll', 'poll']) {
    const ctx = setup({transport});
    ctx.client.subscribe('room', () => {});
    await ctx.clock.tick(0);
    let req = ctx.http.last();
    assert.equal(req.client, null, `${transport}: none before the server named one`);
    req.json({cursor: 'room=e1:0', frames: [F.subscribed('room', 0)], client: 'c1.SIG'});
    await ctx.clock.tick(2000);
    req = ctx.http.last();
    assert.equal(req.client, 'c1.SIG', transport);
    req.json({cursor: 'room=e1:0', frames: [], client: 'c2.SIG'}); // a new id (the old did not verify)
    await ctx.clock.tick(2000);
    assert.equal(ctx.http.last().client, 'c2.SIG', transport);
    ctx.client.close();
  }
});

test('the connected frame\'s client id is sent on a long-poll after a step-down', async () => {
  const ctx = setup({transports: ['stream', 'longpoll']});
  ctx.client.subscribe('room', () => {});
  await ctx.clock.tick(0);
  const s = ctx.http.last().stream();
  s.write(Object.assign(F.connected('stream'), {client: 'c9-1.SIG'}), F.subscribed('room', 0));
  await ctx.clock.tick(0);
  assert.equal(ctx.http.last().client, null, 'the stream request carries none');
  ctx.http.last().error(400, 'unknown_transport', 'no stream here'); // the server now refuses streams
  s.end();
  await ctx.clock.tick(0);
  for (let i = 0; i < 5 && ctx.http.last().transport !== 'longpoll'; i++) {
    if (ctx.http.last().transport === 'stream') ctx.http.last().error(400, 'unknown_transport');
    await ctx.clock.tick(1000);
  }
  assert.equal(ctx.http.last().transport, 'longpoll');
  assert.equal(ctx.http.last().client, 'c9-1.SIG');
});

// ---- polling: no snapshot after a reconnect, no frames between polls ----

test('longpoll: after a reconnect the lists are read again over HTTP and replace what the client had', async () => {
  const ctx = setup({transport: 'longpoll', token: 'T1'});
  const p = watch(ctx.client);
  ctx.client.subscribe('room', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().json({cursor: 'room=e1:0', frames: [F.snapshot('room', {clients: 2, users: 2,
    members: [ANN, BOB]})], client: 'c1.SIG'});
  await ctx.clock.tick(0);
  assert.equal(ctx.http.requests.filter((r) => r.presence).length, 0, 'a fresh snapshot needs no read');
  ctx.http.last().fail(); // the connection is lost; bob leaves meanwhile, and no frame says so
  await ctx.clock.tick(1000);
  const resumed = ctx.http.last();
  assert.equal(resumed.transport, 'longpoll');
  resumed.json({cursor: 'room=e1:0', frames: [], client: 'c1.SIG'}); // a resume: no snapshot
  await ctx.clock.tick(0);
  const read = ctx.http.requests.find((r) => r.presence);
  assert.deepEqual([read.presence, read.token, read.limit, read.after], ['room', 'T1', null, null]);
  read.json({channel: 'room', members: [ANN], next: null, clients: 2, users: 1});
  await ctx.clock.tick(0);
  assert.deepEqual(p.short(), ['snapshot room users=2 [ann*2 bob*1]', 'snapshot room users=1 [ann*2]']);
});

test('poll: the lists are read again every 10 s; a read overtaken by a frame is dropped', async () => {
  const ctx = setup({transport: 'poll'});
  const p = watch(ctx.client);
  ctx.client.subscribe('room', () => {});
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.snapshot('room', {clients: 1, users: 1, members: [BOB]})], 'room=e1:0');
  const reads = () => ctx.http.requests.filter((r) => r.presence);
  for (let i = 0; i < 5; i++) { // polls every 2 s
    await ctx.clock.tick(2000);
    ctx.http.requests.filter((r) => !r.presence).pop().answer([], 'room=e1:0');
  }
  await ctx.clock.tick(0);
  assert.equal(reads().length, 1, 'one read after 10 s');
  // A frame comes before the read's answer: the read may be older than it.
  await ctx.clock.tick(2000);
  ctx.http.requests.filter((r) => !r.presence).pop().answer([F.presence('room', ['carl'])], 'room=e1:0');
  await ctx.clock.tick(0);
  reads()[0].json({channel: 'room', members: [BOB], next: null, clients: 1, users: 1});
  await ctx.clock.tick(0);
  assert.deepEqual(p.short(), ['snapshot room users=1 [bob*1]', 'diff room users=2 [bob*1 carl*1]']);
  // The next read, 10 s after the last, is applied.
  for (let i = 0; i < 5 && reads().length < 2; i++) {
    await ctx.clock.tick(2000);
    ctx.http.requests.filter((r) => !r.presence).pop().answer([], 'room=e1:0');
    await ctx.clock.tick(0);
  }
  assert.equal(reads().length, 2);
  reads()[1].json({channel: 'room', members: [ANN, BOB], next: null, clients: 3, users: 2});
  await ctx.clock.tick(0);
  assert.deepEqual(p.short().slice(2), ['snapshot room users=2 [ann*2 bob*1]']);
});

test('streaming transports never read the lists again by themselves', async () => {
  const ctx = setup({transport: 'stream'});
  ctx.client.subscribe('room', () => {});
  const s = await stream(ctx);
  s.write(F.snapshot('room', {clients: 1, users: 1, members: [BOB]}));
  await ctx.clock.tick(60000);
  s.write(F.ping());
  await ctx.clock.tick(0);
  assert.equal(ctx.http.requests.filter((r) => r.presence).length, 0);
});
