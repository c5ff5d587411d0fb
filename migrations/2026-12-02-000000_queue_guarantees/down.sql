ALTER TABLE tasks RESET (
    autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_insert_scale_factor,
    autovacuum_analyze_scale_factor,
    autovacuum_vacuum_cost_delay
);

DROP TRIGGER task_status_deltas_on_delete ON tasks;
DROP TRIGGER task_status_deltas_on_update ON tasks;
DROP TRIGGER task_status_deltas_on_insert ON tasks;
DROP FUNCTION task_status_deltas_append();

-- Fold what is not folded yet, then go back to sharded counters.
INSERT INTO task_status_counts AS c (status, n)
SELECT status, sum(delta) FROM task_status_deltas GROUP BY status
ON CONFLICT (status) DO UPDATE SET n = c.n + excluded.n;
DROP TABLE task_status_deltas;
ALTER TABLE task_status_counts DROP CONSTRAINT task_status_counts_pkey;
ALTER TABLE task_status_counts ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE task_status_counts ALTER COLUMN shard DROP DEFAULT;
ALTER TABLE task_status_counts ADD PRIMARY KEY (status, shard);

CREATE FUNCTION task_status_counts_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    my_shard SMALLINT := pg_backend_pid() % 16;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_status_counts AS c (status, shard, n)
        SELECT status, my_shard, count(*) FROM new_rows
        WHERE status IN ('succeeded', 'failed', 'cancelled')
        GROUP BY status ORDER BY status
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO task_status_counts AS c (status, shard, n)
        SELECT status, my_shard, -count(*) FROM old_rows
        WHERE status IN ('succeeded', 'failed', 'cancelled')
        GROUP BY status ORDER BY status
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
    ELSE
        INSERT INTO task_status_counts AS c (status, shard, n)
        SELECT status, my_shard, sum(delta) FROM (
            SELECT status, count(*) AS delta FROM new_rows
            WHERE status IN ('succeeded', 'failed', 'cancelled') GROUP BY status
            UNION ALL
            SELECT status, -count(*) FROM old_rows
            WHERE status IN ('succeeded', 'failed', 'cancelled') GROUP BY status
        ) AS changes
        GROUP BY status
        HAVING sum(delta) <> 0
        ORDER BY status
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER task_status_counts_on_insert
    AFTER INSERT ON tasks REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION task_status_counts_apply();
CREATE TRIGGER task_status_counts_on_update
    AFTER UPDATE ON tasks REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION task_status_counts_apply();
CREATE TRIGGER task_status_counts_on_delete
    AFTER DELETE ON tasks REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION task_status_counts_apply();

DROP TRIGGER tasks_touch_updated_at ON tasks;
CREATE TRIGGER tasks_touch_updated_at
    BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_touch_updated_at();

DROP INDEX tasks_pending_exhausted_idx;
DROP INDEX tasks_pending_due_idx;
CREATE INDEX tasks_pending_queue_idx ON tasks (priority DESC, created_at, id)
    WHERE status = 'pending';
DROP INDEX tasks_running_worker_idx;

ALTER TABLE tasks
    DROP CONSTRAINT tasks_running_has_worker,
    DROP CONSTRAINT tasks_lost_within_attempts,
    DROP COLUMN lost_attempts,
    ADD COLUMN lease_expires_at TIMESTAMPTZ;
-- Running tasks take their worker's lease back.
UPDATE tasks AS t
SET lease_expires_at = coalesce((SELECT w.lease_expires_at FROM workers AS w WHERE w.id = t.worker_id), now())
WHERE t.status = 'running';
ALTER TABLE tasks ADD CONSTRAINT tasks_running_is_leased CHECK (
    status <> 'running' OR (worker_id IS NOT NULL AND lease_expires_at IS NOT NULL));
CREATE INDEX tasks_running_lease_idx ON tasks (lease_expires_at) WHERE status = 'running';

DROP TABLE workers;
