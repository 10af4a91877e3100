// Shared plumbing for the interop scripts: JSON-line events on stdout, a stdin
// handshake with the Python test, a watchdog, and one failure path.
//
// Protocol with tests/interop/conftest.py: every observation is one line
// {"event": <name>, ...}; a script that cannot finish its scenario prints
// {"event": "failure", ...} and exits 1, so a broken server can never look
// like a pass.

import { createInterface } from 'node:readline';

/** Print one observed event as a JSON line. */
export function emit(event, fields = {}) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

/** Turn whatever a client rejects with (error arrays, CloseEvents, Errors) into JSON. */
export function describe(error) {
  if (Array.isArray(error)) return { errors: error };
  if (error && typeof error === 'object' && 'code' in error && 'reason' in error) {
    return { code: error.code, reason: error.reason };
  }
  if (error instanceof Error) return { message: error.message };
  if (error && typeof error === 'object') return { ...error, message: error.message };
  return { message: String(error) };
}

let stdinLines;

/** Resolve with the next line the Python test writes to our stdin. */
export function readLine() {
  stdinLines ??= createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  return stdinLines.next().then(({ value, done }) => {
    if (done) throw new Error('stdin closed before the test answered');
    return value.trim();
  });
}

/** Wait until the test says "continue" (after it has checked the server's side). */
export async function waitForTest(step) {
  emit(step);
  const answer = await readLine();
  if (answer !== 'continue') throw new Error(`unexpected answer from the test: ${answer}`);
}

/**
 * Run `scenarios[argv[3]](url, ...more argv)` with a watchdog, so a silent
 * server cannot hang CI; exit 0 only if the scenario resolved.
 */
export function runScenario(scenarios, { watchdogMs = 15000 } = {}) {
  const [url, name, ...rest] = process.argv.slice(2);
  const scenario = scenarios[name];
  if (!url || !scenario) {
    emit('failure', { message: `usage: <url> <${Object.keys(scenarios).join('|')}>` });
    process.exit(2);
  }
  const watchdog = setTimeout(() => {
    emit('failure', { message: `scenario ${name} did not finish within ${watchdogMs} ms` });
    process.exit(3);
  }, watchdogMs);
  for (const kind of ['uncaughtException', 'unhandledRejection']) {
    process.on(kind, (error) => {
      emit('failure', { message: `${kind}: ${error?.stack ?? error}` });
      process.exit(1);
    });
  }
  scenario(url, ...rest).then(
    () => {
      clearTimeout(watchdog);
      emit('done');
      process.exit(0);
    },
    (error) => {
      emit('failure', describe(error));
      process.exit(1);
    },
  );
}

/** A promise with its resolve/reject exposed (Node 20 has no Promise.withResolvers). */
export function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((ok, fail) => {
    resolve = ok;
    reject = fail;
  });
  return { promise, resolve, reject };
}
