// Drives Apollo's deprecated subscriptions-transport-ws client (subprotocol graphql-ws).
// Usage: node legacy_client.mjs ws://host:port/path <scenario>

import { SubscriptionClient } from 'subscriptions-transport-ws';
import WebSocket from 'ws';

import { describe, emit, runScenario, waitForTest } from './common.mjs';

/**
 * A connected client plus a promise for its socket's close. The client sends
 * connection_init and its first start without waiting for the ack, as in the wild.
 */
function connect(url, connectionParams = {}) {
  const client = new SubscriptionClient(
    url,
    {
      reconnect: false,
      connectionParams,
      connectionCallback: (error) => {
        if (error) emit('connection_error', { payload: error });
      },
    },
    WebSocket,
  );
  const socket = client.client;
  socket.on('ping', () => emit('ping_frame'));
  socket.on('message', (data) => {
    if (JSON.parse(data.toString()).type === 'ka') emit('ka');
  });
  client.onConnected((payload) =>
    emit('connected', { protocol: socket.protocol, payload: payload ?? null }),
  );
  client.onError((error) => emit('client_error', describe(error)));
  const closed = new Promise((resolve) => {
    socket.once('close', (code, reason) => {
      emit('closed', { code, reason: reason.toString() });
      resolve(code);
    });
  });
  return { client, closed };
}

/**
 * Run one operation through the observable API, echoing every callback;
 * resolves with how it ended. `onNext(result, stop)` may stop it early.
 */
function operation(client, request, onNext = () => {}) {
  return new Promise((resolve) => {
    const subscription = client.request(request).subscribe({
      next: (result) => {
        emit('next', { payload: result });
        onNext(result, () => subscription.unsubscribe());
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

/** close() sends connection_terminate; wait for the socket to finish closing. */
async function shutdown({ client, closed }) {
  client.close();
  await closed;
}

/** Resolves once `stop` was called: the legacy observer gets no complete for it. */
function untilStopped(client, request, after) {
  return new Promise((resolve) => {
    let seen = 0;
    operation(client, request, (_result, stop) => {
      seen += 1;
      if (seen === after) {
        stop();
        resolve();
      }
    });
  });
}

const HELLO = { query: '{ hello }' };

const scenarios = {
  async query(url) {
    const conn = connect(url);
    await operation(conn.client, HELLO);
    await shutdown(conn);
  },

  async countdown(url, to = '3') {
    const conn = connect(url);
    await operation(conn.client, {
      query: 'subscription Countdown($to: Int!) { countdown(to: $to) }',
      operationName: 'Countdown',
      variables: { to: Number(to) },
    });
    await shutdown(conn);
  },

  /** Stop an infinite subscription; the test checks the server before we go on. */
  async unsubscribe(url) {
    const conn = connect(url);
    await untilStopped(conn.client, { query: 'subscription { ticks(everyMs: 10) }' }, 3);
    await waitForTest('unsubscribed');
    await operation(conn.client, HELLO);
    await shutdown(conn);
  },

  /** A document that fails validation; the socket must survive it. */
  async validation(url) {
    const conn = connect(url);
    await operation(conn.client, { query: '{ nope }' });
    await operation(conn.client, HELLO);
    await shutdown(conn);
  },

  /** connectionParams reach the server; its on_connect answer comes back in the ack. */
  async params(url) {
    const conn = connect(url, { token: 'let-me-in', client: 'subscriptions-transport-ws' });
    await operation(conn.client, { query: '{ connectionParam(name: "client") }' });
    await shutdown(conn);
  },

  /** The server refuses the connection_init: connection_error, then the socket closes. */
  async forbidden(url) {
    const conn = connect(url, { token: 'wrong' });
    conn.client.request(HELLO).subscribe({
      next: (result) => emit('next', { payload: result }),
      error: (error) => emit('error', describe(error)),
      complete: () => emit('complete'),
    });
    await conn.closed;
  },
};

runScenario(scenarios);
