// torchannel.mjs: the ES-module face of torchannel.js (same directory).
//
//   <script type="module">
//     import {Client} from '/static/torchannel.mjs';
//     const client = new Client({url: '/channels'});
//   </script>
//
// Self-sufficient: no <script> tag for torchannel.js is needed, and no global
// name is read or left behind. The client code lives in torchannel.js only.
// Under Node and bundlers torchannel.js loads as CommonJS and its exports
// arrive as the default export of the namespace. In a browser it runs as an
// ES module, sees that it is one, and leaves its API under a private symbol
// for this module alone, which takes it and deletes it: nothing runs between
// the evaluation of torchannel.js and this module's body.
import * as loaded from './torchannel.js';

const KEY = Symbol.for('torchannels.api');
const api = loaded.default || globalThis[KEY];
delete globalThis[KEY];
if (!api) throw new Error('torchannels: torchannel.js did not load next to torchannel.mjs');

export const {
  version, Client, FrameType, ResetReason, ErrorCode, ReconnectReason, DisconnectReason,
  CloseCode, TRANSPORTS, PresenceError, PublishError, backoff, registerJQuery,
} = api;
export default api;
