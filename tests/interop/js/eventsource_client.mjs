// The npm `eventsource` package (a WHATWG EventSource for Node) against
// Meshery's SSE route. It reconnects by itself when the stream breaks, sending
// the last `id:` it saw as Last-Event-ID, after the server's `retry:` delay.
// Usage: node eventsource_client.mjs http://host:port/path collect <count>
//   collect: print every open, message and error until <count> messages.
//   refused <lastEventId>: start with that id; expect the stream to fail for
//     good (a non-200 answer), with no reconnect.

import { EventSource } from 'eventsource';

import { deferred, emit, runScenario } from './common.mjs';

const scenarios = {
  async collect(url, count) {
    const wanted = Number(count);
    const finished = deferred();
    let received = 0;
    const source = new EventSource(url);
    source.onopen = () => emit('open');
    source.onerror = (error) =>
      emit('error', { readyState: source.readyState, message: error?.message ?? null });
    source.onmessage = (message) => {
      emit('message', { id: message.lastEventId, data: JSON.parse(message.data) });
      received += 1;
      if (received === wanted) finished.resolve();
    };
    await finished.promise;
    source.close();
  },
  async refused(url, lastEventId) {
    const failed = deferred();
    // A page's EventSource sends Last-Event-ID only on a reconnect; this one
    // starts with it, as if resuming a stream from an earlier page load.
    const fetchWithId = (input, init) =>
      fetch(input, { ...init, headers: { ...init.headers, 'Last-Event-ID': lastEventId } });
    const source = new EventSource(url, { fetch: fetchWithId });
    source.onmessage = () => failed.reject(new Error('a refused stream delivered a message'));
    source.onerror = (error) => {
      if (source.readyState === EventSource.CLOSED) {
        emit('closed', { code: error?.code ?? null, message: error?.message ?? null });
        failed.resolve();
      }
    };
    await failed.promise;
  },
};

runScenario(scenarios);
