// Drives Apollo Client 4 over its HttpLink: subscriptions use Apollo's
// multipart protocol (`Accept: multipart/mixed;subscriptionSpec=1.0`), queries
// plain GraphQL over HTTP. Node 20's own fetch carries every request.
// Usage: node apollo_client.mjs http://host:port/path <scenario>

import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client';

import { describe, emit, runScenario, waitForTest } from './common.mjs';

function connect(url) {
  return new ApolloClient({
    link: new HttpLink({ uri: url, fetch }),
    cache: new InMemoryCache(),
  });
}

/** Subscribe, echoing every observer call; `onNext(result, stop)` may stop early. */
function subscription(client, query, onNext = () => {}) {
  return new Promise((resolve) => {
    const handle = client.subscribe({ query: gql(query), fetchPolicy: 'no-cache' }).subscribe({
      next: (result) => {
        const { data, error } = result;
        emit('next', { data: data ?? null, error: error ? describe(error) : null });
        onNext(result, () => handle.unsubscribe());
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
    await subscription(connect(url), 'subscription { countdown(to: 3) }');
  },
  async failing(url) {
    await subscription(connect(url), 'subscription { failing }');
  },
  async query(url) {
    const result = await connect(url).query({ query: gql('{ hello }'), fetchPolicy: 'no-cache' });
    emit('result', { data: result.data });
  },
  async stop(url) {
    let stopped;
    const done = new Promise((resolve) => {
      stopped = resolve;
    });
    subscription(connect(url), 'subscription { ticks }', (result, stop) => {
      if (result.data?.ticks === 2) {
        stop();
        emit('stopped');
        stopped();
      }
    });
    await done;
    await waitForTest('check_cleanup');
  },
};

runScenario(scenarios);
