// The bench workload on the graphql-ws reference server (graphql-ws + ws + graphql).
//
// Same schema, payload and publish semantics as scripts/bench/workload.py:
// each subscriber gets its own async iterator; the publisher pushes one shared
// event object into every iterator, and graphql-ws executes per subscriber.
//
// Run: node server.mjs --port N [--cert PEM --key PEM]  (with both: https, so wss://)
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { parseArgs } from 'node:util';
import { buildSchema, graphql } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer } from 'ws';

const SDL = `
type Query { ok: Boolean! }
type Event { id: Int! ts: Float! payload: String! }
type Subscription { events(topic: String!): Event! }
type Mutation { publish(count: Int!, rate: Float, topic: String): Int! }
`;
const PAYLOAD = ('meshsub-bench-' + '0123456789abcdef'.repeat(4)).slice(0, 46);

const topics = new Map(); // topic -> Set<Sink>
let nextId = 0;

/** One subscriber's queue, as the async iterator graphql-js consumes. */
class Sink {
  constructor(topic) {
    this.topic = topic;
    this.queue = [];
    this.head = 0;
    this.waiter = null;
    this.done = false;
  }

  push(value) {
    if (this.done) return;
    if (this.waiter !== null) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter({ value, done: false });
    } else {
      this.queue.push(value);
    }
  }

  next() {
    if (this.head < this.queue.length) {
      const value = this.queue[this.head++];
      if (this.head === this.queue.length) {
        this.queue = [];
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  return() {
    this.done = true;
    const sinks = topics.get(this.topic);
    if (sinks !== undefined) {
      sinks.delete(this);
      if (sinks.size === 0) topics.delete(this.topic);
    }
    if (this.waiter !== null) {
      this.waiter({ value: undefined, done: true });
      this.waiter = null;
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  throw(error) {
    this.return();
    return Promise.reject(error);
  }

  [Symbol.asyncIterator]() {
    return this;
  }
}

const wallClock = () => (performance.timeOrigin + performance.now()) / 1000;
const tick = () => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function publish(first, count, rate, topic) {
  const start = performance.now();
  for (let index = 0; index < count; index++) {
    const wait = rate ? start + (index * 1000) / rate - performance.now() : 0;
    await (wait > 0 ? sleep(wait) : tick());
    const event = { id: first + index, ts: wallClock(), payload: PAYLOAD };
    const groups = topic === null ? [...topics.values()] : [topics.get(topic)];
    for (const sinks of groups) {
      if (sinks === undefined) continue;
      for (const sink of [...sinks]) sink.push(event);
    }
  }
}

const schema = buildSchema(SDL);
schema.getQueryType().getFields().ok.resolve = () => true;
schema.getMutationType().getFields().publish.resolve = (_root, { count, rate, topic }) => {
  const first = nextId;
  nextId += count;
  publish(first, count, rate ?? null, topic ?? null).catch((error) => console.error(error));
  return first;
};
const events = schema.getSubscriptionType().getFields().events;
events.subscribe = (_root, { topic }) => {
  const sink = new Sink(topic);
  if (!topics.has(topic)) topics.set(topic, new Set());
  topics.get(topic).add(sink);
  // workload.py HELLO_PREFIX: a greeting event (id -1) as soon as it is set up.
  if (topic.startsWith('hello:')) sink.push({ id: -1, ts: 0, payload: PAYLOAD });
  return sink;
};
events.resolve = (event) => event;

const { values } = parseArgs({
  options: { port: { type: 'string' }, cert: { type: 'string' }, key: { type: 'string' } },
});
const port = Number(values.port);
const tls = values.cert !== undefined && values.key !== undefined;

const handler = async (request, response) => {
  if (request.method !== 'POST') {
    response.writeHead(405).end();
    return;
  }
  let body = '';
  for await (const chunk of request) body += chunk;
  const { query, variables } = JSON.parse(body);
  const result = await graphql({ schema, source: query, variableValues: variables });
  response.writeHead(200, { 'content-type': 'application/json' });
  response.end(JSON.stringify(result));
};
// The same handler and WebSocket server either way; TLS is only the listener.
const server = tls
  ? createTlsServer({ cert: readFileSync(values.cert), key: readFileSync(values.key) }, handler)
  : createServer(handler);
const wss = new WebSocketServer({ server, path: '/graphql' });
// keepAlive 0: no server pings during the runs, like every other server here.
useServer({ schema }, wss, 0);
server.listen(port, '127.0.0.1', 4096, () => {
  console.log(`graphql-ws serving on ${tls ? 'https' : 'http'}://127.0.0.1:${port}`);
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
