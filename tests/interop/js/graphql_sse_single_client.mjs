// Drives enisdenjo's graphql-sse client in single connection mode
// (`singleConnection: true`): PUT for a token, one event stream, every
// operation POSTed with its operationId, DELETE to stop one.
// Usage: node graphql_sse_single_client.mjs http://host:port/path <scenario>

import { createClient } from 'graphql-sse';

import { describe, emit, runScenario, waitForTest } from './common.mjs';

function connect(url) {
  return createClient({
    url,
    singleConnection: true,
    retryAttempts: 0,
    on: { connected: () => emit('connected') },
  });
}

/** Run one operation, echoing every sink call (tagged), `onNext(result, stop)` may stop it. */
function operation(client, tag, payload, onNext = () => {}) {
  return new Promise((resolve) => {
    const stop = client.subscribe(payload, {
      next: (result) => {
        emit('next', { tag, payload: result });
        onNext(result, stop);
      },
      error: (error) => {
        emit('error', { tag, ...describe(error) });
        resolve('error');
      },
      complete: () => {
        emit('complete', { tag });
        resolve('complete');
      },
    });
  });
}

const scenarios = {
  async many(url) {
    const client = connect(url);
    await Promise.all([
      operation(client, 'a', { query: 'subscription { countdown(to: 3) }' }),
      operation(client, 'b', { query: 'subscription { countdown(to: 2) }' }),
      operation(client, 'q', { query: '{ hello }' }),
    ]);
    client.dispose();
  },
  async invalid(url) {
    const client = connect(url);
    await operation(client, 'bad', { query: '{ notExists }' });
    client.dispose();
  },
  async stop(url) {
    const client = connect(url);
    let stopped;
    const done = new Promise((resolve) => {
      stopped = resolve;
    });
    operation(client, 't', { query: 'subscription { ticks }' }, (result, stop) => {
      if (result.data.ticks === 2) {
        stop();
        emit('stopped');
        stopped();
      }
    });
    await done;
    await waitForTest('check_cleanup');
    client.dispose();
  },
};

runScenario(scenarios);
