// Imports torchannel.mjs as a browser does: both files evaluated as ES
// modules (no CommonJS `module`, `this` undefined) in a fresh global scope
// holding only what argv[2] names ("jquery": a jQuery stand-in), with no
// <script> for torchannel.js before it. Needs --experimental-vm-modules;
// run by module.test.js, which reads the JSON this prints.
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import {fileURLToPath} from 'node:url';

const STATIC = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'src', 'torchannels', 'static');
const read = (name) => fs.readFileSync(path.join(STATIC, name), 'utf8');

const context = vm.createContext({});
if (process.argv[2] === 'jquery') vm.runInContext('var jQuery = function () {};', context);
const before = Reflect.ownKeys(context).map(String);
const modules = {};
for (const name of ['torchannel.js', 'torchannel.mjs']) {
  modules[name] = new vm.SourceTextModule(read(name), {context, identifier: name});
}
await modules['torchannel.mjs'].link((specifier) => {
  if (specifier !== './torchannel.js') throw new Error(`unexpected import ${specifier}`);
  return modules['torchannel.js'];
});
await modules['torchannel.mjs'].evaluate();
const ns = modules['torchannel.mjs'].namespace;
const client = new ns.Client({transport: 'poll', fetch: () => new Promise(() => {}),
  setTimeout: () => 0, clearTimeout: () => {}, window: null, location: null});
const token = client.subscribe('news', () => {});
console.log(JSON.stringify({
  exports: Object.keys(ns).sort(),
  defaultKeys: Object.keys(ns.default).sort(),
  sameClient: ns.default.Client === ns.Client,
  state: client.state,
  token,
  addedGlobals: Reflect.ownKeys(context).map(String).filter((k) => !before.includes(k)),
  seedApi: typeof vm.runInContext('typeof jQuery === "function" ? jQuery.torChannels : undefined', context),
}));
