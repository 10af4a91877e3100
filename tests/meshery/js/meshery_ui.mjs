// Drives the graphql-ws client the Meshery UI uses, with the UI's documents.
// Usage: node meshery_ui.mjs ws://host:port/path story '<spec JSON>'
//
// spec: {
//   docs: [{name, payload: {query, variables, operationName}, take}],
//   headers?: {...}            sent on the WebSocket upgrade (cookie, authorization)
//   connectionParams?: {...}   sent in connection_init
// }
// Every result is printed as {"event": "next", "name", "payload"}; a document
// stops after `take` results; the script ends once every document has ended.
// The packages come from tests/interop/js (no second package.json).

import { createRequire } from 'node:module';

import { deferred, describe, emit, runScenario } from '../../interop/js/common.mjs';

const require = createRequire(new URL('../../interop/js/package.json', import.meta.url));
const { createClient } = require('graphql-ws');
const WebSocket = require('ws');

/** A WebSocket class that sends `headers` on the upgrade, as a browser sends cookies. */
function socketWith(headers) {
  return class extends WebSocket {
    constructor(address, protocols) {
      super(address, protocols, { headers });
    }
  };
}

function connect(url, spec) {
  const closed = deferred();
  const client = createClient({
    url,
    webSocketImpl: socketWith(spec.headers ?? {}),
    connectionParams: spec.connectionParams,
    lazy: false,
    retryAttempts: 0,
    onNonLazyError: (error) => emit('connection_failed', describe(error)),
    on: {
      connected: (socket) => emit('connected', { protocol: socket.protocol }),
      closed: (event) => {
        emit('closed', { code: event.code, reason: event.reason });
        closed.resolve(event);
      },
    },
  });
  return { client, closed: closed.promise };
}

/** Follow one document until `take` results, an error or completion. */
function follow(client, doc, started) {
  return new Promise((resolve) => {
    let seen = 0;
    const stop = client.subscribe(doc.payload, {
      next: (result) => {
        seen += 1;
        emit('next', { name: doc.name, payload: result, ms: Date.now() - started });
        if (seen === doc.take) {
          stop();
          resolve('taken');
        }
      },
      error: (error) => {
        emit('error', { name: doc.name, ...describe(error) });
        resolve('error');
      },
      complete: () => {
        emit('complete', { name: doc.name });
        resolve('complete');
      },
    });
  });
}

const scenarios = {
  async story(url, specText) {
    const spec = JSON.parse(specText);
    const started = Date.now();
    const conn = connect(url, spec);
    const endings = await Promise.all(spec.docs.map((doc) => follow(conn.client, doc, started)));
    emit('ended', { endings, ms: Date.now() - started });
    await conn.client.dispose();
    await conn.closed;
  },
};

runScenario(scenarios);
