-- What `createTask` sends (taskrunner::tasks::store::insert): one INSERT of
-- the input columns, the optional ones NULL, returning the whole row. The
-- table's triggers (due-task NOTIFY, per-status counts) fire as they do for
-- the server.
--   pgbench -n -c 32 -j 2 -T 10 -f benches/pgbench/insert.sql taskrunner_bench
\set priority random(1, 10)
INSERT INTO tasks (prompt, model, priority, max_attempts,
                   system_prompt, temperature, max_tokens, timeout_seconds)
VALUES ('Benchmark task ' || :client_id || ': translate ''good morning'' into French.',
        'echo', :priority, 3, NULL, NULL, NULL, NULL)
RETURNING *;
