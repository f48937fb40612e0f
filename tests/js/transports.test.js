'use strict';
// Each transport delivers: it asks for the channels, feeds the frames through
// the callbacks, and polls or reconnects with the cursor.

const test = require('node:test');
const assert = require('node:assert/strict');
const {TorChannels, setup, recorder, frames: F} = require('./fakes.js');

test('websocket subscribes in-band and delivers', async () => {
  const {clock, WebSocket, client, events} = setup({transport: 'websocket', websocketUrl: 'ws://test.invalid/channels/ws'});
  const r = recorder();
  client.subscribe('news', r.on());
  client.subscribe('chat', r.on());
  await clock.tick(0);
  assert.equal(WebSocket.instances.length, 1);
  const ws = WebSocket.instances[0];
  assert.equal(ws.url, 'ws://test.invalid/channels/ws');
  ws.open();
  assert.deepEqual(ws.sent, [{type: 'subscribe', channels: ['news', 'chat']}]);
  ws.frame(F.connected('websocket'), F.subscribed('news'), F.subscribed('chat'),
    F.message('news', 1, {text: 'hi'}), F.message('chat', 1, {text: 'yo'}));
  assert.deepEqual(r.got, ['news:hi', 'chat:yo']);
  assert.equal(client.state, 'connected');
  assert.equal(client.transport, 'websocket');
  assert.deepEqual(events.map((e) => [e.event, e.transport]),
    [['connecting', 'websocket'], ['connected', 'websocket']]);
});

test('the websocket URL defaults to the HTTP url + /ws on the page origin', async () => {
  const cases = [
    ['/channels', {href: 'https://example.org/app/page', protocol: 'https:'}, 'wss://example.org/channels/ws'],
    ['/channels/', {href: 'http://example.org:8080/x', protocol: 'http:'}, 'ws://example.org:8080/channels/ws'],
    ['/channels?token=abc', {href: 'http://example.org/', protocol: 'http:'}, 'ws://example.org/channels/ws?token=abc'],
    ['https://hub.example.org/channels', null, 'wss://hub.example.org/channels/ws'],
  ];
  for (const [url, location, expected] of cases) {
    const {clock, WebSocket, client} = setup({transport: 'websocket', url, location});
    client.subscribe('news', () => {});
    await clock.tick(0);
    assert.equal(WebSocket.instances[0].url, expected, url);
  }
});

test('sse delivers default message events and named frames', async () => {
  const {clock, EventSource, client} = setup({transport: 'sse'});
  const r = recorder();
  client.subscribe('news', r.on());
  await clock.tick(0);
  const es = EventSource.instances[0];
  assert.equal(es.transport, 'sse');
  assert.deepEqual(es.channels, ['news']);
  assert.equal(es.cursor, '');
  assert.deepEqual(es.init, {withCredentials: false});
  es.frame(F.connected('sse'), F.subscribed('news', 4, [{text: 'state', channel: 'news', epoch: 'e1', offset: 4, ts: 1}]),
    F.message('news', 5, {text: 'live'}));
  assert.deepEqual(r.got, ['news:state', 'news:live']);
  assert.equal(client.state, 'connected');
});

test('stream reads NDJSON frames split anywhere across chunks', async () => {
  const {clock, http, client} = setup({transport: 'stream'});
  const r = recorder();
  client.subscribe('news', r.on());
  await clock.tick(0);
  const req = http.last();
  assert.equal(req.transport, 'stream');
  assert.deepEqual(req.channels, ['news']);
  const s = req.stream();
  s.raw('{"type":"conn');
  s.raw('ected","transport":"stream","ping":15}\n{"type":"subscribed","channel":"news","epoch":"e1","offset":0}\n{"type":"mess');
  await clock.tick(0);
  assert.equal(client.state, 'connected');
  assert.deepEqual(r.got, []);
  s.raw('age","data":{"text":"h\u00e9","channel":"news","ts":1,"epoch":"e1","offset":1}}\n\n');
  s.write(F.message('news', 2, {text: 'two'}));
  await clock.tick(0);
  assert.deepEqual(r.got, ['news:h\u00e9', 'news:two']);
});

test('longpoll asks again at once with the cursor', async () => {
  const {clock, http, client} = setup({transport: 'longpoll'});
  const r = recorder();
  client.subscribe('news', r.on());
  await clock.tick(0);
  assert.equal(http.requests.length, 1);
  const first = http.last();
  assert.equal(first.transport, 'longpoll');
  assert.equal(first.cursor, '');
  assert.equal(first.timeout, '25', 'always sent: the server caps it to its own maximum');
  first.answer([F.subscribed('news', 0), F.message('news', 1, {text: 'a'})], 'news=e1:1');
  await clock.tick(0);
  assert.equal(client.state, 'connected');
  assert.deepEqual(r.got, ['news:a']);
  assert.equal(http.requests.length, 2);
  assert.equal(http.last().transport, 'longpoll');
  assert.equal(http.last().cursor, 'news=e1:1');
  http.last().answer([F.message('news', 2, {text: 'b'})]);
  await clock.tick(0);
  assert.deepEqual(r.got, ['news:a', 'news:b']);
  assert.equal(http.last().cursor, 'news=e1:2');
});

test('longpoll sends the timeout it is given', async () => {
  const {clock, http, client} = setup({transport: 'longpoll', longpollTimeout: 10});
  client.subscribe('news', () => {});
  await clock.tick(0);
  assert.equal(http.last().timeout, '10');
});

test('a longpollTimeout above the server maximum is sent as is; the capped answer is no failure', async () => {
  const {clock, http, client, events} = setup({transport: 'longpoll', longpollTimeout: 600});
  const r = recorder();
  client.subscribe('news', r.on());
  await clock.tick(0);
  assert.equal(http.last().timeout, '600');
  http.last().answer([F.subscribed('news', 3)], 'news=e1:3');
  await clock.tick(0);
  const held = http.last();
  await clock.tick(25000); // the server held it for its own maximum only
  held.answer([], 'news=e1:3');
  await clock.tick(0);
  assert.equal(http.requests.length, 3, 'asked again at once');
  assert.equal(http.last().cursor, 'news=e1:3');
  assert.equal(http.last().timeout, '600');
  await clock.tick(609999);
  assert.equal(http.last().aborted, false, 'given up only after the hold it asked for + requestTimeout');
  await clock.tick(1);
  assert.equal(http.requests[2].aborted, true);
  assert.deepEqual(events.filter((e) => e.event === 'error').map((e) => e.reason), ['timeout']);
});

test('longpollTimeout must be positive, or null for the server default', async () => {
  for (const bad of [0, -5, 'x', NaN]) {
    assert.throws(() => setup({transport: 'longpoll', longpollTimeout: bad}), TypeError, String(bad));
  }
  const {clock, http, client} = setup({transport: 'longpoll', longpollTimeout: null});
  client.subscribe('news', () => {});
  await clock.tick(0);
  assert.equal(http.last().timeout, null);
});

test('poll asks again after pollInterval with the cursor', async () => {
  const {clock, http, client} = setup({transport: 'poll', pollInterval: 3000});
  const r = recorder();
  client.subscribe('news', r.on());
  await clock.tick(0);
  http.last().answer([F.subscribed('news', 7), F.message('news', 8, {text: 'x'})]);
  await clock.tick(2999);
  assert.equal(http.requests.length, 1);
  await clock.tick(1);
  assert.equal(http.requests.length, 2);
  assert.equal(http.last().transport, 'poll');
  assert.equal(http.last().cursor, 'news=e1:8');
  assert.deepEqual(r.got, ['news:x']);
});

test('every HTTP transport sends each channel and the cursor in the query', async () => {
  for (const transport of ['sse', 'stream', 'longpoll', 'poll']) {
    const {clock, http, EventSource, client} = setup({transport, url: 'http://test.invalid/channels?token=t'});
    client.subscribe('a:b/c@d#e$f', () => {});
    await clock.tick(0);
    const url = transport === 'sse' ? EventSource.instances[0].url : http.last().url;
    assert.match(url, /^http:\/\/test\.invalid\/channels\?token=t&transport=/, transport);
    assert.ok(url.includes('channel=a%3Ab%2Fc%40d%23e%24f'), url);
  }
});

test('unknown frame types and fields are ignored', async () => {
  const {clock, http, client} = setup({transport: 'stream'});
  const r = recorder();
  client.subscribe('news', r.on());
  await clock.tick(0);
  const s = http.last().stream();
  s.write(F.connected('stream'), {type: 'presence', who: 'x'},
    Object.assign(F.subscribed('news'), {extra: 1}), F.message('news', 1, {text: 'ok'}));
  await clock.tick(0);
  assert.deepEqual(r.got, ['news:ok']);
  assert.equal(client.state, 'connected');
});

test('the client refuses unknown transports and environments with none', () => {
  assert.throws(() => new TorChannels.Client({transport: 'carrier-pigeon'}), /unknown transport/);
  assert.throws(() => new TorChannels.Client({
    transports: ['websocket', 'sse'], WebSocket: undefined, EventSource: undefined, location: null,
  }), /can run here/);
});
