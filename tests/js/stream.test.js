'use strict';
// The stream transport's NDJSON reader on large catch-ups: every frame once,
// in order, however the bytes are chunked, and each byte scanned once.

const test = require('node:test');
const assert = require('node:assert/strict');
const {setup, recorder, frames: F} = require('./fakes.js');

/** `bytes` cut into chunks of `size` bytes (so UTF-8 characters get split too). */
function chunks(bytes, size) {
  const out = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.slice(i, i + size));
  return out;
}

/** A stream client subscribed to `news`, and the writer of its first stream. */
async function streaming() {
  const ctx = setup({transport: 'stream'});
  const r = recorder();
  ctx.client.subscribe('news', r.on());
  await ctx.clock.tick(0);
  return Object.assign(ctx, {r, s: ctx.http.last().stream()});
}

const stateMessage = (i) => ({text: `s${i} \u00e9\u20ac\ud83d\ude00`, channel: 'news', ts: 1, epoch: 'e1', offset: i});

test('a large catch-up in many small chunks delivers every frame once, in order', async () => {
  const ctx = await streaming();
  const state = Array.from({length: 500}, (_, i) => stateMessage(i));
  const live = Array.from({length: 2000}, (_, i) => F.message('news', 500 + i, {text: `m${i} \u00e9\ud83d\ude00`}));
  const text = [F.connected('stream'), F.subscribed('news', 499, state), ...live]
    .map((f) => JSON.stringify(f)).join('\n\n') + '\n';
  const bytes = new TextEncoder().encode(text);
  const pieces = chunks(bytes, 13);
  assert.ok(pieces.length > 10000, `${pieces.length} chunks`);
  for (const piece of pieces) ctx.s.bytes(piece);
  await ctx.clock.tick(0);
  const expected = [...state.map((m) => `news:${m.text}`), ...live.map((f) => `news:${f.data.text}`)];
  assert.equal(ctx.r.got.length, expected.length);
  assert.deepEqual(ctx.r.got, expected);
  assert.equal(ctx.client.state, 'connected');
  assert.deepEqual(ctx.events.filter((e) => e.event === 'error'), []);
});

test('a frame split across chunks is delivered when its newline arrives, not before', async () => {
  const ctx = await streaming();
  ctx.s.write(F.connected('stream'), F.subscribed('news', 0));
  const line = new TextEncoder().encode(JSON.stringify(F.message('news', 1, {text: 'caf\u00e9'})));
  const cut = line.length - 3; // inside the two bytes of the é
  ctx.s.bytes(line.slice(0, cut));
  await ctx.clock.tick(0);
  assert.deepEqual(ctx.r.got, []);
  ctx.s.bytes(line.slice(cut));
  await ctx.clock.tick(0);
  assert.deepEqual(ctx.r.got, [], 'no newline yet');
  ctx.s.raw('\n');
  await ctx.clock.tick(0);
  assert.deepEqual(ctx.r.got, ['news:caf\u00e9']);
});

/**
 * Run `fn` counting the characters that searches for '\n' look at, through
 * String.prototype.indexOf and split (how a line reader finds newlines): a
 * reader that scans only new text looks at each character about once, one
 * that re-splits its whole buffer per chunk at the buffer again and again.
 */
async function countNewlineScans(fn) {
  const {indexOf, split} = String.prototype;
  let scanned = 0;
  String.prototype.indexOf = function (search, from) {
    const found = indexOf.call(this, search, from);
    if (search === '\n') scanned += (found < 0 ? this.length : found + 1) - Math.max(0, Math.trunc(from) || 0);
    return found;
  };
  String.prototype.split = function (separator, limit) {
    if (separator === '\n') scanned += this.length;
    return split.call(this, separator, limit);
  };
  try {
    await fn();
  } finally {
    String.prototype.indexOf = indexOf;
    String.prototype.split = split;
  }
  return scanned;
}

test('the stream reader scans each byte about once, not the whole buffer per chunk', async () => {
  const ctx = await streaming();
  // One long line (a `subscribed` frame carrying a big state) in small chunks:
  // the case where re-splitting the buffer on every chunk is quadratic.
  const state = Array.from({length: 2000}, (_, i) => stateMessage(i));
  const text = `${JSON.stringify(F.connected('stream'))}\n${JSON.stringify(F.subscribed('news', 1999, state))}\n`;
  const pieces = chunks(new TextEncoder().encode(text), 64);
  assert.ok(pieces.length > 2000, `${pieces.length} chunks`);
  const scanned = await countNewlineScans(async () => {
    for (const piece of pieces) ctx.s.bytes(piece);
    await ctx.clock.tick(0);
  });
  assert.equal(ctx.r.got.length, 2000);
  assert.ok(scanned >= text.length, `the count saw the scan (${scanned} of ${text.length} characters)`);
  assert.ok(scanned <= 2 * text.length, `${scanned} characters scanned for ${text.length} received`);
});
