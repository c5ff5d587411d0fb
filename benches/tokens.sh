#!/usr/bin/env bash
# What tokens cost: createTask and the first list page with tokens off and
# with tokens on (every request carrying a member's token of the tenant that
# owns the seeded tasks, so the list is the same rows, read through the
# tenant's index), in alternating rounds on one database and one build.
# BENCHMARKS.md records the figures.
#
#   benches/tokens.sh
#
# Settings (environment): DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/taskrunner_bench), PORT (8089), ROUNDS
# (3), CONCURRENCY (32), SECONDS_PER_RUN (10), WARMUP (2), ROWS (100000),
# CARGO_TARGET_DIR (target), LOG_DIR ($CARGO_TARGET_DIR/bench-logs).
set -euo pipefail

cd "$(dirname "$0")/.."

database_url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/taskrunner_bench}
port=${PORT:-8089}
rounds=${ROUNDS:-3}
concurrency=${CONCURRENCY:-32}
seconds=${SECONDS_PER_RUN:-10}
warmup=${WARMUP:-2}
rows=${ROWS:-100000}
target_dir=${CARGO_TARGET_DIR:-target}
log_dir=${LOG_DIR:-$target_dir/bench-logs}
url="http://127.0.0.1:$port"

echo "== machine"
echo "cpus: $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

echo "== build"
cargo build --release --bin taskrunner --example bench_api
mkdir -p "$log_dir"
binary="$target_dir/release/taskrunner"

DATABASE_URL=$database_url "$binary" migrate >/dev/null
token=$(DATABASE_URL=$database_url "$binary" token create --tenant default --role member \
    --name bench-tokens 2>/dev/null | tail -n 1)
[[ $token == trk_* ]] || { echo "no token was made: $token" >&2; exit 1; }

server_pid=
stop_server() {
    if [[ -n $server_pid ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap stop_server EXIT

# start_server AUTH LOG: serve the API alone on $port, return once ready.
start_server() {
    DATABASE_URL=$database_url RUST_LOG=${RUST_LOG:-warn} \
        "$binary" serve --bind "127.0.0.1:$port" --workers 0 --auth "$1" >"$2" 2>&1 &
    server_pid=$!
    for _ in $(seq 150); do
        curl -fsS "$url/readyz" >/dev/null 2>&1 && return 0
        kill -0 "$server_pid" 2>/dev/null || { cat "$2"; exit 1; }
        sleep 0.2
    done
    echo "the server did not become ready" >&2
    cat "$2"
    exit 1
}

# The requests per second bench_api printed for a scenario.
rate_of() {
    awk -v label="$2" 'index($0, label) == 1 { print $(NF - 4); exit }' "$1"
}

declare -A results
for round in $(seq "$rounds"); do
    for auth in off tokens; do
        start_server "$auth" "$log_dir/tokens-$auth-$round.log"
        out="$log_dir/tokens-bench-$auth-$round.txt"
        bench_token=
        [[ $auth == tokens ]] && bench_token=$token
        BENCH_TOKEN=$bench_token "$target_dir/release/examples/bench_api" \
            --url "$url" --database-url "$database_url" \
            --concurrency "$concurrency" --seconds "$seconds" --warmup "$warmup" \
            --rows "$rows" --reseed --server-pid "$server_pid" \
            --scenarios first,create >"$out"
        stop_server
        first=$(rate_of "$out" "tasks(first: 20)")
        create=$(rate_of "$out" "createTask")
        results[$auth,first]+="$first "
        results[$auth,create]+="$create "
        echo "round $round, auth $auth: first page $first req/s, createTask $create req/s"
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo
echo "== medians of $rounds rounds (req/s)"
for scenario in first create; do
    off=$(median <<<"${results[off,$scenario]}")
    on=$(median <<<"${results[tokens,$scenario]}")
    awk -v s="$scenario" -v b="$off" -v m="$on" \
        'BEGIN { printf "%-8s tokens off %8.0f   tokens on %8.0f   change %+.1f%%\n", s, b, m, (m - b) / b * 100 }'
done
