-- The queue: what a worker needs to claim, lease, run, retry and cancel a task.

ALTER TABLE tasks
    -- Not before this instant (a delayed task, or a retry's backoff).
    ADD COLUMN run_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Model parameters, stored with the task.
    ADD COLUMN system_prompt     TEXT,
    ADD COLUMN temperature       DOUBLE PRECISION,
    ADD COLUMN max_tokens        INTEGER,
    -- Per-task limit on one attempt; NULL means the deployment's default.
    ADD COLUMN timeout_seconds   INTEGER,
    -- Token usage of the successful attempt, as the provider counted it.
    ADD COLUMN prompt_tokens     INTEGER,
    ADD COLUMN completion_tokens INTEGER,
    -- Who holds a RUNNING task, and until when without a heartbeat.
    ADD COLUMN worker_id         TEXT,
    ADD COLUMN lease_expires_at  TIMESTAMPTZ,
    -- cancelTask on a RUNNING task sets this; the worker holding it stops.
    ADD COLUMN cancel_requested  BOOLEAN NOT NULL DEFAULT false,

    ADD CONSTRAINT tasks_system_prompt_length CHECK (system_prompt IS NULL OR length(system_prompt) <= 100000),
    ADD CONSTRAINT tasks_temperature_range CHECK (temperature IS NULL OR temperature BETWEEN 0 AND 2),
    ADD CONSTRAINT tasks_max_tokens_range CHECK (max_tokens IS NULL OR max_tokens BETWEEN 1 AND 1000000),
    ADD CONSTRAINT tasks_timeout_range CHECK (timeout_seconds IS NULL OR timeout_seconds BETWEEN 1 AND 86400),
    ADD CONSTRAINT tasks_running_is_leased CHECK (
        status <> 'running' OR (worker_id IS NOT NULL AND lease_expires_at IS NOT NULL));

-- The claim query's order: highest priority, then oldest, then lowest id,
-- among pending tasks (due ones are filtered while walking it).
-- (tasks_pending_queue_idx from the first migration already is exactly this.)

-- When the next delayed task falls due, and how long the oldest has waited.
CREATE INDEX tasks_pending_run_at_idx ON tasks (run_at) WHERE status = 'pending';
-- The rescuer's view: running tasks by lease expiry.
CREATE INDEX tasks_running_lease_idx ON tasks (lease_expires_at) WHERE status = 'running';

-- Wake idle workers when a task becomes due again (a retry, a rescue).
-- New tasks are announced by the API after their INSERT commits, not by a
-- trigger: a transaction that NOTIFYs takes a database-wide lock through its
-- commit, which would serialise every createTask behind the others' fsyncs.
CREATE FUNCTION tasks_notify_due() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('taskrunner_task_due', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_notify_due_on_update
    AFTER UPDATE OF status, run_at ON tasks
    FOR EACH ROW WHEN (NEW.status = 'pending' AND NEW.run_at <= now())
    EXECUTE FUNCTION tasks_notify_due();

-- Tell the worker holding a task that its cancellation was asked for.
CREATE FUNCTION tasks_notify_cancel() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('taskrunner_task_cancel', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_notify_cancel
    AFTER UPDATE OF cancel_requested ON tasks
    FOR EACH ROW WHEN (NEW.cancel_requested AND NOT OLD.cancel_requested AND NEW.status = 'running')
    EXECUTE FUNCTION tasks_notify_cancel();

-- Counts of finished tasks by status, kept by statement-level triggers so that
-- taskStats costs a read of a few dozen rows however many millions of tasks
-- have finished. Only SUCCEEDED, FAILED and CANCELLED are counted here: a
-- createTask (always PENDING) touches no counter, and outcomes arrive in
-- batches. PENDING and RUNNING are counted on their partial indexes instead.
-- Each backend writes its own shard, so concurrent writers rarely meet.
CREATE TABLE task_status_counts (
    status task_status NOT NULL,
    shard  SMALLINT    NOT NULL,
    n      BIGINT      NOT NULL,
    PRIMARY KEY (status, shard)
);

INSERT INTO task_status_counts (status, shard, n)
SELECT status, 0, count(*) FROM tasks
WHERE status IN ('succeeded', 'failed', 'cancelled')
GROUP BY status;

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
