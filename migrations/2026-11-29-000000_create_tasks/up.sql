-- The lifecycle of a task. Order matters only for readability: PENDING is where
-- every task starts; SUCCEEDED, FAILED and CANCELLED are final.
CREATE TYPE task_status AS ENUM ('pending', 'running', 'succeeded', 'failed', 'cancelled');

CREATE TABLE tasks (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prompt       TEXT        NOT NULL,
    model        TEXT        NOT NULL,
    priority     SMALLINT    NOT NULL DEFAULT 5,
    status       task_status NOT NULL DEFAULT 'pending',
    result       TEXT,
    error        TEXT,
    attempts     INTEGER     NOT NULL DEFAULT 0,
    max_attempts INTEGER     NOT NULL DEFAULT 3,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,

    CONSTRAINT tasks_prompt_not_empty CHECK (length(prompt) > 0),
    CONSTRAINT tasks_prompt_length CHECK (length(prompt) <= 100000),
    CONSTRAINT tasks_model_format CHECK (model ~ '^[A-Za-z0-9._:/-]{1,100}$'),
    CONSTRAINT tasks_priority_range CHECK (priority BETWEEN 1 AND 10),
    CONSTRAINT tasks_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 20),
    CONSTRAINT tasks_attempts_within_max CHECK (attempts >= 0 AND attempts <= max_attempts),
    CONSTRAINT tasks_finished_after_created CHECK (finished_at IS NULL OR finished_at >= created_at)
);

-- updated_at follows every change, whoever makes it (the API, a worker, an operator in psql).
CREATE FUNCTION tasks_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER tasks_touch_updated_at
    BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_touch_updated_at();

-- One index per ordering the `tasks` list offers. Keyset pagination walks
-- (sort key, id) in either direction, so each page is an index range scan.
CREATE INDEX tasks_created_at_id_idx ON tasks (created_at, id);
CREATE INDEX tasks_updated_at_id_idx ON tasks (updated_at, id);
CREATE INDEX tasks_priority_id_idx ON tasks (priority, id);

-- The queue's view: only pending tasks, in the order workers take them
-- (highest priority first, then oldest, then lowest id). Stays small however
-- many finished tasks accumulate.
CREATE INDEX tasks_pending_queue_idx ON tasks (priority DESC, created_at, id)
    WHERE status = 'pending';
