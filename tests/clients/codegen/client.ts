// A small typed client, as an application would write one: its documents are
// typed by GraphQL Code Generator's client preset from schema.graphql, tsc
// checks it in strict mode, and run.sh then runs it against the server:
//
//   node dist/client.js http://127.0.0.1:PORT
//
// A schema change that breaks such a client (a renamed field, a new
// non-null argument, a new task status) fails the type check.

import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print } from 'graphql';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

import { graphql } from './gql/index.js';
import type { TaskStatus } from './gql/graphql.js';

const CreateTask = graphql(`
  mutation CreateTask($input: CreateTaskInput!) {
    createTask(input: $input) {
      id
      status
      priority
      runAt
    }
  }
`);

const TaskById = graphql(`
  query TaskById($id: ID!) {
    task(id: $id) {
      id
      prompt
      status
      result
      attempts
      finishedAt
    }
  }
`);

const WatchTask = graphql(`
  subscription WatchTask($id: ID!) {
    taskUpdated(id: $id) {
      id
      status
      result
    }
  }
`);

/** What a person reading a dashboard would be shown for each status. */
function describe(status: TaskStatus): string {
  switch (status) {
    case 'PENDING':
      return 'waiting for a worker';
    case 'RUNNING':
      return 'running';
    case 'SUCCEEDED':
      return 'done';
    case 'FAILED':
      return 'failed';
    case 'CANCELLED':
      return 'cancelled';
    default: {
      const unknown: never = status;
      throw new Error(`a status this client does not know: ${String(unknown)}`);
    }
  }
}

/** One GraphQL request over HTTP POST, its data typed by the document. */
async function execute<Data, Variables>(
  url: string,
  document: TypedDocumentNode<Data, Variables>,
  variables: Variables,
): Promise<Data> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query: print(document), variables }),
  });
  const body = (await response.json()) as { data?: Data | null; errors?: unknown[] };
  if (!response.ok || body.errors !== undefined || body.data == null) {
    throw new Error(`${response.status}: ${JSON.stringify(body)}`);
  }
  return body.data;
}

/** Every update of one task, until the server completes the subscription. */
async function watch(wsUrl: string, id: string): Promise<TaskStatus[]> {
  const client = createClient({ url: wsUrl, webSocketImpl: WebSocket, retryAttempts: 0 });
  const seen: TaskStatus[] = [];
  try {
    const updates = client.iterate({ query: print(WatchTask), variables: { id } });
    for await (const update of updates) {
      if (update.errors !== undefined) {
        throw new Error(`subscription errors: ${JSON.stringify(update.errors)}`);
      }
      // graphql-ws types the payload loosely; the document says what it holds.
      const data = update.data as { taskUpdated: { status: TaskStatus } } | null | undefined;
      if (data != null) {
        seen.push(data.taskUpdated.status);
      }
    }
  } finally {
    await client.dispose();
  }
  return seen;
}

async function main(): Promise<void> {
  const base = process.argv[2];
  if (base === undefined) {
    throw new Error('usage: node dist/client.js http://HOST:PORT');
  }
  const url = `${base}/graphql`;
  const prompt = `typed client ${Date.now()}`;
  const runAt = new Date(Date.now() + 1500).toISOString();
  const { createTask } = await execute(url, CreateTask, {
    input: { prompt, model: 'echo', priority: 3, runAt },
  });
  console.log(`created task ${createTask.id}: ${describe(createTask.status)}`);

  const statuses = await watch(url.replace(/^http/, 'ws'), createTask.id);
  console.log(`updates: ${statuses.join(' → ')}`);
  if (statuses[0] !== 'PENDING' || statuses.at(-1) !== 'SUCCEEDED') {
    throw new Error(`expected PENDING first and SUCCEEDED last, saw ${statuses.join(', ')}`);
  }

  const { task } = await execute(url, TaskById, { id: createTask.id });
  if (task === null || task === undefined) {
    throw new Error(`task ${createTask.id} is gone`);
  }
  if (task.result !== prompt || task.finishedAt == null) {
    throw new Error(`the echo model answered ${JSON.stringify(task.result)}, not the prompt`);
  }
  console.log(`task ${task.id}: ${describe(task.status)} after ${task.attempts} attempt(s)`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
