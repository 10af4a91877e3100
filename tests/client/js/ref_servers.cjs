// Reference servers for the Python client's interop tests, on the packages that
// tests/interop/js installs (run with NODE_PATH=tests/interop/js/node_modules):
//   - graphql-ws's own server (graphql-transport-ws) on one port,
//   - Apollo's subscriptions-transport-ws SubscriptionServer (legacy graphql-ws) on another.
// Prints one JSON line per event on stdout: {"event":"ready","ws":PORT,"legacy":PORT},
// then "ping" (a protocol ping reached the graphql-ws server), "frame-ping" (a
// WebSocket ping frame reached the legacy server), "stopped" (a
// subscription's iterator was returned: the client completed it), "connected".
// It runs until stdin closes.
'use strict';
const http = require('node:http');
const { WebSocketServer } = require('ws');
const { useServer } = require('graphql-ws/use/ws');
const { SubscriptionServer } = require('subscriptions-transport-ws');
const { buildSchema, execute, subscribe } = require('graphql');

const say = (event, extra = {}) => process.stdout.write(JSON.stringify({ event, ...extra }) + '\n');

const schema = buildSchema(`
  type Query { hello: String! }
  type Subscription { count(to: Int!): Int!  quiet: Int! }
`);

async function* count({ to }) {
  for (let n = 0; n < to; n++) yield { count: n };
}

// Never yields: only a heartbeat can tell the peer is alive. A plain iterator,
// not an async generator, so return() (the client's complete/stop) runs at once.
function quiet() {
  return {
    [Symbol.asyncIterator]() { return this; },
    next: () => new Promise(() => {}),
    return: () => { say('stopped'); return Promise.resolve({ value: undefined, done: true }); },
  };
}

const rootValue = { hello: () => 'world', count, quiet };

function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
}

async function main() {
  const wsHttp = http.createServer();
  const wss = new WebSocketServer({ server: wsHttp, path: '/graphql' });
  wss.on('connection', (socket) => {
    say('connected', { protocol: socket.protocol });
    socket.on('message', (data) => {
      try {
        if (JSON.parse(String(data)).type === 'ping') say('ping');
      } catch {}
    });
  });
  useServer({ schema, roots: { query: rootValue, subscription: rootValue } }, wss);

  // No keep-alive on the legacy server: only the client's WebSocket ping
  // frames (answered by ws) show the connection is alive.
  const legacyHttp = http.createServer();
  const legacyWss = new WebSocketServer({ server: legacyHttp, path: '/graphql' });
  legacyWss.on('connection', (socket) => socket.on('ping', () => say('frame-ping')));
  SubscriptionServer.create(
    { schema, execute, subscribe, rootValue, onConnect: () => { say('connected', { protocol: 'graphql-ws' }); return true; } },
    legacyWss,
  );

  const [wsPort, legacyPort] = await Promise.all([listen(wsHttp), listen(legacyHttp)]);
  say('ready', { ws: wsPort, legacy: legacyPort });
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack || error) + '\n');
  process.exit(1);
});
