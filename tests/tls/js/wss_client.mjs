// graphql-ws (enisdenjo) over wss:// with Node's `ws`, trusting only the test CA.
// Usage: node wss_client.mjs <interop js dir> wss://host:port/path <ca.pem>
// Prints one JSON line per observation; exits 1 with {"event":"failure"} on any problem.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const [jsDir, url, caFile] = process.argv.slice(2);
const require = createRequire(`${jsDir}/package.json`); // the locked packages of tests/interop/js
const { createClient } = require('graphql-ws');
const WebSocket = require('ws');

const emit = (event, fields = {}) => process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
const fail = (message) => {
  emit('failure', { message: String(message) });
  process.exit(1);
};
setTimeout(() => fail('watchdog: no result in 15 s'), 15000).unref();

const ca = readFileSync(caFile);
class TrustingWebSocket extends WebSocket {
  constructor(address, protocols) {
    super(address, protocols, { ca }); // verification stays on: only the CA is ours
  }
}

const client = createClient({
  url,
  webSocketImpl: TrustingWebSocket,
  retryAttempts: 0,
  onNonLazyError: (error) => fail(error?.message ?? JSON.stringify(error)),
  on: { connected: (socket) => emit('connected', { protocol: socket.protocol }) },
});

const values = [];
await new Promise((resolve) => {
  client.subscribe(
    { query: 'subscription { countdown(to: 3) }' },
    {
      next: (result) => values.push(result.data.countdown),
      error: (error) => fail(error?.message ?? JSON.stringify(error)),
      complete: resolve,
    },
  );
});
emit('values', { values });
await client.dispose();
emit('done');
