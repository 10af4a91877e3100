// Drives enisdenjo's graphql-sse client in distinct connections mode
// (one HTTP request per operation, `singleConnection: false`).
// Usage: node graphql_sse_client.mjs http://host:port/path <scenario>

import { createClient } from 'graphql-sse';

import { describe, emit, runScenario, waitForTest } from './common.mjs';

/** A client that never retries, so a failure shows instead of being papered over. */
function connect(url) {
  return createClient({
    url,
    singleConnection: false,
    retryAttempts: 0,
    onMessage: (message) => emit('message', { name: message.event }),
  });
}

/** Run one operation, echoing every sink call; `onNext(result, stop)` may stop it early. */
function operation(client, payload, onNext = () => {}) {
  return new Promise((resolve) => {
    const stop = client.subscribe(payload, {
      next: (result) => {
        emit('next', { payload: result });
        onNext(result, stop);
      },
      error: (error) => {
        emit('error', describe(error));
        resolve('error');
      },
      complete: () => {
        emit('complete');
        resolve('complete');
      },
    });
  });
}

const scenarios = {
  async subscribe(url) {
    const client = connect(url);
    await operation(client, { query: 'subscription { countdown(to: 3) }' });
    client.dispose();
  },
  async query(url) {
    const client = connect(url);
    await operation(client, { query: '{ hello }' });
    client.dispose();
  },
  async invalid(url) {
    const client = connect(url);
    await operation(client, { query: '{ notExists }' });
    client.dispose();
  },
  async stop(url) {
    const client = connect(url);
    let stopped;
    const done = new Promise((resolve) => {
      stopped = resolve;
    });
    operation(client, { query: 'subscription { ticks }' }, (result, stop) => {
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
