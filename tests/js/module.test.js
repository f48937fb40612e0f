'use strict';
// How the file loads: a plain <script> (global TorChannels, $.torChannels
// with jQuery), CommonJS, and the ES-module wrapper.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const {pathToFileURL} = require('node:url');
const {execFileSync} = require('node:child_process');
const {FakeHttp, Clock, frames: F} = require('./fakes.js');

const STATIC = path.join(__dirname, '..', '..', 'src', 'torchannels', 'static');
const SOURCE = fs.readFileSync(path.join(STATIC, 'torchannel.js'), 'utf8');

/** Run torchannel.js as a browser would run a classic script. */
function runAsScript(globals) {
  const context = vm.createContext(Object.assign({}, globals));
  vm.runInContext(SOURCE, context, {filename: 'torchannel.js'});
  return context;
}

test('as a plain script after jQuery it registers the seed API on $', async () => {
  const http = new FakeHttp();
  const clock = new Clock();
  const jQuery = function () {};
  const page = runAsScript({jQuery, fetch: http.fetch, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout,
    TextDecoder, AbortController, URL, location: {href: 'http://example.org/page', protocol: 'http:'}});
  assert.equal(typeof page.TorChannels.Client, 'function');
  assert.equal(typeof jQuery.torChannels, 'function');

  // The seed README, verbatim.
  const subscriptions = jQuery.torChannels({
    url: '/channels'
  });
  const got = [];
  const subtoken = subscriptions.subscribe('some-channel', function (msg) { got.push(msg.text); });
  assert.ok(subtoken !== undefined && subtoken !== null);
  assert.ok(subscriptions instanceof page.TorChannels.Client);

  await clock.tick(0);
  // No WebSocket or EventSource in this page: fetch streaming is the best it has.
  const req = http.last();
  assert.equal(req.path, '/channels');
  assert.equal(req.transport, 'stream');
  assert.deepEqual(req.channels, ['some-channel']);
  req.stream().write(F.connected('stream'), F.subscribed('some-channel', 0), F.message('some-channel', 1, {text: 'hi'}));
  await clock.tick(0);
  assert.deepEqual(got, ['hi']);
  assert.equal(subscriptions.unsubscribe(subtoken), true);
  await clock.tick(0);
  assert.equal(req.aborted, true);
  assert.equal(subscriptions.state, 'disconnected');
});

test('$.torChannels uses the page globals by default (url /channels, WebSocket on the page origin)', async () => {
  const sockets = [];
  class WebSocket { constructor(url) { this.url = url; sockets.push(this); } close() {} }
  const jQuery = {};
  const clock = new Clock();
  runAsScript({jQuery, WebSocket, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, URL,
    location: {href: 'https://example.org/app/', protocol: 'https:'}});
  const subscriptions = jQuery.torChannels();
  subscriptions.subscribe('news', () => {});
  await clock.tick(0);
  assert.equal(sockets[0].url, 'wss://example.org/channels/ws');
  subscriptions.close();
});

test('as a plain script without jQuery it only defines TorChannels', () => {
  const page = runAsScript({});
  assert.deepEqual(Object.keys(page).sort(), ['TorChannels']);
  assert.equal(page.TorChannels.version, require('../../src/torchannels/static/torchannel.js').version);
});

test('under CommonJS it exports the API and leaves the global scope alone', () => {
  const api = require('../../src/torchannels/static/torchannel.js');
  assert.equal(typeof api.Client, 'function');
  assert.equal(globalThis.TorChannels, undefined);
  const $ = {};
  assert.equal(api.registerJQuery($), $);
  assert.equal(typeof $.torChannels({url: '/channels', fetch: () => new Promise(() => {})}).subscribe, 'function');
});

test('the ES-module wrapper exports the same API', async () => {
  const mod = await import(pathToFileURL(path.join(STATIC, 'torchannel.mjs')).href);
  const api = require('../../src/torchannels/static/torchannel.js');
  assert.equal(mod.Client, api.Client);
  assert.equal(mod.default, api);
  for (const name of Object.keys(api)) assert.equal(mod[name], api[name], name);
});

/** Import torchannel.mjs in a fresh global scope as a browser does (tests/js/helpers/import-in-vm.mjs). */
function importInVm(...args) {
  const helper = path.join(__dirname, 'helpers', 'import-in-vm.mjs');
  const out = execFileSync(process.execPath, ['--experimental-vm-modules', '--no-warnings', helper, ...args],
    {encoding: 'utf8'});
  return JSON.parse(out);
}

test('the ES-module wrapper works alone in a browser-like scope and leaves no global behind', () => {
  const api = require('../../src/torchannels/static/torchannel.js');
  const got = importInVm();
  assert.deepEqual(got.exports, [...Object.keys(api), 'default'].sort());
  assert.deepEqual(got.defaultKeys, Object.keys(api).sort());
  assert.equal(got.sameClient, true);
  assert.equal(got.state, 'disconnected');
  assert.equal(got.token, 1, 'a working Client');
  assert.deepEqual(got.addedGlobals, [], 'no TorChannels, no leftover key');
  assert.equal(got.seedApi, 'undefined');
});

test('imported as a module after jQuery, it registers the seed API as the script does', () => {
  const got = importInVm('jquery');
  assert.equal(got.seedApi, 'function');
  assert.deepEqual(got.addedGlobals, []);
});

test('the constants mirror every code the server defines', () => {
  const api = require('../../src/torchannels/static/torchannel.js');
  const pkg = path.join(__dirname, '..', '..', 'src', 'torchannels');
  const constants = (file) => [...fs.readFileSync(path.join(pkg, file), 'utf8')
    .matchAll(/^([A-Z][A-Z_]*) = ("[a-z_]+"|\d+)/gm)].map((m) => [m[1], JSON.parse(m[2]), file]);
  const values = (obj) => new Set(Object.values(obj));
  const close = values(api.CloseCode), reset = values(api.ResetReason), reconnect = values(api.ReconnectReason);
  // A disconnect reason may sit among the server's error codes: either mirror will do.
  const codes = new Set([...values(api.ErrorCode), ...values(api.DisconnectReason)]), types = values(api.FrameType);
  const server = [...constants('errors.py'), ...constants('tokens.py'), ...constants('frames.py')];
  assert.ok(server.length > 30, 'the server constants were found');
  // Every string constant of frames.py is a frame type, whatever its name (PUBLISHED, PUBLISH_ERROR, ...).
  assert.ok(constants('frames.py').length >= 10, 'the frame types were found');
  for (const [name, value, file] of server) {
    if (name.startsWith('MAX_')) continue; // limits, not codes
    const mirror = name.startsWith('CLOSE_') ? close : name.startsWith('RESET_') ? reset
      : name.startsWith('RECONNECT_') ? reconnect : file === 'frames.py' ? types : codes;
    assert.ok(mirror.has(value), `${name} = ${JSON.stringify(value)} has no constant in torchannel.js`);
  }
});

test('the constants have the documented values', () => {
  const api = require('../../src/torchannels/static/torchannel.js');
  assert.deepEqual(api.TRANSPORTS, ['websocket', 'sse', 'stream', 'longpoll', 'poll']);
  assert.deepEqual(api.CloseCode, {NORMAL: 1000, GOING_AWAY: 1001, MESSAGE_TOO_BIG: 1009, TRY_AGAIN_LATER: 1013,
    SLOW_CONSUMER: 4001, EXPIRED: 4002, DISCONNECT: 4003, DISCONNECT_RECONNECT: 4004});
  assert.deepEqual(Object.values(api.ResetReason).sort(), ['epoch_changed', 'history_trimmed', 'position_ahead']);
  assert.deepEqual(Object.values(api.FrameType).sort(),
    ['connected', 'disconnect', 'error', 'message', 'ping', 'presence', 'presence_page', 'publish_error', 'published',
      'reconnect', 'reset', 'subscribed', 'unsubscribed']);
  assert.deepEqual([api.FrameType.PUBLISHED, api.FrameType.PUBLISH_ERROR], ['published', 'publish_error']);
  // The codes of publish_error frames and of refused POSTs (docs/protocol.md, client publish).
  assert.deepEqual([api.ErrorCode.PUBLISH_FORBIDDEN, api.ErrorCode.PUBLISH_TOO_LARGE, api.ErrorCode.RATE_LIMITED,
    api.ErrorCode.PROXY_UNAVAILABLE, api.ErrorCode.PROXY_ERROR, api.ErrorCode.INVALID_MESSAGE, api.ErrorCode.BAD_JSON,
    api.ErrorCode.BROKER_UNAVAILABLE], ['publish_forbidden', 'publish_too_large', 'rate_limited', 'proxy_unavailable',
    'proxy_error', 'invalid_message', 'bad_json', 'broker_unavailable']);
  assert.deepEqual(api.DisconnectReason, {DISCONNECTED_BY_SERVER: 'disconnected_by_server',
    TOKEN_REVOKED: 'token_revoked'});
  assert.equal(api.ErrorCode.UNSUBSCRIBED, 'unsubscribed');
  assert.equal(api.ErrorCode.TOKEN_REVOKED, 'token_revoked');
  assert.ok(Object.isFrozen(api.DisconnectReason));
  assert.equal(api.ErrorCode.FORBIDDEN, 'forbidden');
  assert.equal(api.ErrorCode.UNKNOWN_TRANSPORT, 'unknown_transport');
  assert.ok(Object.isFrozen(api.ErrorCode));
});

test('torchannel.d.ts declares exactly the exported names', () => {
  const api = require('../../src/torchannels/static/torchannel.js');
  const dts = fs.readFileSync(path.join(STATIC, 'torchannel.d.ts'), 'utf8');
  const declared = [...dts.matchAll(/^export (?:const|function|class) (\w+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(declared, Object.keys(api).sort());
  for (const name of ['ErrorCode', 'CloseCode', 'ResetReason', 'ReconnectReason', 'DisconnectReason', 'FrameType']) {
    const block = dts.slice(dts.indexOf(`export const ${name}:`));
    const body = block.slice(0, block.indexOf('};'));
    const keys = [...body.matchAll(/readonly (\w+):/g)].map((m) => m[1]).sort();
    assert.deepEqual(keys, Object.keys(api[name]).sort(), name);
  }
});
