// torchannel.mjs: the ES-module face of torchannel.js (same directory).
//
//   <script type="module">
//     import {Client} from '/static/torchannel.mjs';
//     const client = new Client({url: '/channels'});
//   </script>
//
// In a browser, torchannel.js runs as a module for its side effect (it sets
// globalThis.TorChannels, and $.torChannels when jQuery is loaded); under Node
// it is CommonJS and arrives as the default export of the namespace.
import * as umd from './torchannel.js';

const api = globalThis.TorChannels || umd.default;

export const {
  version, Client, FrameType, ResetReason, ErrorCode, ReconnectReason, CloseCode,
  TRANSPORTS, backoff, registerJQuery,
} = api;
export default api;
