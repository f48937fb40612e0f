'use strict';
// Prober on its own: after a step-down it probes the better transports, best
// first, beside the live connection, backs off between failed rounds, and
// says which one answered. The client is a fake that records what the prober
// asks of it; stepup.test.js checks the same through a whole client.

const test = require('node:test');
const assert = require('node:assert/strict');
const {TorChannels, Clock} = require('./fakes.js');

const {Prober} = TorChannels[Symbol.for('torchannels.internals')];

const OPTS = {probeDelay: 1000, maxProbeDelay: 5000, connectTimeout: 300};

/** A probe transport the test answers by hand. */
class FakeProbe {
  constructor(name, on, log) {
    this.name = name;
    this.on = on;
    this.log = log;
    this.closed = false;
  }

  open() {
    this.log.push(`open ${this.name}`);
    if (this.name === 'broken') throw new Error('cannot open');
  }

  close() {
    this.closed = true;
    this.log.push(`close ${this.name}`);
  }

  connected() { this.on.connected(this); }

  ended() { this.on.ended(this); }
}

function prober(better = ['websocket', 'sse'], opts = {}) {
  const clock = new Clock();
  const log = [];
  const probes = [];
  const client = {
    isLive: true,
    better: better.slice(),
    live: () => client.isLive,
    transport: (name, on) => {
      const t = new FakeProbe(name, on, log);
      probes.push(t);
      return t;
    },
    won: (name) => log.push(`won ${name}`),
  };
  const env = {setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, random: () => 0.5, now: () => clock.now};
  const p = new Prober(env, Object.assign({}, OPTS, opts), {
    live: client.live, better: () => client.better.slice(), transport: client.transport, won: client.won,
  });
  return {clock, log, probes, client, p, last: () => probes[probes.length - 1]};
}

test('plan: a round after 3/4 of probeDelay (random 0.5), best first; the first to answer wins', async () => {
  const {clock, log, p, last} = prober();
  p.plan();
  await clock.tick(749);
  assert.deepEqual(log, []);
  await clock.tick(1);
  assert.deepEqual(log, ['open websocket']);
  await clock.tick(OPTS.connectTimeout); // no answer: the next one
  assert.deepEqual(log, ['open websocket', 'close websocket', 'open sse']);
  last().connected();
  assert.deepEqual(log.slice(3), ['close sse', 'won sse']);
  assert.equal(clock.pending().length, 0, 'nothing planned or running after a win');
});

test('a failed round plans the next with a doubled delay, up to maxProbeDelay; a win resets it', async () => {
  const {clock, log, p, last} = prober(['sse']);
  const starts = [];
  p.plan();
  for (let round = 0; round < 4; round++) {
    const from = clock.now;
    while (!last() || last().closed) await clock.tick(50);
    starts.push(clock.now - from);
    last().ended(); // refused: the round fails, the next is planned
  }
  assert.deepEqual(starts, [750, 1500, 3000, 3750]);
  while (last().closed) await clock.tick(50);
  last().connected();
  assert.equal(log.pop(), 'won sse');
  p.plan();
  const from = clock.now;
  const count = log.length;
  while (log.length === count) await clock.tick(50);
  assert.equal(clock.now - from, 750, 'back to the first delay');
});

test('nothing is planned or started unless the client is live over a worse transport', async () => {
  const {clock, log, client, p} = prober([]);
  p.plan();
  p.start();
  p.poke();
  assert.deepEqual(clock.pending(), []);
  client.better = ['websocket'];
  client.isLive = false;
  p.plan();
  p.start();
  assert.deepEqual(clock.pending(), []);
  assert.equal(p.ready, false);
  client.isLive = true;
  assert.equal(p.ready, true);
  p.plan();
  client.isLive = false; // the connection went before the planned round
  await clock.tick(1000);
  assert.deepEqual(log, []);
});

test('poke: a round at once, but not again within connectTimeout of the last start', async () => {
  const {clock, log, p, last} = prober(['websocket']);
  p.plan();
  p.poke();
  assert.deepEqual(log, ['open websocket']);
  assert.equal(p.ready, false, 'a round is running');
  last().ended(); // the round failed: the next is planned
  p.poke();
  assert.deepEqual(log, ['open websocket', 'close websocket'], 'too soon');
  await clock.tick(OPTS.connectTimeout);
  p.poke();
  assert.deepEqual(log.slice(2), ['open websocket']);
});

test('stop: the running probe is closed and its late answer ignored; reset: the planned round too', async () => {
  const {clock, log, p, last} = prober(['websocket']);
  p.start();
  const running = last();
  p.stop();
  assert.equal(running.closed, true);
  running.connected();
  running.ended();
  assert.deepEqual(log, ['open websocket', 'close websocket']);
  assert.equal(p.ready, true, 'a new round may run');
  p.plan();
  p.reset();
  assert.deepEqual(clock.pending(), []);
  await clock.tick(10000);
  assert.equal(log.length, 2);
});

test('a probe that cannot open, or an answer from an earlier probe, moves to the next one', async () => {
  const {clock, log, p, probes} = prober(['broken', 'websocket', 'sse']);
  p.start();
  assert.deepEqual(log, ['open broken', 'close broken', 'open websocket']);
  await clock.tick(OPTS.connectTimeout);
  probes[1].connected(); // too late: it was given up
  assert.deepEqual(log.slice(3), ['close websocket', 'open sse']);
  probes[2].connected();
  assert.equal(log.pop(), 'won sse');
});
