// The public API of torchannel.js as a TypeScript user writes it, checked
// against torchannel.d.ts by `tsc -p tests/js/types`. Each `@ts-expect-error`
// is a misuse the declarations must reject: tsc fails if one is accepted.
import {
  Client, FrameType, ResetReason, ErrorCode, ReconnectReason, DisconnectReason, CloseCode, TRANSPORTS, version,
  backoff, registerJQuery, PresenceError, PublishError,
} from '../../../src/torchannels/static/torchannel.js';
import type {
  ClientOptions, ConnectionState, ErrorEvent, Member, Message, PresenceEvent, PresencePage, PublishResult, Sender,
  StateChange, StateEvent, SubscriptionToken, TransportName, TransportFailedEvent,
} from '../../../src/torchannels/static/torchannel.js';

const options: ClientOptions = {
  url: '/channels',
  websocketUrl: null,
  transports: ['websocket', 'sse', 'stream', 'longpoll', 'poll'],
  transport: null,
  onReset: (channel: string, reason: string) => console.log(channel, reason),
  minReconnectDelay: 500,
  maxReconnectDelay: 10000,
  reconnectingDelay: 1000,
  connectTimeout: 5000,
  maxPingDelay: 10000,
  pollInterval: 2000,
  longpollTimeout: null,
  requestTimeout: 10000,
  ping: 10,
  probeDelay: 15000,
  maxProbeDelay: 300000,
  withCredentials: false,
  token: 'eyJ0...',
  getToken: () => fetch('/token').then((res) => res.json()).then((body: {token: string}) => body.token),
  fetch: (url, init) => fetch(url, init),
  EventSource,
  WebSocket,
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id),
  random: Math.random,
  now: Date.now,
  window,
  document,
  location: null,
  AbortController,
  TextDecoder,
};

const client = new Client(options);
const bare: Client = new Client();
bare.close();

// subscribe / unsubscribe
const token: SubscriptionToken = client.subscribe('news', (msg: Message) => {
  const channel: string = msg.channel;
  const when: number = msg.ts;
  const epoch: string = msg.epoch;
  const offset: number = msg.offset;
  const anything: unknown = msg.text;
  console.log(channel, when, epoch, offset, anything);
}, {
  onReset: (channel, reason) => console.log(channel.length, reason.length),
  onError: (error) => console.log(error.channel, error.code.length, error.message),
});
const removed: boolean = client.unsubscribe(token);
client.subscribe('chat', () => {});
client.setToken('fresh');
client.setToken(null);

// state
const state: ConnectionState = client.state;
const transport: TransportName | null = client.transport;
if (client.state === 'connected') console.log('live via', client.transport);

// events
const onState = (e: StateEvent) => console.log(e.transport, e.reason);
const chained: Client = client.on('connecting', onState).on('connected', onState).on('disconnected', onState)
  .on('error', (e: ErrorEvent) => {
    const type: 'transport' | 'channel' | 'server' | 'token' | 'callback' = e.type;
    const code: string | number | undefined = e.code;
    console.log(type, code, e.channel, e.reason, e.message, e.error, e.transport);
  });
client.off('connected', onState).off('error');
client.on('state', (e: StateChange) => {
  const to: 'disconnected' | 'connecting' | 'connected' | 'reconnecting' = e.to;
  const from: ConnectionState = e.from;
  const why: string = e.reason;
  const detail: string | null = e.detail;
  if (to === 'reconnecting') console.log(`reconnecting (${why})…`, from, e.transport, detail);
});
client.on('transport_failed', (e: TransportFailedEvent) => {
  const status: number | null = e.status;
  const code: string | number | null = e.code;
  const next: TransportName = e.next;
  const detail: string = e.detail;
  console.log(e.transport, status, code, next, e.reason.length, detail.length);
});
client.off('state').off('transport_failed');
// the server ended the connection for good: the reason says why
client.on('state', (e: StateChange) => {
  if (e.to !== 'disconnected') return;
  if (e.reason === DisconnectReason.TOKEN_REVOKED) console.log('signed out', e.detail);
  else if (e.reason === DisconnectReason.DISCONNECTED_BY_SERVER) console.log('disconnected', e.detail);
});
client.subscribe('room', () => {}, {onError: (e) => {
  if (e.code === ErrorCode.UNSUBSCRIBED || e.code === ErrorCode.TOKEN_REVOKED) console.log('no more', e.channel);
}});
client.off('state');

// presence: the live member list, and one-off reads
client.on('presence', (e: PresenceEvent) => {
  const names: string[] = e.members.map((m: Member) => `${m.user} (${m.clients})`);
  const info: {[key: string]: unknown} | null = e.members.length ? e.members[0].info : null;
  const users: number = e.users;
  const clients: number = e.clients;
  const complete: boolean = e.complete;
  const snapshot: boolean = e.snapshot;
  const joined: string[] = e.joins.map((j) => j.user);
  const left: string[] = e.leaves.map((l) => l.user);
  console.log(e.channel, names, info, users, clients, complete, snapshot, joined, left);
});
const here: Member[] | null = client.members('room');
async function everyone(channel: string): Promise<Member[]> {
  const all: Member[] = [];
  let after: string | null = null;
  do {
    const page: PresencePage = await client.presence(channel, {after, limit: 1000});
    all.push(...page.members);
    after = page.next;
    console.log(page.channel, page.clients, page.users);
  } while (after !== null);
  return all;
}
client.presence('room').catch((err: unknown) => {
  if (err instanceof PresenceError) {
    const code: string = err.code;
    const status: number | null = err.status;
    const message: string = err.message;
    console.log(code === ErrorCode.PRESENCE_DISABLED, status, message, err.channel);
  }
});
client.off('presence');
console.log(here, everyone);

// publishing from the browser
async function say(text: string): Promise<number> {
  try {
    const stored: PublishResult = await client.publish('room:1', {text, at: Date.now(), tags: ['a']});
    const where: string = `${stored.channel} ${stored.epoch}:${stored.offset}`;
    console.log(where);
    return stored.offset;
  } catch (err: unknown) {
    if (!(err instanceof PublishError)) throw err;
    const code: string = err.code;
    const retry: boolean = err.retry;
    const after: number | null = err.retryAfter;
    const status: number = err.status;
    const channel: string | null = err.channel;
    if (code === ErrorCode.RATE_LIMITED && retry) await new Promise((ok) => setTimeout(ok, (after ?? 1) * 1000));
    console.log(code === ErrorCode.PUBLISH_FORBIDDEN, status, channel, err.message);
    return -1;
  }
}
client.subscribe('room:1', (msg: Message) => {
  const from: Sender | undefined = msg.sender;
  const user: string | null = from ? from.user : null;
  const by: string | undefined = from?.client;
  console.log(user, by);
});
const refusal = new PublishError('rate_limited', 'slow down', {retry: true, retryAfter: 2, status: 429, channel: 'x'});
const published: 'published' = FrameType.PUBLISHED;
const refusedFrame: 'publish_error' = FrameType.PUBLISH_ERROR;
const tooBig: 'publish_too_large' = ErrorCode.PUBLISH_TOO_LARGE;
console.log(say, refusal, published, refusedFrame, tooBig, ErrorCode.PROXY_UNAVAILABLE, ErrorCode.PROXY_ERROR,
  ErrorCode.INVALID_MESSAGE, ErrorCode.BAD_JSON, ErrorCode.BROKER_UNAVAILABLE);
if (client.state === 'reconnecting') console.log('reconnecting');
client.close();

// constants and helpers
const kind: 'message' = FrameType.MESSAGE;
const trimmed: 'history_trimmed' = ResetReason.HISTORY_TRIMMED;
const forbidden: string = ErrorCode.FORBIDDEN;
const lapsed: 'token_expired' = ReconnectReason.TOKEN_EXPIRED;
const slow: 4001 = CloseCode.SLOW_CONSUMER;
const ended: 4003 = CloseCode.DISCONNECT;
const kicked: 4004 = CloseCode.DISCONNECT_RECONNECT;
const bye: 'disconnect' = FrameType.DISCONNECT;
const revoked: 'token_revoked' = DisconnectReason.TOKEN_REVOKED;
const gone: 'unsubscribed' = ErrorCode.UNSUBSCRIBED;
console.log(ended, kicked, bye, revoked, gone);
const first: TransportName = TRANSPORTS[0];
const v: string = version;
const delay: number = backoff(3, 500, 20000);
const fixed: number = backoff(3, 500, 20000, () => 0.5);
const $ = registerJQuery({fn: {}});
const viaJQuery: Client = $.torChannels({url: '/channels'});
console.log(removed, state, transport, chained, kind, trimmed, forbidden, lapsed, slow, first, v, delay, fixed, viaJQuery);

// Misuse the declarations must reject.
// @ts-expect-error: a callback is required
client.subscribe('news');
// @ts-expect-error: channel names are strings
client.subscribe(42, () => {});
// @ts-expect-error: tokens are numbers
client.unsubscribe('news');
// @ts-expect-error: the state is read-only
client.state = 'connected';
// @ts-expect-error: so is the transport
client.transport = 'poll';
// @ts-expect-error: not a state
const wrongState: ConnectionState = 'open';
// @ts-expect-error: no such event
client.on('message', () => {});
// @ts-expect-error: state events carry no error type
client.on('connected', (e: ErrorEvent) => console.log(e.type));
// @ts-expect-error: no such transport
new Client({transport: 'carrier-pigeon'});
// @ts-expect-error: nor in the list
new Client({transports: ['websocket', 'telegraph']});
// @ts-expect-error: delays are numbers
new Client({minReconnectDelay: '500'});
// @ts-expect-error: getToken gives a string or null
new Client({getToken: () => 42});
// @ts-expect-error: setToken takes a string or null
client.setToken(42);
// @ts-expect-error: the constants are read-only
ErrorCode.FORBIDDEN = 'allowed';
// @ts-expect-error: so are the disconnect reasons
DisconnectReason.TOKEN_REVOKED = 'token_expired';
// @ts-expect-error: no such disconnect reason
console.log(DisconnectReason.BANNED);
// @ts-expect-error: no such frame type
console.log(FrameType.JOIN);
// @ts-expect-error: members() gives a list, not a promise
client.members('room').then(() => {});
// @ts-expect-error: the page cursor is a string
client.presence('room', {after: 42});
// @ts-expect-error: presence() takes an options object, not a limit
client.presence('room', 10);
// @ts-expect-error: a presence event's members are Members, not strings
client.on('presence', (e: PresenceEvent) => e.members.map((m: string) => m.length));
// @ts-expect-error: backoff takes numbers
backoff('3', 500, 20000);
// @ts-expect-error: onError receives a ChannelError, not a string
client.subscribe('news', () => {}, {onError: (e: string) => console.log(e)});
console.log(wrongState);
// @ts-expect-error: a state change is no transport failure
client.on('state', (e: TransportFailedEvent) => console.log(e.next));
// @ts-expect-error: ping is seconds, a number
new Client({ping: '10'});
// @ts-expect-error: publish takes an object, not a string
client.publish('room:1', 'hi');
// @ts-expect-error: and a channel name that is a string
client.publish(1, {text: 'hi'});
// @ts-expect-error: the data is required
client.publish('room:1');
// @ts-expect-error: publish gives a Promise, not the result
client.publish('room:1', {text: 'hi'}).offset;
// @ts-expect-error: a PublishError's status is a number (0 when none came)
const noStatus: null = new PublishError('timeout').status;
console.log(noStatus);
