// torchannel.js as a plain <script>: the global TorChannels namespace (UMD)
// and the seed's $.torChannels on jQuery. A script file, not a module.
/// <reference path="../../../src/torchannels/static/torchannel.d.ts" />

declare const jQuery: JQueryStatic;

const seed: TorChannels.Client = jQuery.torChannels({url: '/channels'});
const subtoken: number = seed.subscribe('some-channel', (msg: TorChannels.Message) => console.log(msg.offset));
seed.unsubscribe(subtoken);

const plain = new TorChannels.Client({url: '/channels', transport: 'sse'});
plain.on('error', (e) => console.log(e.type === 'channel' ? e.channel : e.code));
console.log(TorChannels.version, TorChannels.TRANSPORTS.length, TorChannels.ErrorCode.TOKEN_EXPIRED);
plain.on('presence', (e: TorChannels.PresenceEvent) => console.log(e.members.map((m) => m.user)));
plain.presence('room').catch((err) => console.log(err instanceof TorChannels.PresenceError && err.code));

// @ts-expect-error: the seed API takes an options object
jQuery.torChannels('/channels');
