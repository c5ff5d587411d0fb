#!/usr/bin/env bash
# What metrics cost: createTask and the first list page served by this build
# (metrics on) and by BASELINE, a build of the same code without metrics,
# in alternating rounds on one database; then the time of a `/metrics` scrape
# on a table of SCRAPE_ROWS tasks. BENCHMARKS.md records the figures.
#
#   BASELINE=/path/to/taskrunner-without-metrics benches/metrics.sh
#
# Settings (environment): BASELINE (required), DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/taskrunner_bench), PORT (8089), ROUNDS
# (3; 0 for the scrape alone), CONCURRENCY (32), SECONDS_PER_RUN (10), WARMUP (2), ROWS (100000),
# SCRAPE_ROWS (1000000), SCRAPES (30: scrapes 1.1 s apart, each past the
# gauges' one-second cache), CARGO_TARGET_DIR (target), LOG_DIR
# ($CARGO_TARGET_DIR/bench-logs).
set -euo pipefail

cd "$(dirname "$0")/.."

baseline=${BASELINE:?set BASELINE to a taskrunner binary built without metrics}
database_url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/taskrunner_bench}
port=${PORT:-8089}
rounds=${ROUNDS:-3}
concurrency=${CONCURRENCY:-32}
seconds=${SECONDS_PER_RUN:-10}
warmup=${WARMUP:-2}
rows=${ROWS:-100000}
scrape_rows=${SCRAPE_ROWS:-1000000}
scrapes=${SCRAPES:-30}
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
current="$target_dir/release/taskrunner"

server_pid=
stop_server() {
    if [[ -n $server_pid ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap stop_server EXIT

# start_server BINARY LOG: serve the API alone on $port, return once ready.
start_server() {
    DATABASE_URL=$database_url RUST_LOG=${RUST_LOG:-warn} \
        "$1" serve --bind "127.0.0.1:$port" --workers 0 >"$2" 2>&1 &
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
    for build in baseline metrics; do
        binary=$current
        [[ $build == baseline ]] && binary=$baseline
        start_server "$binary" "$log_dir/metrics-$build-$round.log"
        out="$log_dir/metrics-bench-$build-$round.txt"
        "$target_dir/release/examples/bench_api" \
            --url "$url" --database-url "$database_url" \
            --concurrency "$concurrency" --seconds "$seconds" --warmup "$warmup" \
            --rows "$rows" --reseed --server-pid "$server_pid" \
            --scenarios first,create >"$out"
        stop_server
        first=$(rate_of "$out" "tasks(first: 20)")
        create=$(rate_of "$out" "createTask")
        results[$build,first]+="$first "
        results[$build,create]+="$create "
        echo "round $round, $build: first page $first req/s, createTask $create req/s"
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo
[[ $rounds -gt 0 ]] && echo "== medians of $rounds rounds (req/s)"
for scenario in first create; do
    [[ $rounds -gt 0 ]] || break
    base=$(median <<<"${results[baseline,$scenario]}")
    with=$(median <<<"${results[metrics,$scenario]}")
    awk -v s="$scenario" -v b="$base" -v m="$with" \
        'BEGIN { printf "%-8s baseline %8.0f   metrics %8.0f   change %+.1f%%\n", s, b, m, (m - b) / b * 100 }'
done

echo
echo "== /metrics scrape on $scrape_rows tasks"
start_server "$current" "$log_dir/metrics-scrape.log"
"$target_dir/release/examples/bench_api" \
    --url "$url" --database-url "$database_url" --concurrency 1 --seconds 1 --warmup 0 \
    --rows "$scrape_rows" --reseed --scenarios first >/dev/null
times=$(for _ in $(seq "$scrapes"); do
    sleep 1.1
    curl -fsS -o /dev/null -w '%{time_total}\n' "$url/metrics"
done)
bytes=$(curl -fsS "$url/metrics" | wc -c)
psql "$database_url" -Atc "SELECT 'tasks by status: ' || string_agg(status || ' ' || n, ', ') FROM (SELECT status, count(*) AS n FROM tasks GROUP BY status) s"
sort -n <<<"$times" | awk -v n="$scrapes" -v bytes="$bytes" '
    { v[NR] = $1 * 1000 }
    END { printf "%d scrapes, 1.1 s apart (each one reads the gauges afresh): p50 %.1f ms, max %.1f ms; %d bytes\n",
          n, v[int((n + 1) / 2)], v[n], bytes }'
stop_server

echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
