'use strict';
// Adapting to what is in the path: a long-poll held longer than a proxy
// allows is shortened (no error, no pause), a stream cut while idle asks for
// quicker pings, and the `ping` option and SSE's ids=0 reach the URLs.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, recorder, frames: F} = require('./fakes.js');

const errors = (ctx) => ctx.events.filter((e) => e.event === 'error');

/** A long-poll client whose first answer came: connected, its next request held. */
async function heldLongpoll(options = {}) {
  const ctx = setup(Object.assign({transport: 'longpoll'}, options));
  const r = recorder();
  ctx.client.subscribe('a', r.on());
  await ctx.clock.tick(0);
  ctx.http.last().answer([F.subscribed('a', 0)]);
  await ctx.clock.tick(0);
  assert.equal(ctx.client.state, 'connected');
  return Object.assign(ctx, {r});
}

test('longpoll: a 504 after a hold shortens the hold and polls again at once, as no error', async () => {
  const ctx = await heldLongpoll();
  assert.equal(ctx.http.last().timeout, '25');
  await ctx.clock.tick(20000); // the proxy's read timeout
  ctx.http.last().error(504);
  await ctx.clock.tick(0);
  assert.equal(ctx.http.requests.length, 3, 'at once');
  assert.equal(ctx.http.last().timeout, '15', '3/4 of the age the proxy allowed');
  assert.equal(ctx.http.last().cursor, 'a=e1:0');
  assert.deepEqual(errors(ctx), []);
  assert.equal(ctx.client.state, 'connected');
  // Quiet holds are answered by the server before the proxy cuts them; a
  // message after a long quiet comes through the held request at once.
  for (let i = 0; i < 5; i++) {
    await ctx.clock.tick(15000);
    ctx.http.last().answer([]);
  }
  await ctx.clock.tick(100);
  ctx.http.last().answer([F.message('a', 1, {text: 'late'})]);
  await ctx.clock.tick(0);
  assert.deepEqual(ctx.r.got, ['a:late']);
  assert.equal(ctx.http.last().timeout, '15', 'the shorter hold stays');
  assert.deepEqual(ctx.states, ['disconnected>connecting (starting)', 'connecting>connected (connected over longpoll)']);
  assert.deepEqual(errors(ctx), []);
});

test('longpoll: a 502 at the first request too, before any answer', async () => {
  const ctx = setup({transport: 'longpoll'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  await ctx.clock.tick(8000);
  ctx.http.last().error(502);
  await ctx.clock.tick(0);
  assert.equal(ctx.http.last().timeout, '6');
  assert.deepEqual(errors(ctx), []);
  assert.equal(ctx.client.state, 'connecting');
});

test('longpoll: cuts at a consistent age poll again at once, and the second shortens the hold', async () => {
  const ctx = await heldLongpoll();
  await ctx.clock.tick(12000);
  ctx.http.last().fail(); // cut while held
  await ctx.clock.tick(0);
  assert.equal(ctx.http.requests.length, 3, 'at once');
  assert.equal(ctx.http.last().timeout, '25', 'one cut says little');
  await ctx.clock.tick(12500);
  ctx.http.last().fail();
  await ctx.clock.tick(0);
  assert.equal(ctx.http.requests.length, 4);
  assert.equal(ctx.http.last().timeout, '9');
  assert.deepEqual(errors(ctx), []);
  assert.deepEqual(ctx.states.length, 2);
});

test('longpoll: a 502 answered at once is an ordinary failure (a hub down behind a proxy)', async () => {
  const ctx = await heldLongpoll();
  await ctx.clock.tick(300);
  ctx.http.last().error(502);
  await ctx.clock.tick(0);
  assert.equal(ctx.http.requests.length, 2, 'a pause first');
  assert.deepEqual(errors(ctx).map((e) => e.status), [502]);
  assert.equal(ctx.http.requests[1].timeout, '25');
});

test('longpoll: a hold already at 1 s is not shortened further: the 504 is then an ordinary failure', async () => {
  const ctx = await heldLongpoll({longpollTimeout: 2});
  await ctx.clock.tick(1500);
  ctx.http.last().error(504);
  await ctx.clock.tick(0);
  assert.equal(ctx.http.last().timeout, '1');
  assert.deepEqual(errors(ctx), []);
  await ctx.clock.tick(1200);
  ctx.http.last().error(504);
  await ctx.clock.tick(0);
  assert.deepEqual(errors(ctx).map((e) => e.status), [504]);
});

/** A stream client connected with `ping` s pings; returns a function cutting it after `idle` ms of quiet. */
async function streaming(transport, ping = 15) {
  const ctx = setup({transport, websocketUrl: 'ws://x/ws', reconnectingDelay: 1000});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  const urls = [];
  let n = 0;
  const connect = async () => {
    if (transport === 'websocket') {
      const ws = ctx.WebSocket.instances[n++];
      urls.push(ws.url);
      ws.open();
      ws.frame(F.connected('websocket', ping), F.subscribed('a', 0));
      return (code) => ws.drop(code);
    }
    if (transport === 'sse') {
      const es = ctx.EventSource.instances[n++];
      urls.push(es.url);
      es.frame(F.connected('sse', ping), F.subscribed('a', 0));
      return () => es.fail();
    }
    const req = ctx.http.last();
    urls.push(req.url);
    const s = req.stream();
    s.write(F.connected('stream', ping), F.subscribed('a', 0));
    return () => s.end();
  };
  const cycle = async (idle) => {
    const cut = await connect();
    await ctx.clock.tick(idle);
    cut(1006);
    await ctx.clock.tick(0);
    await ctx.clock.tick(500); // the first retry after a connection that lived
  };
  return Object.assign(ctx, {cycle, connect, urls});
}

for (const transport of ['websocket', 'sse', 'stream']) {
  test(`${transport}: two idle cuts at the same age ask for quicker pings (ping=), never shown as reconnecting`, async () => {
    const ctx = await streaming(transport);
    await ctx.cycle(6000);
    await ctx.cycle(6200);
    await ctx.connect();
    const pings = ctx.urls.map((u) => new URL(u).searchParams.get('ping'));
    assert.deepEqual(pings, [null, null, '5']);
    assert.deepEqual(ctx.states, ['disconnected>connecting (starting)', `connecting>connected (connected over ${transport})`]);
    assert.equal(ctx.client.state, 'connected');
  });
}

test('stream: cuts after a silence as long as the ping interval, or at changing ages, keep the ping', async () => {
  const ctx = await streaming('stream', 8);
  await ctx.cycle(3000);
  await ctx.cycle(9000); // not before the next ping was due
  await ctx.cycle(9000);
  await ctx.cycle(4000);
  await ctx.cycle(7000); // not the same age as the previous
  await ctx.connect();
  assert.deepEqual(ctx.urls.map((u) => new URL(u).searchParams.get('ping')), [null, null, null, null, null, null]);
});

test('stream: idle cuts at 20 s of a 30 s ping ask for 10 s', async () => {
  const ctx = await streaming('stream', 30);
  await ctx.cycle(20000);
  await ctx.cycle(20000);
  await ctx.connect();
  assert.equal(new URL(ctx.urls[2]).searchParams.get('ping'), '10');
});

test('the ping option reaches websocket, sse and stream URLs; sse asks for ids=0', async () => {
  const ctx = setup({transports: ['websocket', 'sse', 'stream', 'longpoll'], websocketUrl: 'ws://x/ws?k=v', ping: 7});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  assert.equal(ctx.WebSocket.instances[0].url, 'ws://x/ws?k=v&ping=7');
  ctx.WebSocket.instances[0].drop(1006);
  await ctx.clock.tick(0);
  const sse = new URL(ctx.EventSource.instances[0].url);
  assert.equal(sse.searchParams.get('ping'), '7');
  assert.equal(sse.searchParams.get('ids'), '0');
  ctx.EventSource.instances[0].fail();
  await ctx.clock.tick(0);
  assert.equal(new URL(ctx.http.last().url).searchParams.get('ping'), '7');
  assert.equal(new URL(ctx.http.last().url).searchParams.get('ids'), null);
  ctx.http.last().fail();
  await ctx.clock.tick(0);
  assert.equal(ctx.http.last().transport, 'longpoll');
  assert.equal(new URL(ctx.http.last().url).searchParams.get('ping'), null);
  assert.throws(() => setup({ping: 0}), TypeError);
});

test('sse: never resumes from lastEventId: every reconnect names the cursor the client kept', async () => {
  const ctx = setup({transport: 'sse'});
  ctx.client.subscribe('a', () => {});
  await ctx.clock.tick(0);
  const es = ctx.EventSource.instances[0];
  es.frame(F.connected('sse'), F.subscribed('a', 0), F.message('a', 1), F.message('a', 2));
  es.fail();
  assert.equal(es.closed, true, 'the browser gets no chance to reconnect by itself');
  await ctx.clock.tick(1000);
  assert.equal(ctx.EventSource.instances[1].cursor, 'a=e1:2');
});

test('longpoll: a 504 after the whole hold (a gateway that cannot reach the hub) is an ordinary failure', async () => {
  const ctx = await heldLongpoll({longpollTimeout: 10});
  await ctx.clock.tick(10000); // as long as asked: the hub would have answered by now
  ctx.http.last().error(504);
  await ctx.clock.tick(0);
  assert.deepEqual(errors(ctx).map((e) => e.status), [504]);
  await ctx.clock.tick(1000);
  assert.equal(ctx.client.state, 'reconnecting');
  assert.equal(ctx.http.last().timeout, '10', 'the hold is kept');
});

test('longpoll: a gateway that times out reaching the hub is reported after one silent retry, not hidden', async () => {
  const ctx = await heldLongpoll();
  for (let i = 0; i < 4; i++) {
    await ctx.clock.tick(5000); // proxy_connect_timeout: every request gets 504 at 5 s
    ctx.http.last().error(504);
    await ctx.clock.tick(0);
  }
  assert.equal(ctx.http.requests[2].timeout, '3', 'once taken for a short read timeout');
  assert.ok(errors(ctx).length >= 2, 'then honest failures');
  assert.equal(ctx.client.state, 'reconnecting');
});
