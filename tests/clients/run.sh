#!/usr/bin/env bash
# The GraphQL and MCP ecosystems' own clients against a real taskrunner:
#   a. the official MCP Python SDK, over stdio (`taskrunner mcp`) and streamable HTTP (/mcp);
#   b. the graphql-ws client, subscribing to a task until it SUCCEEDED;
#   c. GraphQL Code Generator's TypeScript from schema.graphql, a strict tsc, and the typed client run;
#   d. GraphiQL in headless Chromium, its files from a local CDN, running a query and a subscription.
# Every client is pinned (package-lock.json, requirements.txt) and installed
# into a cache reused between runs. A missing tool fails the run: nothing is
# skipped. One fresh database, one `serve --workers 0` and one `worker`, all
# stopped and dropped at the end, however the run ends.
#
#   tests/clients/run.sh          (after `cargo build`; .ci/run calls it after `cargo test`)
#
# TASKRUNNER_CI_CACHE: where installs are kept (default ~/.cache/taskrunner-ci).
# DATABASE_URL: the PostgreSQL server to use (its database name is replaced).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${TASKRUNNER_CI_CACHE:-$HOME/.cache/taskrunner-ci}
chromium=/usr/bin/chromium
started=$SECONDS

say() { printf '[clients %3ds] %s\n' "$((SECONDS - started))" "$*"; }
fail() { printf 'clients: %s\n' "$*" >&2; exit 1; }

# ---- tools ---------------------------------------------------------------
need() { command -v "$1" >/dev/null 2>&1 || fail "$1 is missing: $2"; }
need node "install Node.js 20 or later"
need npm "install npm (it comes with Node.js)"
need python3 "install Python 3.10 or later, with venv"
need psql "install the PostgreSQL client (postgresql-client)"
need cargo "install Rust"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
  fail "Node.js $(node --version) is too old: graphql-ws needs 20 or later"
python3 -c 'import sys, venv; sys.exit(sys.version_info < (3, 10))' ||
  fail "Python $(python3 --version) is too old, or has no venv: the MCP SDK needs 3.10 or later"
if [ ! -x "$chromium" ]; then
  say "installing Debian's chromium"
  [ "$(id -u)" = 0 ] || fail "$chromium is missing and only root can install it: apt-get install chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  [ -x "$chromium" ] || fail "apt-get did not install $chromium"
fi
say "$("$chromium" --version 2>/dev/null), Node.js $(node --version), $(python3 --version)"

# ---- installs, reused while their pins are unchanged -------------------------
fingerprint() { cat "$@" | sha256sum | cut -d' ' -f1; }
mkdir -p "$cache"
node_dir=$cache/node
node_stamp=$(node --version; fingerprint "$here/package-lock.json")
if [ "$(cat "$node_dir/.installed" 2>/dev/null)" != "$node_stamp" ]; then
  say "npm ci (package-lock.json changed or first run)"
  rm -rf "$node_dir" && mkdir -p "$node_dir"
  cp "$here/package.json" "$here/package-lock.json" "$node_dir/"
  (cd "$node_dir" && npm ci --cache "$cache/npm" --prefer-offline --no-audit --no-fund --loglevel=error)
  printf '%s' "$node_stamp" >"$node_dir/.installed"
fi
venv=$cache/venv
# shellcheck source=../../.ci/pinned-venv.sh
. "$here/../../.ci/pinned-venv.sh"
pinned_venv "$venv" "$here/requirements.txt"

# ---- the binary, a database, a scratch directory -----------------------------
say "cargo build"
(cd "$repo" && cargo build --quiet --locked --bin taskrunner)
binary=${CARGO_TARGET_DIR:-$repo/target}/debug/taskrunner
[ -x "$binary" ] || fail "no binary at $binary"

# The server of DATABASE_URL (else the local default), without its database.
server_url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/taskrunner}
server_url=${server_url%%\?*}
case "$server_url" in */*/*/*) server_url=${server_url%/*} ;; esac
database=taskrunner_clients_$$_$RANDOM
database_url=$server_url/$database

work=$(mktemp -d "${TMPDIR:-/tmp}/taskrunner-clients.XXXXXX")
pids=()
cleanup() {
  status=$?
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  psql "$server_url/postgres" -qX -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null ||
    echo "clients: could not drop database $database" >&2
  if [ "$status" != 0 ]; then
    for log in "$work"/*.log; do
      [ -f "$log" ] && { echo "--- last lines of $(basename "$log")"; tail -n 30 "$log"; }
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp -R "$here/." "$work/"
cp "$repo/schema.graphql" "$work/codegen/"
ln -s "$node_dir/node_modules" "$work/node_modules"
screenshots=$cache/screenshots
mkdir -p "$screenshots"

psql "$server_url/postgres" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $database" >/dev/null ||
  fail "could not create a database on $server_url (is PostgreSQL up?)"

# The processes run in the scratch directory with only the settings given
# here: neither a .env, a taskrunner.toml nor the caller's variables apply.
cd "$work"
run_env=(env -u RUST_LOG)
for name in $(env | sed -n 's/^\(TASKRUNNER_[A-Z0-9_]*\|OPENAI_[A-Z0-9_]*\)=.*/\1/p'); do
  run_env+=(-u "$name")
done
run_env+=(DATABASE_URL="$database_url" RUST_LOG=info)

# Waits until FILE has a line matching PATTERN, or fails naming WHAT.
wait_for_line() {
  local file=$1 pattern=$2 what=$3 deadline=$((SECONDS + 60))
  until grep -q "$pattern" "$file" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$what did not start within 60 s"
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || fail "$what exited early"; done
    sleep 0.1
  done
}

say "migrate, then start the CDN stand-in, serve --workers 0 and a worker"
"${run_env[@]}" "$binary" migrate --log-format json >"$work/migrate.log" 2>&1 || fail "taskrunner migrate failed: $(tail -n 5 "$work/migrate.log")"
node "$work/graphiql/static_cdn.mjs" "$node_dir/node_modules" >"$work/cdn.log" 2>&1 &
pids+=($!)
wait_for_line "$work/cdn.log" '^listening ' "the CDN stand-in"
cdn=http://$(sed -n 's/^listening //p' "$work/cdn.log")
"${run_env[@]}" "$binary" serve --log-format json --bind 127.0.0.1:0 --workers 0 --graphiql-cdn "$cdn" >"$work/serve.log" 2>&1 &
pids+=($!)
wait_for_line "$work/serve.log" '"address":"' "taskrunner serve"
base=http://$(grep -o '"address":"[^"]*"' "$work/serve.log" | head -n 1 | cut -d'"' -f4)
"${run_env[@]}" "$binary" worker --log-format json --workers 8 --metrics-bind 127.0.0.1:0 >"$work/worker.log" 2>&1 &
pids+=($!)
wait_for_line "$work/worker.log" 'worker starting' "taskrunner worker"
say "serving at $base; GraphiQL's files from $cdn"

# ---- the checks: each runs, each is counted --------------------------------
passed=0
failed=()
check() {
  local name=$1
  shift
  say "check: $name"
  if timeout 180 "$@"; then
    passed=$((passed + 1))
  else
    failed+=("$name")
    say "FAILED: $name"
  fi
}
check "MCP Python SDK (stdio, streamable HTTP)" \
  "$venv/bin/python" mcp_check.py --binary "$binary" --database-url "$database_url" --url "$base/mcp"
check "graphql-ws subscription" node graphql_ws.mjs "$base"
check "GraphQL Code Generator, tsc --strict, the typed client" bash codegen/check.sh "$base"
check "GraphiQL in Chromium" node graphiql/check.mjs "$base" "$cdn" "$screenshots"

say "screenshots in $screenshots"
echo "clients: ${passed} passed, ${#failed[@]} failed"
[ "${#failed[@]}" = 0 ] || fail "failed: ${failed[*]}"
