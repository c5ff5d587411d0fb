-- What `tasks(first: 20, after: CURSOR)` sends (taskrunner::tasks::store::list):
-- the keyset page of 20 rows plus one, to learn whether another page follows.
-- The cursor is a fixed deep position given with -D: `key_us` is its
-- created_at in microseconds since the epoch, `id` its id (benches/run.sh
-- takes the row 90% of the way down the newest-first order):
--   pgbench -n -c 32 -j 2 -T 10 -D key_us=... -D id=... \
--       -f benches/pgbench/select_keyset.sql taskrunner_bench
SELECT *
FROM tasks
WHERE (created_at, id) < (timestamptz 'epoch' + :key_us * interval '1 microsecond', :id)
ORDER BY created_at DESC, id DESC
LIMIT 21;
