'use strict';
// PathAdapter on its own: the long-poll hold and the stream keep-alive the
// client asks for, learnt from the cuts its transports report. A pure object
// on a manual clock; adapt.test.js checks the same through a whole client.

const test = require('node:test');
const assert = require('node:assert/strict');
const {TorChannels, Clock} = require('./fakes.js');

const {PathAdapter, LOST} = TorChannels[Symbol.for('torchannels.internals')];

function adapter(opts = {}) {
  const clock = new Clock();
  const path = new PathAdapter(Object.assign({longpollTimeout: 25, ping: null}, opts), () => clock.now);
  return {clock, path};
}

test('starts from the options: the hold and the keep-alive asked for', () => {
  assert.deepEqual([adapter().path.hold, adapter().path.ping], [25, null]);
  const {path} = adapter({longpollTimeout: 40, ping: 12});
  assert.deepEqual([path.hold, path.ping], [40, 12]);
});

test('holdTooLong: a gateway error after a partial hold shortens the hold to 3/4 of its age at once', () => {
  const {path} = adapter();
  assert.equal(path.holdTooLong({reason: 'http_error', status: 504, age: 20000}), true);
  assert.equal(path.hold, 15);
  assert.equal(path.holdTooLong({reason: 'http_error', status: 502, age: 8000}), true);
  assert.equal(path.hold, 6);
});

test('holdTooLong: the first cut only polls again; a second at the same age shortens', () => {
  const {path} = adapter();
  assert.equal(path.holdTooLong({reason: LOST, age: 30000 - 10000}), true);
  assert.equal(path.hold, 25, 'one cut proves nothing');
  assert.equal(path.holdTooLong({reason: LOST, age: 20500}), true);
  assert.equal(path.hold, 15);
});

test('holdTooLong: cuts at different ages keep the hold', () => {
  const {path} = adapter();
  assert.equal(path.holdTooLong({reason: LOST, age: 20000}), true);
  assert.equal(path.holdTooLong({reason: LOST, age: 4000}), true);
  assert.equal(path.hold, 25);
});

test('holdTooLong: false, as an ordinary failure, for what the hold does not explain', () => {
  const {path} = adapter();
  const cases = [
    {reason: 'http_error', status: 504, age: 500}, // at once: not the hold
    {reason: 'http_error', status: 500, age: 20000}, // not a gateway
    {reason: 'timeout', age: 20000},
    {reason: 'http_error', status: 504, age: 25000}, // the whole hold: the server would have answered
    {reason: LOST}, // no age
  ];
  for (const info of cases) assert.equal(path.holdTooLong(info), false, JSON.stringify(info));
  assert.equal(path.hold, 25);
});

test('holdTooLong: at the shortest hold, a gateway error is an ordinary failure', () => {
  const {path} = adapter({longpollTimeout: 1});
  assert.equal(path.holdTooLong({reason: 'http_error', status: 504, age: 900}), false);
  const two = adapter({longpollTimeout: 2}).path;
  assert.equal(two.holdTooLong({reason: 'http_error', status: 504, age: 1500}), true);
  assert.equal(two.hold, 1);
  assert.equal(two.holdTooLong({reason: 'http_error', status: 504, age: 1500}), false);
});

test('holdTooLong: no longpollTimeout option counts as the server default 25 s', () => {
  const {path} = adapter({longpollTimeout: null});
  assert.equal(path.holdTooLong({reason: 'http_error', status: 504, age: 20000}), true);
  assert.equal(path.hold, 15);
});

/** A stream that connected at `connectedAt`, last heard at `heardAt`, with the server's ping interval. */
const stream = (heardAt, serverPing = 25, connectedAt = 0) => ({connectedAt, heardAt, serverPing});

test('streamEnded: two cuts after the same silence, shorter than the ping interval, ask for pings at half of it', () => {
  const {clock, path} = adapter();
  clock.now = 12000;
  path.streamEnded(stream(0), {reason: LOST});
  assert.equal(path.ping, null, 'one cut proves nothing');
  clock.now = 112500;
  path.streamEnded(stream(100000), {reason: 'closed'});
  assert.equal(path.ping, 6);
});

test('streamEnded: asks for pings no quicker than every 5 s, and never slower than it asks already', () => {
  for (const [ping, expected] of [[null, 5], [4, 4]]) {
    const {clock, path} = adapter({ping});
    clock.now = 3000; // 3 s of silence: half of it is under the server's floor
    path.streamEnded(stream(0), {reason: LOST});
    path.streamEnded(stream(0), {reason: LOST});
    assert.equal(path.ping, expected, `ping option ${ping}`);
  }
});

test('streamEnded: what is not an idle cut forgets the last one', () => {
  const {clock, path} = adapter();
  clock.now = 12000;
  path.streamEnded(stream(0), {reason: LOST});
  path.streamEnded(stream(0), {reason: 'ping_timeout'}); // not a cut
  path.streamEnded(stream(0), {reason: LOST});
  assert.equal(path.ping, null, 'the cuts were not in a row');
  const ignored = [
    [stream(0, 0), {reason: LOST}], // the server stated no interval
    [stream(0, 25, null), {reason: LOST}], // never connected
    [stream(11500), {reason: LOST}], // under 1 s of silence
    [stream(0, 10), {reason: LOST}], // a ping was due: not the path's doing
    [stream(null), {reason: LOST}], // nothing heard
  ];
  for (const [conn, info] of ignored) {
    path.streamEnded(conn, info);
    path.streamEnded(conn, info);
    assert.equal(path.ping, null, JSON.stringify(conn));
  }
});
