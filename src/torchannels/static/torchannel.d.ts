// Type declarations for torchannel.js, the browser client of torchannels.
// Hand-written; see docs/client.md for the behaviour behind each name.

export as namespace TorChannels;

/** The transports, in the order the client tries them. */
export type TransportName = 'websocket' | 'sse' | 'stream' | 'longpoll' | 'poll';

/**
 * 'connecting': the first connection is being made; 'reconnecting': an
 * established connection was lost (for longer than reconnectingDelay) and
 * the client retries; 'disconnected': no channel is subscribed, close() was
 * called, or the server ended the connection for good (a DisconnectReason).
 */
export type ConnectionState = 'disconnected' | 'connecting' | 'connected' | 'reconnecting';

/** A delivered message: what was published, plus the four keys the server sets. */
export interface Message {
  channel: string;
  /** Server time of publication, seconds since the Unix epoch. */
  ts: number;
  epoch: string;
  offset: number;
  /** Present only on messages a client published (client.publish()): who, as the server saw it. */
  sender?: Sender;
  [key: string]: unknown;
}

/** What subscribe() returns and unsubscribe() takes. */
export type SubscriptionToken = number;

/** The server refused a channel, or stopped serving it (an `error` frame naming it). */
export interface ChannelError {
  channel: string;
  /**
   * `forbidden` when can_access denied it, `unsubscribed` when the server
   * stopped delivering it (POST /api/unsubscribe), a token code
   * (`token_revoked`, ...); see ErrorCode.
   */
  code: string;
  message: string;
}

export interface SubscribeOptions {
  /**
   * The client's position in the channel was lost (history gone, epoch
   * changed): forget what you derived from it. The channel's state and
   * history follow through the callback.
   */
  onReset?: (channel: string, reason: string) => void;
  /** The server refused the channel or unsubscribed it; the client stops asking for it. */
  onError?: (error: ChannelError) => void;
}

/** Payload of the 'state' event: one per change of client.state. */
export interface StateChange {
  from: ConnectionState;
  to: ConnectionState;
  /**
   * Plain words a page can show a user: 'starting', 'connected over websocket',
   * what ended the connection ('connection lost', 'server unreachable',
   * 'server restarting', 'access denied (403)', ...); entering
   * 'disconnected': 'idle', 'closed', or the server's DisconnectReason
   * ('disconnected_by_server', 'token_revoked').
   */
  reason: string;
  /**
   * Entering 'reconnecting', or 'disconnected' by the server: the technical
   * detail of what ended the connection ('close 1006', 'HTTP 502', 'no ping
   * from the server within 25000 ms', 'disconnect frame (token_revoked)',
   * 'close 4003: disconnected_by_server', ...); null on every other move.
   */
  detail: string | null;
  transport: TransportName | null;
}

/** Payload of the 0.1 events 'connecting' (also on entering 'reconnecting'), 'connected' and 'disconnected'. */
export interface StateEvent {
  transport: TransportName | null;
  /**
   * 'connecting': what was lost (none on the first connect); 'disconnected':
   * 'idle', 'closed', or a DisconnectReason (the server ended the connection).
   */
  reason?: string;
}

/** Payload of the 'transport_failed' event: the client steps down from `transport` to `next`. */
export interface TransportFailedEvent {
  transport: TransportName;
  next: TransportName;
  /** The HTTP status of the answer, when one came. */
  status: number | null;
  /** The WebSocket close code (1006 for a refused upgrade), a protocol ErrorCode or the HTTP status. */
  code: string | number | null;
  /** Plain words, e.g. 'server unreachable', 'server not responding', 'server unavailable (502)'. */
  reason: string;
  /** The technical detail, e.g. 'close 1006 before open (refused or unreachable)', 'HTTP 502'. */
  detail: string;
}

/** Payload of the 'error' event. */
export interface ErrorEvent {
  /**
   * 'transport': a connection or request failed (the client retries);
   * 'channel': the server refused a channel; 'server': an error frame naming
   * no channel; 'token': getToken() threw, rejected or gave no string (the
   * client retries after a pause); 'callback': an application callback threw.
   */
  type: 'transport' | 'channel' | 'server' | 'token' | 'callback';
  transport?: TransportName | null;
  channel?: string;
  /** An ErrorCode, an HTTP status or a WebSocket close code. */
  code?: string | number;
  /** The HTTP status of a failed answer. */
  status?: number;
  /** Type 'transport': e.g. 'blocked or unreachable', 'connection lost', 'connect_timeout', 'ping_timeout'. */
  reason?: string;
  /** Type 'transport': the technical detail, as the `detail` of 'transport_failed', or the server's message. */
  message?: string;
  error?: unknown;
}

/** A user present in a channel: one entry per user, however many connections. */
export interface Member {
  /** The user id (the token's `sub`, or what the app's identify() gave). */
  user: string;
  /** The user's info (the token's `info` claim), or null. */
  info: {[key: string]: unknown} | null;
  /** How many of the user's clients (connections, polling clients) are present; 1 for a user who just joined. */
  clients: number;
}

/** A user who joined (their first client arrived), as a `presence` frame says it. */
export interface PresenceJoin {
  user: string;
  info: {[key: string]: unknown} | null;
}

/** A user who left (their last client has been gone for the server's grace). */
export interface PresenceLeave {
  user: string;
}

/**
 * Payload of the 'presence' event: the member list of a presence channel
 * changed. A snapshot (on subscribing, and again after every reconnect)
 * replaces the list; `presence` frames then add joins and remove leaves.
 */
export interface PresenceEvent {
  channel: string;
  /** The list now, sorted by user id: the snapshot's members, plus joins, minus leaves. */
  members: Member[];
  /** Users in the channel: the snapshot's count, plus joins, minus leaves. */
  users: number;
  /** Clients in the channel, as of the last snapshot (frames carry no client counts). */
  clients: number;
  /** False when the snapshot was a first page only (more users than it listed): `members` is then not everyone. */
  complete: boolean;
  /** This change's joins ([] for a snapshot). */
  joins: PresenceJoin[];
  /** This change's leaves ([] for a snapshot). */
  leaves: PresenceLeave[];
  /** True: a snapshot replaced the list; false: a `presence` frame was applied. */
  snapshot: boolean;
}

/** One page of a channel's members (client.presence()). */
export interface PresencePage {
  channel: string;
  /** Sorted by user id. */
  members: Member[];
  /** Pass as `after` for the next page; null on the last page. */
  next: string | null;
  /** Counts of the whole channel. */
  clients: number;
  users: number;
}

export interface PresenceOptions {
  /** The `next` of the page before (opaque). */
  after?: string | null;
  /** Members per page: 1 to 1000; the server's default is 100. */
  limit?: number | null;
}

/** Why client.presence() rejected. */
export class PresenceError extends Error {
  readonly name: 'PresenceError';
  /**
   * An ErrorCode (presence_disabled, invalid_cursor, invalid_limit, forbidden,
   * token_*, ...), or 'timeout', 'unreachable', 'http_error', 'bad_answer'.
   */
  readonly code: string;
  readonly channel: string;
  /** The HTTP status of an HTTP read's answer; null over a WebSocket or when none came. */
  readonly status: number | null;
}

/** What client.publish() resolves with: where the server stored the message. */
export interface PublishResult {
  channel: string;
  /** The channel's epoch and the message's offset in it, as a delivered Message has them. */
  epoch: string;
  offset: number;
}

/**
 * Who published a message from a client, as the server stamps it on the
 * delivered Message (`message.sender`); the server refuses `sender` from
 * publishers, so only client publishes carry it.
 */
export interface Sender {
  /** The publisher's user id (the token's `sub`), or null for an anonymous client. */
  user: string | null;
  /** The publisher's client id (bare, as the server names the connection). */
  client: string;
}

/** Why client.publish() rejected. */
export class PublishError extends Error {
  constructor(code: string, message?: string | null, details?: {
    retry?: boolean; retryAfter?: number | null; status?: number; channel?: string | null;
  });
  readonly name: 'PublishError';
  /**
   * An ErrorCode (publish_forbidden, publish_too_large, rate_limited,
   * proxy_unavailable, proxy_error, broker_unavailable, invalid_channel,
   * invalid_message, bad_json, token_*, or a publish backend's own code),
   * or the client's: 'connection_lost', 'timeout', 'network_error' (the
   * message may or may not have been stored), 'http_error', 'bad_answer'.
   */
  readonly code: string;
  /** Trying again after a pause may succeed (rate_limited, proxy_unavailable, broker_unavailable, ...). */
  readonly retry: boolean;
  /** Seconds to wait before trying again, when the server said (rate_limited); else null. */
  readonly retryAfter: number | null;
  /** The HTTP status of the answer; 0 over a WebSocket, before any answer, or for an argument check. */
  readonly status: number;
  /** The channel published to (null when it was not a string). */
  readonly channel: string | null;
}

export interface ClientOptions {
  /** The ChannelMixin route. Default '/channels'. May carry a query string. */
  url?: string;
  /** Default: url + '/ws', as ws: or wss: on the page's origin. */
  websocketUrl?: string | null;
  /** The transports to try, in order. Default: all, as in TRANSPORTS. */
  transports?: TransportName[];
  /** Use only this transport (no fallback). */
  transport?: TransportName | null;
  /** Called for every reset, after the subscriptions' own onReset. */
  onReset?: ((channel: string, reason: string) => void) | null;
  /** Backoff bounds, ms. Defaults 500 and 10000. */
  minReconnectDelay?: number;
  maxReconnectDelay?: number;
  /** ms a lost connection may take to come back before the state becomes 'reconnecting'. Default 1000. */
  reconnectingDelay?: number;
  /** ms to wait for a streaming transport's `connected` frame before stepping down. Default 5000. */
  connectTimeout?: number;
  /** ms a ping may be late before the connection counts as dead. Default 10000. */
  maxPingDelay?: number;
  /** ms between polls of the poll transport. Default 2000. */
  pollInterval?: number;
  /**
   * Seconds a long-poll may be held, sent as `timeout`; the server caps it to
   * its own maximum. Default 25; null sends none.
   */
  longpollTimeout?: number | null;
  /** ms an HTTP poll answer may take beyond the long-poll hold. Default 10000. */
  requestTimeout?: number;
  /**
   * Seconds between keep-alives to ask websocket, sse and stream for (the
   * `ping` parameter; the server clamps it to [5, 60]). Default null: the
   * server's; the client shortens it by itself after idle cuts.
   */
  ping?: number | null;
  /** ms before the first probe of the better transports after a step-down. Default 15000. */
  probeDelay?: number;
  /** ms, the longest pause between two probes. Default 300000. */
  maxProbeDelay?: number;
  /** Send cookies cross-origin (fetch credentials 'include', EventSource withCredentials). */
  withCredentials?: boolean;
  /**
   * A subscription token (the hub's signed JWT), sent as the `token` query
   * parameter of every request, EventSource URL and WebSocket URL.
   */
  token?: string | null;
  /**
   * Gives a fresh token: called before connecting when there is no `token`,
   * and whenever the server says the token lapsed (the channels then resume
   * from their positions). A string, or null for none; may return a Promise.
   * Failures are retried with backoff.
   */
  getToken?: (() => string | null | PromiseLike<string | null>) | null;

  // The environment, injectable (defaults: the global scope).
  fetch?: (url: string, init?: object) => Promise<any>;
  EventSource?: new (url: string, init?: {withCredentials?: boolean}) => any;
  WebSocket?: new (url: string) => any;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (id: any) => void;
  /** Source of randomness for the backoff jitter. */
  random?: () => number;
  /** The clock, ms (default Date.now). */
  now?: () => number;
  /** Where 'online' events come from; null for none. */
  window?: {
    addEventListener(type: string, listener: () => void): void;
    removeEventListener(type: string, listener: () => void): void;
  } | null;
  /** Where 'visibilitychange' events come from (probes, retries); null for none. */
  document?: {
    visibilityState?: string;
    addEventListener(type: string, listener: () => void): void;
    removeEventListener(type: string, listener: () => void): void;
  } | null;
  /** The page's location, to resolve a relative WebSocket URL; null for none. */
  location?: {href: string} | null;
  AbortController?: new () => any;
  TextDecoder?: new () => any;
}

export class Client {
  constructor(options?: ClientOptions);
  /**
   * The connection state. Each move fires 'state', then the 0.1 event of the
   * new state: disconnected -> connecting -> connected -> reconnecting ->
   * connected ..., and any -> disconnected (idle, close(), or the server's
   * `disconnect` with reconnect false, which drops every subscription as
   * close() does: a later subscribe() starts again).
   */
  readonly state: ConnectionState;
  /** The transport in use or being tried; null when disconnected. */
  readonly transport: TransportName | null;
  /**
   * Call `callback` for each message of `channel`: state or retained history
   * first on a fresh join, then new messages. Connects if needed.
   * Throws a TypeError for an invalid channel name.
   */
  subscribe(channel: string, callback: (message: Message) => void, options?: SubscribeOptions): SubscriptionToken;
  /** Remove one callback; true if the token was subscribed. */
  unsubscribe(token: SubscriptionToken): boolean;
  /**
   * Use this subscription token (null: none) for every later request or
   * connection; live connections are kept. Channels refused for a token
   * reason (codes token_*) are asked for again.
   */
  setToken(token: string | null): void;
  /**
   * The members of a subscribed presence channel as the client knows them
   * now, sorted by user id; null when the channel is not subscribed, has no
   * presence, or its snapshot has not come yet.
   */
  members(channel: string): Member[] | null;
  /**
   * Read one page of a channel's members now: a `presence` command on a
   * WebSocket carrying the channel, else an HTTP GET with the same token.
   * Rejects with a PresenceError. Throws a TypeError for an invalid channel
   * name, `after` or `limit`.
   */
  presence(channel: string, options?: PresenceOptions): Promise<PresencePage>;
  /**
   * Publish `data` (a plain JSON object without the keys channel, ts,
   * epoch, offset, sender) to `channel`: a `publish` command on the
   * client's open WebSocket, else a POST to `url` with the same token.
   * The server decides who may publish (the channel's `publish` option)
   * and stamps the message with `sender`. Rejects with a PublishError;
   * never throws.
   */
  publish(channel: string, data: {[key: string]: unknown}): Promise<PublishResult>;
  on(event: 'presence', listener: (event: PresenceEvent) => void): this;
  on(event: 'state', listener: (event: StateChange) => void): this;
  on(event: 'transport_failed', listener: (event: TransportFailedEvent) => void): this;
  on(event: 'connecting' | 'connected' | 'disconnected', listener: (event: StateEvent) => void): this;
  on(event: 'error', listener: (event: ErrorEvent) => void): this;
  off(event: 'state' | 'transport_failed' | 'connecting' | 'connected' | 'disconnected' | 'error' | 'presence',
    listener?: (event: any) => void): this;
  /** Drop every subscription and disconnect. */
  close(): void;
}

export const version: string;
export const TRANSPORTS: readonly TransportName[];

export const FrameType: {
  readonly MESSAGE: 'message';
  readonly SUBSCRIBED: 'subscribed';
  readonly UNSUBSCRIBED: 'unsubscribed';
  readonly RESET: 'reset';
  readonly ERROR: 'error';
  readonly CONNECTED: 'connected';
  readonly PING: 'ping';
  readonly RECONNECT: 'reconnect';
  readonly PRESENCE: 'presence';
  readonly PRESENCE_PAGE: 'presence_page';
  readonly DISCONNECT: 'disconnect';
  readonly PUBLISHED: 'published';
  readonly PUBLISH_ERROR: 'publish_error';
};

export const ResetReason: {
  readonly EPOCH_CHANGED: 'epoch_changed';
  readonly HISTORY_TRIMMED: 'history_trimmed';
  readonly POSITION_AHEAD: 'position_ahead';
};

export const ErrorCode: {
  readonly FORBIDDEN: 'forbidden';
  readonly TOKEN_REQUIRED: 'token_required';
  readonly TOKEN_EXPIRED: 'token_expired';
  readonly TOKEN_MALFORMED: 'token_malformed';
  readonly TOKEN_BAD_SIGNATURE: 'token_bad_signature';
  readonly TOKEN_NOT_YET_VALID: 'token_not_yet_valid';
  readonly TOKEN_BAD_ALGORITHM: 'token_bad_algorithm';
  readonly TOKEN_UNKNOWN_KEY: 'token_unknown_key';
  readonly TOKEN_BAD_AUDIENCE: 'token_bad_audience';
  readonly TOKEN_BAD_ISSUER: 'token_bad_issuer';
  readonly TOKEN_UNSUPPORTED: 'token_unsupported';
  readonly INVALID_INFO: 'invalid_info';
  readonly TOKEN_REVOKED: 'token_revoked';
  readonly UNSUBSCRIBED: 'unsubscribed';
  readonly UNKNOWN_TRANSPORT: 'unknown_transport';
  readonly INVALID_CHANNEL: 'invalid_channel';
  readonly MALFORMED_CURSOR: 'malformed_cursor';
  readonly TOO_MANY_CHANNELS: 'too_many_channels';
  readonly NO_CHANNELS: 'no_channels';
  readonly REQUEST_TOO_LARGE: 'request_too_large';
  readonly BAD_PARAMETER: 'bad_parameter';
  readonly BAD_MESSAGE: 'bad_message';
  readonly PRESENCE_DISABLED: 'presence_disabled';
  readonly INVALID_CURSOR: 'invalid_cursor';
  readonly INVALID_LIMIT: 'invalid_limit';
  readonly BAD_JSON: 'bad_json';
  readonly INVALID_MESSAGE: 'invalid_message';
  readonly PUBLISH_FORBIDDEN: 'publish_forbidden';
  readonly PUBLISH_TOO_LARGE: 'publish_too_large';
  readonly RATE_LIMITED: 'rate_limited';
  readonly PROXY_UNAVAILABLE: 'proxy_unavailable';
  readonly PROXY_ERROR: 'proxy_error';
  readonly BROKER_UNAVAILABLE: 'broker_unavailable';
  readonly INVALID_IDEMPOTENCY_KEY: 'invalid_idempotency_key';
  readonly SHUTTING_DOWN: 'shutting_down';
};

export const ReconnectReason: {
  readonly BYTE_LIMIT: 'byte_limit';
  readonly SLOW_CONSUMER: 'slow_consumer';
  readonly SHUTDOWN: 'shutdown';
  readonly TOKEN_EXPIRED: 'token_expired';
  readonly BROKER_UNAVAILABLE: 'broker_unavailable';
};

/** `reason` of `disconnect` frames: why the server ended the connection. */
export const DisconnectReason: {
  readonly DISCONNECTED_BY_SERVER: 'disconnected_by_server';
  readonly TOKEN_REVOKED: 'token_revoked';
};

export const CloseCode: {
  readonly NORMAL: 1000;
  readonly GOING_AWAY: 1001;
  readonly MESSAGE_TOO_BIG: 1009;
  readonly TRY_AGAIN_LATER: 1013;
  readonly SLOW_CONSUMER: 4001;
  readonly EXPIRED: 4002;
  /** The server ended the socket: do not reconnect (close reason: a DisconnectReason). */
  readonly DISCONNECT: 4003;
  /** The server ended the socket: reconnect at once (close reason: a DisconnectReason). */
  readonly DISCONNECT_RECONNECT: 4004;
};

/** Full-jitter backoff: a delay in [min, min(max, min + min * 2^attempt)]. */
export function backoff(attempt: number, min: number, max: number, random?: () => number): number;

/** Add `$.torChannels(options)` to a jQuery object (done on load when jQuery is present). */
export function registerJQuery<T extends object>($: T): T & {torChannels(options?: ClientOptions): Client};

declare global {
  interface JQueryStatic {
    /** The 2009 seed API: `$.torChannels({url: '/channels'})`. */
    torChannels(options?: ClientOptions): Client;
  }
}
