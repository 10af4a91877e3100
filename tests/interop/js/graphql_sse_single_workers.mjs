// enisdenjo's graphql-sse client in single connection mode against
// `meshsub-trio serve --workers N` (driven by tests/workers): each request on a
// connection of its own (`connection: close`), so the test's proxy can put each
// one on the worker it chooses. Subscribes `subs` times to Meshery's events
// (from the log's start, so none races its subscription), publishes `events`
// events through the same client, and stops each subscription once it has
// seen them all (a DELETE).
// Usage: node graphql_sse_single_workers.mjs http://host:port/path spread <subs> <events>

import { createClient } from 'graphql-sse';

import { describe, emit, runScenario } from './common.mjs';

const EVENTS = 'subscription { subscribeEvents { id description } }';
const PUBLISH =
  'mutation($d: String!) { publishEvent(input: {severity: informational, description: $d}) { id } }';

/** fetch, one connection per request; every answer's status is reported. */
async function closingFetch(url, init) {
  const response = await fetch(url, {
    ...init,
    headers: { ...(init.headers ?? {}), connection: 'close' },
  });
  emit('fetch', { method: init.method, status: response.status });
  return response;
}

function subscription(client, tag, count) {
  const seen = [];
  return new Promise((resolve) => {
    const stop = client.subscribe(
      { query: EVENTS, extensions: { cursor: '0' } },
      {
        next: (result) => {
          emit('next', { tag, payload: result });
          seen.push(result.data.subscribeEvents.description);
          if (seen.length === count) stop();
        },
        error: (error) => {
          emit('error', { tag, ...describe(error) });
          resolve();
        },
        complete: () => {
          emit('complete', { tag });
          resolve();
        },
      },
    );
  });
}

function mutation(client, tag, description) {
  return new Promise((resolve) => {
    client.subscribe(
      { query: PUBLISH, variables: { d: description } },
      {
        next: (result) => emit('next', { tag, payload: result }),
        error: (error) => {
          emit('error', { tag, ...describe(error) });
          resolve();
        },
        complete: () => {
          emit('complete', { tag });
          resolve();
        },
      },
    );
  });
}

const scenarios = {
  async spread(url, subs, events) {
    const client = createClient({
      url,
      singleConnection: true,
      retryAttempts: 0,
      fetchFn: closingFetch,
      on: { connected: () => emit('connected') },
    });
    const count = Number(events);
    const listening = [];
    for (let n = 0; n < Number(subs); n++) listening.push(subscription(client, `s${n}`, count));
    for (let n = 0; n < count; n++) await mutation(client, `m${n}`, `e-${n}`);
    await Promise.all(listening);
    client.dispose();
  },
};

runScenario(scenarios, { watchdogMs: 30000 });
