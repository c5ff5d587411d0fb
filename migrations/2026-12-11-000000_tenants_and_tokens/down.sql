DROP TABLE api_tokens;
DROP TABLE task_tombstones;
DROP INDEX tasks_tenant_priority_id_idx;
DROP INDEX tasks_tenant_updated_at_id_idx;
DROP INDEX tasks_tenant_created_at_id_idx;
DROP INDEX tasks_idempotency_key_idx;
ALTER TABLE tasks DROP COLUMN idempotency_key, DROP COLUMN tenant;
CREATE TABLE task_tombstones (LIKE tasks);
ALTER TABLE task_tombstones
    ADD COLUMN deleted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD PRIMARY KEY (id);
CREATE INDEX task_tombstones_deleted_at_idx ON task_tombstones (deleted_at);
DROP TABLE tenants;
CREATE OR REPLACE FUNCTION task_status_deltas_append() RETURNS trigger
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
ALTER TABLE task_status_deltas DROP COLUMN tenant;
WITH merged AS (DELETE FROM task_status_counts RETURNING status, n)
INSERT INTO task_status_counts (tenant, status, n)
SELECT 'default', status, sum(n) FROM merged GROUP BY status;
ALTER TABLE task_status_counts DROP CONSTRAINT task_status_counts_pkey;
ALTER TABLE task_status_counts DROP COLUMN tenant;
ALTER TABLE task_status_counts ADD PRIMARY KEY (status);
