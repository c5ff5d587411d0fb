// The graphql-ws client (graphql-transport-ws protocol) against taskrunner's
// subscriptions on /graphql: a new echo task is watched from PENDING to
// SUCCEEDED, after which the server completes the subscription; subscriptions
// the server cannot run are refused with coded errors.
//
//   node graphql_ws.mjs http://127.0.0.1:PORT

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const DEADLINE_MS = 30_000;

const base = process.argv[2];
if (!base) {
  throw new Error('usage: node graphql_ws.mjs http://HOST:PORT');
}

async function post(query, variables) {
  const response = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) {
    throw new Error(`${query}: ${JSON.stringify(body.errors)}`);
  }
  return body.data;
}

/** Runs one subscription to its end: every payload, then how it ended. */
function run(client, request) {
  return new Promise((resolve) => {
    const payloads = [];
    const timer = setTimeout(() => {
      dispose();
      resolve({ payloads, ended: 'timeout' });
    }, DEADLINE_MS);
    const dispose = client.subscribe(request, {
      next: (payload) => payloads.push(payload),
      error: (error) => {
        clearTimeout(timer);
        resolve({ payloads, ended: 'error', error });
      },
      complete: () => {
        clearTimeout(timer);
        resolve({ payloads, ended: 'complete' });
      },
    });
  });
}

/** A graphql-ws error sink's argument, readable: GraphQL errors, a close, or an Error. */
function describe(error) {
  if (Array.isArray(error)) {
    return JSON.stringify(error);
  }
  if (error && typeof error.code === 'number') {
    return `the socket closed with ${error.code} ${error.reason ?? ''}`;
  }
  return error?.message ?? String(error);
}

function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

const client = createClient({
  url: `${base.replace(/^http/, 'ws')}/graphql`,
  webSocketImpl: WebSocket,
  // Accepted and ignored by the server, as a client with a token would send it.
  connectionParams: { authorization: 'Bearer not-checked' },
  retryAttempts: 0,
});

try {
  // Due in a moment, so that the subscription starts while it waits.
  const prompt = `graphql-ws says hello ${Date.now()}`;
  const runAt = new Date(Date.now() + 1500).toISOString();
  const { createTask } = await post(
    'mutation($input: CreateTaskInput!) { createTask(input: $input) { id status } }',
    { input: { prompt, model: 'echo', runAt } },
  );
  const watched = await run(client, {
    query: 'subscription($id: ID!) { taskUpdated(id: $id) { id status result attempts } }',
    variables: { id: createTask.id },
  });
  const tasks = watched.payloads.map((payload) => {
    check(!payload.errors, `errors in an update: ${JSON.stringify(payload.errors)}`);
    return payload.data.taskUpdated;
  });
  const statuses = tasks.map((task) => task.status);
  check(watched.ended === 'complete', `the subscription ended by ${watched.ended}: ${watched.error ? describe(watched.error) : statuses}`);
  check(statuses[0] === 'PENDING', `the first update is the task as it was: ${statuses}`);
  check(statuses.at(-1) === 'SUCCEEDED', `the last update is SUCCEEDED: ${statuses}`);
  check(tasks.every((task) => task.id === createTask.id), 'every update is of the watched task');
  check(tasks.at(-1).result === prompt, `the echo model's answer is the prompt: ${tasks.at(-1).result}`);
  console.log(`ok: taskUpdated ${statuses.join(' → ')}, then complete`);

  for (const [what, code, request] of [
    ['an unknown field', 'GRAPHQL_VALIDATION_FAILED', { query: 'subscription { taskUpdated(id: "1") { nope } }' }],
    ['a malformed id', 'BAD_USER_INPUT', { query: 'subscription { taskUpdated(id: "not-an-id") { id } }' }],
    ['an id no task has', 'NOT_FOUND', { query: 'subscription { taskUpdated(id: "9223372036854775807") { id } }' }],
  ]) {
    const refused = await run(client, request);
    const errors = refused.ended === 'error' ? refused.error : refused.payloads.flatMap((p) => p.errors ?? []);
    check(Array.isArray(errors) && errors.length > 0, `${what} is refused with GraphQL errors, not ${refused.ended}: ${describe(refused.error ?? refused.payloads)}`);
    for (const error of errors) {
      check(error.extensions?.code === code, `${what}: the error's code is ${code}: ${JSON.stringify(error)}`);
    }
    console.log(`ok: ${what} is refused (${errors.map((e) => e.extensions.code).join(', ')})`);
  }
} finally {
  await client.dispose();
}
