#!/usr/bin/env bash
# Generates TypeScript from schema.graphql and client.ts's documents, type-checks
# the client in strict mode, then runs it against the server at $1.
# run.sh calls it from a scratch copy of tests/clients, with node_modules beside.
set -euo pipefail
cd "$(dirname "$0")"
../node_modules/.bin/graphql-codegen --config codegen.yml
../node_modules/.bin/tsc -p tsconfig.json
echo "ok: the generated types check under tsc --strict"
node dist/client.js "$1"
