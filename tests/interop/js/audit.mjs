// Runs the graphql-http conformance audits against a GraphQL-over-HTTP URL.
// Usage: node audit.mjs http://host:port/api
// Prints one JSON line per audit ({"event":"audit",id,name,status,reason}); the
// Python test judges the statuses. Exits non-zero only if the suite itself fails.

import { auditServer } from 'graphql-http';

import { emit, runScenario } from './common.mjs';

/** The start of the body the audit saw: enough to explain a failure. */
async function responseSummary(response) {
  if (!response) return null;
  let body = '';
  try {
    body = (await response.clone().text()).slice(0, 300);
  } catch {
    body = '<unreadable>';
  }
  return {
    status: response.status,
    contentType: response.headers.get('content-type'),
    body,
  };
}

runScenario({
  async audit(url) {
    const results = await auditServer({ url });
    for (const result of results) {
      emit('audit', {
        id: result.id,
        name: result.name,
        status: result.status,
        reason: result.reason ?? null,
        response: result.status === 'ok' ? null : await responseSummary(result.response),
      });
    }
  },
});
