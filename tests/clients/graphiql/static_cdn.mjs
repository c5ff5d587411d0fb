// A stand-in for the public CDN GraphiQL's page loads from: serves
// /{package}@{version}/{path} out of an npm install's node_modules, only when
// the installed version is the one asked for, with the CORS header the page's
// integrity checks need. Prints "listening HOST:PORT" once it accepts.
//
//   node static_cdn.mjs NODE_MODULES_DIR

import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

const root = path.resolve(process.argv[2] ?? 'node_modules');
const types = {
  '.js': 'application/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
};

/** `/{package}@{version}/{path}` split up; a scoped name starts with '@'. */
function parse(urlPath) {
  const match = /^\/((?:@[^/@]+\/)?[^/@]+)@([^/]+)\/(.+)$/.exec(decodeURIComponent(urlPath));
  return match && { name: match[1], version: match[2], file: match[3] };
}

async function answer(request, response) {
  const asked = parse(new URL(request.url, 'http://cdn').pathname);
  if (request.method !== 'GET' || !asked) {
    return [404, 'not /{package}@{version}/{path}'];
  }
  const packageDir = path.join(root, asked.name);
  const file = path.resolve(packageDir, asked.file);
  if (!file.startsWith(packageDir + path.sep)) {
    return [404, 'outside the package'];
  }
  let installed;
  try {
    installed = JSON.parse(await readFile(path.join(packageDir, 'package.json'), 'utf8')).version;
  } catch {
    return [404, `${asked.name} is not installed`];
  }
  if (installed !== asked.version) {
    return [404, `${asked.name}@${asked.version} asked for, ${installed} installed`];
  }
  try {
    const body = await readFile(file);
    response.setHeader('content-type', types[path.extname(file)] ?? 'application/octet-stream');
    return [200, body];
  } catch {
    return [404, `${asked.file} is not in ${asked.name}@${installed}`];
  }
}

const server = createServer((request, response) => {
  response.setHeader('access-control-allow-origin', '*');
  answer(request, response).then(([status, body]) => {
    if (status !== 200) {
      console.error(`static_cdn: ${request.url}: ${body}`);
      response.setHeader('content-type', 'text/plain; charset=utf-8');
    }
    response.writeHead(status).end(body);
  });
});
server.listen(0, '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`listening ${address}:${port}`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
