-- The queue's guarantees: leases per worker, a claim that only touches due
-- rows, poison tasks that end, and bookkeeping that leaves tasks alone.

-- A worker process and its lease. A heartbeat renews this one row, not every
-- task the worker runs: a running task is leased by its worker's row, so lease
-- keeping never rewrites a task (nor its updated_at, nor fires its triggers).
CREATE TABLE workers (
    id               TEXT        PRIMARY KEY,
    started_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_expires_at TIMESTAMPTZ NOT NULL
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 100);

-- Workers running tasks now keep them: their lease is what their tasks had.
INSERT INTO workers (id, lease_expires_at)
SELECT worker_id, max(lease_expires_at) FROM tasks
WHERE status = 'running' AND worker_id IS NOT NULL
GROUP BY worker_id;

DROP INDEX tasks_running_lease_idx;
ALTER TABLE tasks
    DROP CONSTRAINT tasks_running_is_leased,
    DROP COLUMN lease_expires_at,
    -- How many attempts ended because their worker was lost (killed, crashed,
    -- cut off): a task that keeps losing its worker is poison and must end.
    ADD COLUMN lost_attempts INTEGER NOT NULL DEFAULT 0,
    ADD CONSTRAINT tasks_lost_within_attempts CHECK (lost_attempts BETWEEN 0 AND attempts),
    ADD CONSTRAINT tasks_running_has_worker CHECK (status <> 'running' OR worker_id IS NOT NULL);

-- A worker's running tasks (heartbeats, rescues, shutdown): small however
-- many tasks have finished.
CREATE INDEX tasks_running_worker_idx ON tasks (worker_id) WHERE status = 'running';

-- The claim walks each priority from the highest, due tasks first. Keyed by
-- (priority, run_at), a task delayed into the future or backing off sits past
-- the end of every range the claim reads: waiting tasks cost it nothing.
DROP INDEX tasks_pending_queue_idx;
CREATE INDEX tasks_pending_due_idx ON tasks (priority, run_at, id) WHERE status = 'pending';

-- Pending tasks with no attempts left (only a program writing the table
-- directly can leave one): the sweeper ends them FAILED. Normally empty.
CREATE INDEX tasks_pending_exhausted_idx ON tasks (id)
    WHERE status = 'pending' AND attempts >= max_attempts;

-- updated_at follows every change that does not set it itself. The queue's
-- statements set it in the same statement, so the function never runs for
-- them; an operator's UPDATE in psql still moves it.
DROP TRIGGER tasks_touch_updated_at ON tasks;
CREATE TRIGGER tasks_touch_updated_at
    BEFORE UPDATE ON tasks
    FOR EACH ROW WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at)
    EXECUTE FUNCTION tasks_touch_updated_at();

-- Counts of finished tasks. Statement-level triggers with transition tables
-- ran (and captured every changed row) on every claim and every lease
-- renewal. Now row triggers whose WHEN clause only passes changes into or out
-- of a final status append a delta; a claim or a new task never calls them.
-- Deltas are folded into the totals now and then (workers' maintenance), and
-- taskStats adds what is not folded yet.
DROP TRIGGER task_status_counts_on_delete ON tasks;
DROP TRIGGER task_status_counts_on_update ON tasks;
DROP TRIGGER task_status_counts_on_insert ON tasks;
DROP FUNCTION task_status_counts_apply();

WITH shards AS (DELETE FROM task_status_counts RETURNING status, n)
INSERT INTO task_status_counts (status, shard, n)
SELECT status, 0, sum(n) FROM shards GROUP BY status;
ALTER TABLE task_status_counts DROP CONSTRAINT task_status_counts_pkey;
ALTER TABLE task_status_counts DROP COLUMN shard;
ALTER TABLE task_status_counts ADD PRIMARY KEY (status);

CREATE TABLE task_status_deltas (
    status task_status NOT NULL,
    delta  INTEGER     NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000);

CREATE FUNCTION task_status_deltas_append() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status IN ('succeeded', 'failed', 'cancelled') THEN
        INSERT INTO task_status_deltas (status, delta) VALUES (OLD.status, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.status IN ('succeeded', 'failed', 'cancelled') THEN
        INSERT INTO task_status_deltas (status, delta) VALUES (NEW.status, 1);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER task_status_deltas_on_insert
    AFTER INSERT ON tasks
    FOR EACH ROW WHEN (NEW.status IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION task_status_deltas_append();
CREATE TRIGGER task_status_deltas_on_update
    AFTER UPDATE OF status ON tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       AND (OLD.status IN ('succeeded', 'failed', 'cancelled')
                            OR NEW.status IN ('succeeded', 'failed', 'cancelled')))
    EXECUTE FUNCTION task_status_deltas_append();
CREATE TRIGGER task_status_deltas_on_delete
    AFTER DELETE ON tasks
    FOR EACH ROW WHEN (OLD.status IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION task_status_deltas_append();

-- A queue table churns: every task is inserted, updated two or three times,
-- and often deleted. Vacuum it after 2% of it changed, not the default 20%,
-- so dead versions do not pile up in the pending index the claim walks.
ALTER TABLE tasks SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);
