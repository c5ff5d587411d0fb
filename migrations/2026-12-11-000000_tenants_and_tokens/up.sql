-- Tenants: who a task belongs to, and the limits each may be given.
--
-- tasks.tenant names one without a foreign key on purpose: a foreign key
-- locks the referenced row (FOR KEY SHARE) on every insert, so every create
-- of one tenant would write its tenants row. The API only ever writes a
-- tenant its token (or `taskrunner mcp --tenant`) names, and both are checked
-- against this table first.
CREATE TABLE tenants (
    name               TEXT        PRIMARY KEY
        CONSTRAINT tenants_name_format CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    -- Quotas; NULL is no limit.
    max_pending        INTEGER     CHECK (max_pending > 0),
    creates_per_minute INTEGER     CHECK (creates_per_minute > 0),
    -- The creates-per-minute limit as a generic cell rate: the instant the
    -- tenant's next create would be on schedule.
    creates_due_at     TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO tenants (name) VALUES ('default');

-- Every task belongs to a tenant; the tasks that exist already go to
-- `default` (a constant default: no table rewrite).
ALTER TABLE tasks
    ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default'
        CONSTRAINT tasks_tenant_format CHECK (tenant ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    ADD COLUMN idempotency_key TEXT
        CONSTRAINT tasks_idempotency_key_length CHECK (char_length(idempotency_key) BETWEEN 1 AND 200);

-- The same key within a tenant names one task; the unique index is what makes
-- two racing creates with one key end with one task.
CREATE UNIQUE INDEX tasks_idempotency_key_idx ON tasks (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- A tenant's list, in each ordering the list offers, for tokens that see one
-- tenant: (tenant, key, id), so a page is still one index range.
CREATE INDEX tasks_tenant_created_at_id_idx ON tasks (tenant, created_at, id);
CREATE INDEX tasks_tenant_updated_at_id_idx ON tasks (tenant, updated_at, id);
CREATE INDEX tasks_tenant_priority_id_idx ON tasks (tenant, priority, id);

-- Tombstones keep the columns of tasks, in the same order (the delete copies
-- rows with SELECT *): made again from the new shape. They only hold the last
-- few minutes' deletions.
DROP TABLE task_tombstones;
CREATE TABLE task_tombstones (LIKE tasks);
ALTER TABLE task_tombstones
    ADD COLUMN deleted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD PRIMARY KEY (id);
CREATE INDEX task_tombstones_deleted_at_idx ON task_tombstones (deleted_at);

-- API tokens. Only a SHA-256 hash of each secret is kept; `prefix` is the
-- start of the secret, enough for a person to tell tokens apart in a list.
CREATE TABLE api_tokens (
    id           BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant       TEXT        NOT NULL REFERENCES tenants (name),
    role         TEXT        NOT NULL CHECK (role IN ('admin', 'member', 'reader')),
    name         TEXT        CHECK (char_length(name) BETWEEN 1 AND 200),
    prefix       TEXT        NOT NULL,
    secret_hash  BYTEA       NOT NULL UNIQUE CHECK (octet_length(secret_hash) = 32),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);

-- Finished tasks are counted per tenant, so that a tenant's taskStats counts
-- its own. Every count so far is `default`'s (every task was).
ALTER TABLE task_status_counts ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE task_status_counts ALTER COLUMN tenant DROP DEFAULT;
ALTER TABLE task_status_counts DROP CONSTRAINT task_status_counts_pkey;
ALTER TABLE task_status_counts ADD PRIMARY KEY (tenant, status);
ALTER TABLE task_status_deltas ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE task_status_deltas ALTER COLUMN tenant DROP DEFAULT;

CREATE OR REPLACE FUNCTION task_status_deltas_append() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status IN ('succeeded', 'failed', 'cancelled') THEN
        INSERT INTO task_status_deltas (tenant, status, delta) VALUES (OLD.tenant, OLD.status, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.status IN ('succeeded', 'failed', 'cancelled') THEN
        INSERT INTO task_status_deltas (tenant, status, delta) VALUES (NEW.tenant, NEW.status, 1);
    END IF;
    RETURN NULL;
END;
$$;
