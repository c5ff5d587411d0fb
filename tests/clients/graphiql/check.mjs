// GraphiQL as a person uses it, in headless Chromium: the page served by
// taskrunner loads its files from the CDN it was configured with (here
// static_cdn.mjs), each passing its integrity check; a query is run and its
// result shown; a subscription is run over the WebSocket the page computed
// and its updates shown up to SUCCEEDED.
//
//   node check.mjs http://127.0.0.1:SERVER_PORT http://127.0.0.1:CDN_PORT SCREENSHOT_DIR

import { createHash } from 'node:crypto';
import path from 'node:path';

import { chromium } from 'playwright-core';

const [base, cdn, screenshots] = process.argv.slice(2);
if (!base || !cdn || !screenshots) {
  throw new Error('usage: node check.mjs SERVER_URL CDN_URL SCREENSHOT_DIR');
}
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const DEADLINE_MS = 30_000;

function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

async function post(query, variables) {
  const response = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  check(!body.errors, `${query}: ${JSON.stringify(body.errors)}`);
  return body.data;
}

/** The page's scripts and stylesheets, each with its integrity hash. */
async function pageAssets() {
  const html = await (await fetch(`${base}/graphiql`)).text();
  const tags = html.match(/<(script|link)\b[^>]*>/g) ?? [];
  return tags
    .map((tag) => ({
      url: /\s(?:src|href)="([^"]+)"/.exec(tag)?.[1],
      integrity: /\sintegrity="([^"]+)"/.exec(tag)?.[1],
    }))
    .filter((asset) => asset.url && !asset.url.startsWith('data:'));
}

/** What the response pane shows, as its lines are drawn on screen. */
async function shownResponse(page) {
  return page.locator('.graphiql-response .CodeMirror-code').innerText();
}

/** Puts `query` in the editor and runs it, as its named operation. */
async function run(page, query, operationName) {
  await page.evaluate((text) => {
    document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(text);
  }, query);
  // GraphiQL parses the editor's text a moment after it changes, and only
  // then knows whether to run it over HTTP or the WebSocket. Its tab takes
  // the operation's name once it has.
  await page
    .getByRole('tab', { selected: true })
    .filter({ hasText: operationName })
    .waitFor({ timeout: DEADLINE_MS });
  await page.locator('.graphiql-execute-button').click();
}

// The files, fetched as the browser will, match the hashes the page pins:
// a wrong hash would otherwise show only as a blank page.
const assets = await pageAssets();
check(assets.length === 4, `the page loads four files: ${JSON.stringify(assets)}`);
for (const { url, integrity } of assets) {
  check(url.startsWith(`${cdn}/`), `${url} comes from the configured CDN ${cdn}`);
  const body = Buffer.from(await (await fetch(url)).arrayBuffer());
  const actual = `sha384-${createHash('sha384').update(body).digest('base64')}`;
  check(actual === integrity, `${url}: the page pins ${integrity}, the package's file is ${actual}`);
}
console.log(`ok: the page's ${assets.length} files come from ${cdn} and match their integrity hashes`);

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const problems = [];
  const requested = [];
  const sockets = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('requestfailed', (request) => problems.push(`failed: ${request.url()} ${request.failure()?.errorText}`));
  page.on('response', (response) => {
    requested.push(response.url());
    if (response.status() >= 400) {
      problems.push(`${response.status()}: ${response.url()}`);
    }
  });
  page.on('websocket', (socket) => sockets.push(socket.url()));
  // GraphiQL's own introspection query (its docs pane and completion) must
  // fit the server's depth and complexity limits.
  const introspection = page.waitForResponse(
    (response) => response.url() === `${base}/graphql` && /IntrospectionQuery/.test(response.request().postData() ?? ''),
    { timeout: DEADLINE_MS },
  );

  await page.goto(`${base}/graphiql`);
  await page.locator('.graphiql-container').waitFor({ timeout: DEADLINE_MS });
  for (const { url } of assets) {
    check(requested.includes(url), `the browser loaded ${url}`);
  }
  const schema = await (await introspection).json();
  check(!schema.errors && schema.data?.__schema?.queryType, `GraphiQL's introspection is answered: ${JSON.stringify(schema.errors)}`);
  check(schema.data.__schema.subscriptionType?.name === 'Subscription', 'the schema GraphiQL sees has subscriptions');
  console.log("ok: the page loads and GraphiQL's introspection query is answered");

  // A query, and its result on screen.
  const prompt = `GraphiQL in Chromium ${Date.now()}`;
  const create = 'mutation($input: CreateTaskInput!) { createTask(input: $input) { id } }';
  const queried = await post(create, { input: { prompt: `${prompt} (query)`, model: 'echo' } });
  await run(page, `query ShowTask { task(id: "${queried.createTask.id}") { id prompt } models { name } }`, 'ShowTask');
  await page.waitForFunction(
    (text) => document.querySelector('.graphiql-response .CodeMirror-code')?.innerText.includes(text),
    `${prompt} (query)`,
    { timeout: DEADLINE_MS },
  );
  const answer = await shownResponse(page);
  check(answer.includes('"echo"'), `the query's whole result is shown: ${answer}`);
  await page.screenshot({ path: path.join(screenshots, 'graphiql-query.png') });
  console.log('ok: a query run in GraphiQL shows its result');

  // A subscription to a task due in a moment: GraphiQL shows it waiting, then
  // each change as it comes, up to SUCCEEDED.
  const { createTask } = await post(create, {
    input: { prompt, model: 'echo', runAt: new Date(Date.now() + 3000).toISOString() },
  });
  await run(page, `subscription WatchTask { taskUpdated(id: "${createTask.id}") { id status result } }`, 'WatchTask');
  const shown = [];
  const started = Date.now();
  while (shown.at(-1) !== 'SUCCEEDED') {
    const text = await shownResponse(page);
    check(
      Date.now() - started < DEADLINE_MS,
      `GraphiQL showed [${shown}] but not SUCCEEDED; it shows ${text}; ${problems.join('; ')}`,
    );
    const status = /"status": "([A-Z]+)"/.exec(text)?.[1];
    if (status && status !== shown.at(-1)) {
      shown.push(status);
    }
    await page.waitForTimeout(50);
  }
  const subscribed = await shownResponse(page);
  check(subscribed.includes(prompt), `the final update shows the echo model's answer: ${subscribed}`);
  check(shown[0] === 'PENDING', `the first update showed the task waiting: ${shown}`);
  const expectedSocket = `${base.replace(/^http/, 'ws')}/graphql`;
  check(sockets.includes(expectedSocket), `the subscription used ${expectedSocket}, not ${sockets}`);
  await page.screenshot({ path: path.join(screenshots, 'graphiql-subscription.png') });
  console.log(`ok: a subscription run in GraphiQL shows ${shown.join(' → ')} over ${expectedSocket}`);

  check(problems.length === 0, `the page ran without errors: ${problems.join('; ')}`);
} finally {
  await browser.close();
}
