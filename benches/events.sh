#!/usr/bin/env bash
# The event backbone's benchmark (BENCHMARKS.md records the figures):
#
# 1. memory per idle subscription: one `serve`, SUBSCRIBERS idle taskUpdated
#    subscriptions, its resident memory before and after;
# 2. delivery from commit to subscriber: two `serve --workers 0` processes on
#    one database, SUBSCRIBERS taskUpdated subscriptions over both, changes at
#    RATE/s; then SUBSCRIBERS taskEvents subscriptions, creates at FIREHOSE_RATE/s;
# 3. createTask (bench_api) and queue drain (bench_queue) with no subscriber
#    and beside SUBSCRIBERS idle ones, alternating, ROUNDS times each.
#
# Settings (environment): SERVER_URL (postgres://postgres@127.0.0.1:5432,
# the PostgreSQL server, no database name; databases taskrunner_bench_events and taskrunner_bench_queue are
# made afresh), PORT (8089, and PORT+1), SUBSCRIBERS (1000), RATE (200),
# FIREHOSE_RATE (10), SECONDS_PER_RUN (10), ROUNDS (2), CARGO_TARGET_DIR (target).
set -euo pipefail
cd "$(dirname "$0")/.."

server=${SERVER_URL:-postgres://postgres@127.0.0.1:5432}
events_db=$server/taskrunner_bench_events
queue_db=$server/taskrunner_bench_queue
port=${PORT:-8089}
subscribers=${SUBSCRIBERS:-1000}
rate=${RATE:-200}
firehose_rate=${FIREHOSE_RATE:-10}
seconds=${SECONDS_PER_RUN:-10}
rounds=${ROUNDS:-2}
target_dir=${CARGO_TARGET_DIR:-target}
log_dir=$target_dir/bench-logs
mkdir -p "$log_dir"

echo "== machine"
echo "cpus: $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo build --release --bin taskrunner --example bench_events --example bench_api --example bench_queue

pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap stop_all EXIT

fresh() {
    psql "$server/postgres" -qc "DROP DATABASE IF EXISTS ${1##*/} WITH (FORCE)"
    DATABASE_URL=$1 "$target_dir/release/taskrunner" migrate >/dev/null 2>&1
}

serve() { # port, log
    DATABASE_URL=$events_db RUST_LOG=warn TASKRUNNER_DB_POOL_SIZE=10 \
        "$target_dir/release/taskrunner" serve --bind "127.0.0.1:$1" --workers 0 >"$2" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return
        sleep 0.2
    done
    cat "$2"
    exit 1
}

echo
echo "== memory per idle subscription"
fresh "$events_db"
serve "$port" "$log_dir/events-a.log"
"$target_dir/release/examples/bench_events" memory --url "127.0.0.1:$port" \
    --database-url "$events_db" --subscribers "$subscribers" --server-pid "${pids[0]}"
stop_all

echo
echo "== delivery, $subscribers subscribers over 2 processes"
fresh "$events_db"
serve "$port" "$log_dir/events-a.log"
serve "$((port + 1))" "$log_dir/events-b.log"
"$target_dir/release/examples/bench_events" delivery \
    --url "127.0.0.1:$port" --url "127.0.0.1:$((port + 1))" --database-url "$events_db" \
    --subscribers "$subscribers" --rate "$rate" --firehose-rate "$firehose_rate" --seconds "$seconds"
stop_all

hold() { # database: two API processes on it, and the holder of idle subscriptions
    DATABASE_URL=$1 RUST_LOG=warn "$target_dir/release/taskrunner" serve \
        --bind "127.0.0.1:$((port + 1))" --workers 0 >"$log_dir/events-hold-a.log" 2>&1 &
    pids+=($!)
    DATABASE_URL=$1 RUST_LOG=warn "$target_dir/release/taskrunner" serve \
        --bind "127.0.0.1:$((port + 2))" --workers 0 >"$log_dir/events-hold-b.log" 2>&1 &
    pids+=($!)
    for p in $((port + 1)) $((port + 2)); do
        for _ in $(seq 100); do
            curl -fsS "http://127.0.0.1:$p/readyz" >/dev/null 2>&1 && break
            sleep 0.2
        done
    done
    "$target_dir/release/examples/bench_events" hold --url "127.0.0.1:$((port + 1))" \
        --url "127.0.0.1:$((port + 2))" --database-url "$1" --subscribers "$subscribers" \
        >"$log_dir/events-holder.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 300); do
        grep -q holding "$log_dir/events-holder.log" && return
        sleep 0.2
    done
    cat "$log_dir/events-holder.log"
    exit 1
}

for round in $(seq "$rounds"); do
    for with in none "$subscribers"; do
        echo
        echo "== round $round: createTask with subscribers: $with"
        fresh "$events_db"
        serve "$port" "$log_dir/events-api.log"
        [[ $with == none ]] || hold "$events_db"
        "$target_dir/release/examples/bench_api" --url "http://127.0.0.1:$port" \
            --database-url "$events_db" --concurrency 32 --seconds "$seconds" --warmup 2 \
            --rows 10000 --reseed --scenarios create | grep -E "createTask|scenario"
        stop_all

        echo
        echo "== round $round: queue drain with subscribers: $with"
        fresh "$queue_db"
        [[ $with == none ]] || hold "$queue_db"
        "$target_dir/release/examples/bench_queue" --database-url "$queue_db" drain
        stop_all
    done
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
