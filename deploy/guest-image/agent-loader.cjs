'use strict';
// edgenfv guest image: starts the guest agent bundle (/opt/edgenfv/guest-agent.cjs, one CommonJS file) with V8's
// code cache (/opt/edgenfv/guest-agent.cjs.cache): bytecode of the bundle's functions compiled by the image builder
// on its host, with this node binary and the flags in /etc/edgenfv/node-flags, so the guest skips parsing and
// compiling them (docs/guest-image.md). A cache V8 refuses (another node, other flags) is ignored: the bundle is then
// compiled as usual. Prints `EDGENFV_AGENT_CACHE <accepted|rejected|none>` on the console.
// EDGENFV_AGENT_CACHE_OUT=<file> (the image builder's training run): on SIGUSR2, write the cache of every function
// compiled so far to that file.
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const Module = require('node:module');

try {
  // the guest's uptime once Node.js itself is up (npm run bench:boot splits Node.js's start from the bundle's load)
  fs.writeSync(1, `EDGENFV_AGENT_LOADER uptime=${fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]}\n`);
} catch {
  /* no /proc or no stdout */
}
const file = process.env.EDGENFV_AGENT_BUNDLE || path.join(__dirname, 'guest-agent.cjs');
const source = fs.readFileSync(file, 'utf8');
let cachedData;
try {
  cachedData = fs.readFileSync(`${file}.cache`);
} catch {
  /* no cache: compiled as usual */
}
// a fixed name (not path.basename(file): a slice that keeps the whole path): the cache records the name, and the
// image builder's training run is elsewhere on disk
const script = new vm.Script(Module.wrap(source), { filename: 'guest-agent.cjs', ...(cachedData ? { cachedData } : {}) });
try {
  fs.writeSync(1, `EDGENFV_AGENT_CACHE ${cachedData ? (script.cachedDataRejected ? 'rejected' : 'accepted') : 'none'}\n`);
} catch {
  /* no stdout */
}
const out = process.env.EDGENFV_AGENT_CACHE_OUT;
if (out) {
  process.on('SIGUSR2', () => {
    fs.writeFileSync(`${out}.tmp`, script.createCachedData());
    fs.renameSync(`${out}.tmp`, out);
  });
}
const mod = { exports: {}, filename: file, id: '.', loaded: false };
script.runInThisContext()(mod.exports, require, mod, file, path.dirname(file));
