#!/usr/bin/env bash
# The API benchmark beside the machine's ceiling (BENCHMARKS.md records the figures).
#
# Builds the release binary and the bench_api example, then for each pool size
# starts `taskrunner serve --workers 0` (the API alone: created tasks are not
# run meanwhile) on a dedicated database, drives it with bench_api (which seeds
# the table afresh to $ROWS rows) and stops it; then runs pgbench with the
# equivalent INSERT and keyset SELECT at the same concurrency.
#
#   benches/run.sh                          # pool size 10, 32 connections, 10 s
#   POOL_SIZES="10 16 32" benches/run.sh    # compare pool sizes
#   SCENARIOS=create,batch PGBENCH_MODES= benches/run.sh
#                                           # tasks/s one at a time and 1,000 a request
#   SCENARIOS=interference ROWS=200000 PGBENCH_MODES= benches/run.sh
#                                           # only the expensive request's effect
#                                           # on other clients, on 200,000 rows
#
# Settings (environment): DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/taskrunner_bench; created if missing),
# PORT (8089), POOL_SIZES (10), CONCURRENCY (32), SECONDS_PER_RUN (10),
# WARMUP (2), ROWS (100000), WORKERS (0: the server's task slots),
# PGBENCH_THREADS (2), PGBENCH_MODES (simple; add `prepared` for the extended
# protocol the server uses; empty for no pgbench), SCENARIOS (bench_api's,
# first,deep,create,batch,interference), RATE (200: the interference scenario's
# reads per second), ATTACKERS (1: its clients sending the expensive request),
# RUST_LOG (the server's, info), CARGO_TARGET_DIR (target), LOG_DIR
# ($CARGO_TARGET_DIR/bench-logs).
set -euo pipefail

cd "$(dirname "$0")/.."

database_url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/taskrunner_bench}
port=${PORT:-8089}
pool_sizes=${POOL_SIZES:-10}
concurrency=${CONCURRENCY:-32}
seconds=${SECONDS_PER_RUN:-10}
warmup=${WARMUP:-2}
rows=${ROWS:-100000}
workers=${WORKERS:-0}
pgbench_threads=${PGBENCH_THREADS:-2}
pgbench_modes=${PGBENCH_MODES-simple}
scenarios=${SCENARIOS:-first,deep,create,batch,interference}
rate=${RATE:-200}
attackers=${ATTACKERS:-1}
target_dir=${CARGO_TARGET_DIR:-target}
log_dir=${LOG_DIR:-$target_dir/bench-logs}

echo "== machine"
echo "cpus: $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "postgres: $(psql "$database_url" -Atc 'SHOW server_version' 2>/dev/null || echo '(database not created yet)')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

echo "== build"
cargo build --release --bin taskrunner --example bench_api
mkdir -p "$log_dir"

server_pid=
stop_server() {
    if [[ -n $server_pid ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap stop_server EXIT

for pool in $pool_sizes; do
    echo
    echo "== taskrunner serve --workers $workers, TASKRUNNER_DB_POOL_SIZE=$pool"
    log="$log_dir/server-pool-$pool.log"
    DATABASE_URL=$database_url TASKRUNNER_DB_POOL_SIZE=$pool RUST_LOG=${RUST_LOG:-info} \
        "$target_dir/release/taskrunner" serve --bind "127.0.0.1:$port" --workers "$workers" \
        >"$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$log"; exit 1; }
        sleep 0.2
    done
    "$target_dir/release/examples/bench_api" \
        --url "http://127.0.0.1:$port" --database-url "$database_url" \
        --concurrency "$concurrency" --seconds "$seconds" --warmup "$warmup" \
        --rows "$rows" --reseed --server-pid "$server_pid" \
        --scenarios "$scenarios" --rate "$rate" --attackers "$attackers"
    stop_server
    echo "(server log: $log)"
done

if [[ -z $pgbench_modes ]]; then
    echo
    echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    exit 0
fi

# The deep position bench_api pages from: 90% of the way down, newest first.
read -r key_us id < <(psql "$database_url" -AtF ' ' -c "
    SELECT (extract(epoch FROM created_at) * 1000000)::bigint, id FROM tasks
    ORDER BY created_at DESC, id DESC
    OFFSET (SELECT count(*) * 9 / 10 FROM tasks) LIMIT 1")

for mode in $pgbench_modes; do
    echo
    echo "== pgbench SELECT (keyset page from key_us=$key_us id=$id), -M $mode"
    pgbench -n -M "$mode" -c "$concurrency" -j "$pgbench_threads" -T "$seconds" \
        -D "key_us=$key_us" -D "id=$id" -f benches/pgbench/select_keyset.sql "$database_url"
    echo
    echo "== pgbench INSERT, -M $mode"
    pgbench -n -M "$mode" -c "$concurrency" -j "$pgbench_threads" -T "$seconds" \
        -f benches/pgbench/insert.sql "$database_url"
    # The same INSERT with the table's triggers off (session_replication_role
    # needs a superuser): what the machine can do for a plain single-row insert.
    echo
    echo "== pgbench INSERT, triggers off, -M $mode"
    PGOPTIONS="-c session_replication_role=replica" \
        pgbench -n -M "$mode" -c "$concurrency" -j "$pgbench_threads" -T "$seconds" \
        -f benches/pgbench/insert.sql "$database_url" \
        || echo "(skipped: session_replication_role needs a superuser)"
done

echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
