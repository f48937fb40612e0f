'use strict';
// Delivery by channel: each callback gets its own channel's messages only,
// in subscribe order, and unsubscribing from inside a callback is safe.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, frames: F} = require('./fakes.js');

async function connectedStream(ctx) {
  await ctx.clock.tick(0);
  const s = ctx.http.last().stream();
  s.write(F.connected('stream'));
  return s;
}

test('a callback, onReset or onError of one channel is never called for another', async () => {
  const ctx = setup({transport: 'stream'});
  // Names that share prefixes, subscribed interleaved, several callbacks each.
  const channels = ['a', 'a:b', 'ab', 'b', 'a.b'];
  const calls = [];
  for (let round = 0; round < 3; round++) {
    for (const channel of channels) {
      const tag = `${channel}#${round}`;
      ctx.client.subscribe(channel, (msg) => calls.push([tag, 'message', channel, msg.channel, msg.text]), {
        onReset: (ch) => calls.push([tag, 'reset', channel, ch]),
        onError: (e) => calls.push([tag, 'error', channel, e.channel]),
      });
    }
  }
  const s = await connectedStream(ctx);
  for (const channel of channels) {
    s.write(F.subscribed(channel, 0, [{text: 'state', channel, ts: 1, epoch: 'e1', offset: 0}]));
  }
  for (let i = 1; i <= 3; i++) for (const channel of channels) s.write(F.message(channel, i, {text: `m${i}`}));
  s.write(F.reset('ab'), F.error('a.b', 'forbidden'));
  await ctx.clock.tick(0);
  for (const [tag, kind, subscribed, got] of calls) {
    assert.equal(got, subscribed, `${tag} got a ${kind} of ${got}`);
  }
  const messages = calls.filter((c) => c[1] === 'message');
  assert.equal(messages.length, channels.length * 3 * 4, 'state + 3 messages for each of 3 callbacks per channel');
  // Per channel: each message goes to the callbacks in subscribe order.
  const forA = messages.filter((c) => c[2] === 'a').map((c) => `${c[0]}:${c[4]}`);
  assert.deepEqual(forA, ['state', 'm1', 'm2', 'm3'].flatMap((t) => [`a#0:${t}`, `a#1:${t}`, `a#2:${t}`]));
  assert.deepEqual(calls.filter((c) => c[1] === 'reset').map((c) => c[0]), ['ab#0', 'ab#1', 'ab#2']);
  assert.deepEqual(calls.filter((c) => c[1] === 'error').map((c) => c[0]), ['a.b#0', 'a.b#1', 'a.b#2']);
});

test('unsubscribing inside a callback: the removed callbacks get nothing more, added ones start with the next message', async () => {
  const ctx = setup({transport: 'stream'});
  const got = [];
  const tokens = {};
  const on = (tag, action) => (msg) => {
    got.push(`${tag}:${msg.text}`);
    if (action) action(msg);
  };
  tokens.one = ctx.client.subscribe('a', on('one', (msg) => {
    if (msg.text === '1') {
      ctx.client.unsubscribe(tokens.two); // later in this very delivery
      tokens.four = ctx.client.subscribe('a', on('four'));
    }
  }));
  tokens.two = ctx.client.subscribe('a', on('two'));
  tokens.three = ctx.client.subscribe('a', on('three', (msg) => {
    if (msg.text === '2') ctx.client.unsubscribe(tokens.three); // itself
  }));
  ctx.client.subscribe('b', on('b'));
  const s = await connectedStream(ctx);
  s.write(F.subscribed('a', 0), F.subscribed('b', 0),
    F.message('a', 1, {text: '1'}), F.message('a', 2, {text: '2'}), F.message('b', 1, {text: 'b1'}),
    F.message('a', 3, {text: '3'}));
  await ctx.clock.tick(0);
  assert.deepEqual(got, ['one:1', 'three:1', 'one:2', 'three:2', 'four:2', 'b:b1', 'one:3', 'four:3']);
});

test('when a callback unsubscribes the last of its channel, the rest of the frame batch goes on for the others', async () => {
  const ctx = setup({transport: 'stream'});
  const got = [];
  const a = ctx.client.subscribe('a', (msg) => {
    got.push(`a:${msg.text}`);
    ctx.client.unsubscribe(a);
  });
  ctx.client.subscribe('b', (msg) => got.push(`b:${msg.text}`));
  const s = await connectedStream(ctx);
  s.write(F.subscribed('a', 0), F.subscribed('b', 0), F.message('a', 1, {text: '1'}),
    F.message('b', 1, {text: '1'}), F.message('a', 2, {text: '2'}), F.message('b', 2, {text: '2'}));
  await ctx.clock.tick(0);
  assert.deepEqual(got, ['a:1', 'b:1', 'b:2']);
  assert.deepEqual(ctx.http.last().channels, ['b'], 'asked again without a');
});

test('close() inside a callback stops delivery at once', async () => {
  const ctx = setup({transport: 'stream'});
  const got = [];
  ctx.client.subscribe('a', (msg) => {
    got.push(`1:${msg.text}`);
    ctx.client.close();
  });
  ctx.client.subscribe('a', (msg) => got.push(`2:${msg.text}`));
  const s = await connectedStream(ctx);
  s.write(F.subscribed('a', 0), F.message('a', 1, {text: 'x'}), F.message('a', 2, {text: 'y'}));
  await ctx.clock.tick(0);
  assert.deepEqual(got, ['1:x']);
  assert.equal(ctx.client.state, 'disconnected');
});
