// Drives enisdenjo's graphql-ws client (subprotocol graphql-transport-ws).
// Usage: node graphql_ws_client.mjs ws://host:port/path <scenario>

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

import { deferred, describe, emit, runScenario, waitForTest } from './common.mjs';

/** A client that reports its connection lifecycle; it never retries, so failures show. */
function connect(url, options = {}) {
  const closed = deferred();
  const client = createClient({
    url,
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    onNonLazyError: (error) => emit('connection_failed', describe(error)),
    on: {
      opened: (socket) => socket.on('ping', () => emit('ping_frame')),
      ping: (received) => received && emit('ping'),
      connected: (socket, payload) =>
        emit('connected', { protocol: socket.protocol, payload: payload ?? null }),
      closed: (event) => {
        emit('closed', { code: event.code, reason: event.reason });
        closed.resolve(event);
      },
    },
    ...options,
  });
  return { client, closed: closed.promise };
}

/**
 * Run one operation, echoing every sink call; resolves with how it ended.
 * `onNext(result, stop)` may stop the operation early.
 */
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

/** dispose() and wait for the close event, so the server sees a clean 1000. */
async function shutdown({ client, closed }) {
  await client.dispose();
  await closed;
}

const HELLO = { query: '{ hello }' };

const scenarios = {
  /** A query over the socket; the lazy client closes once it is done. */
  async query(url) {
    const conn = connect(url);
    await operation(conn.client, HELLO);
    await conn.closed;
  },

  /** A finite subscription with variables and an operation name, run to completion. */
  async countdown(url, to = '3') {
    const conn = connect(url);
    await operation(conn.client, {
      query: 'subscription Countdown($to: Int!) { countdown(to: $to) }',
      operationName: 'Countdown',
      variables: { to: Number(to) },
    });
    await conn.closed;
  },

  /** Stop an infinite subscription; the test checks the server before we go on. */
  async unsubscribe(url) {
    const conn = connect(url, { lazy: false });
    let seen = 0;
    await operation(conn.client, { query: 'subscription { ticks(everyMs: 10) }' }, (_r, stop) => {
      seen += 1;
      if (seen === 3) stop();
    });
    await waitForTest('unsubscribed');
    await operation(conn.client, HELLO);
    await shutdown(conn);
  },

  /** A document that fails validation; the socket must survive it. */
  async validation(url) {
    const conn = connect(url, { lazy: false });
    await operation(conn.client, { query: '{ nope }' });
    await operation(conn.client, HELLO);
    await shutdown(conn);
  },

  /** connectionParams reach the server; its on_connect answer comes back in the ack. */
  async params(url) {
    const conn = connect(url, {
      lazy: false,
      connectionParams: { token: 'let-me-in', client: 'graphql-ws' },
    });
    await operation(conn.client, { query: '{ connectionParam(name: "client") }' });
    await shutdown(conn);
  },

  /** The server refuses the connection_init: the client must see 4403. */
  async forbidden(url) {
    const conn = connect(url, { connectionParams: { token: 'wrong' } });
    await operation(conn.client, HELLO);
    await conn.closed;
  },
};

runScenario(scenarios);
