DROP TRIGGER task_status_counts_on_delete ON tasks;
DROP TRIGGER task_status_counts_on_update ON tasks;
DROP TRIGGER task_status_counts_on_insert ON tasks;
DROP FUNCTION task_status_counts_apply();
DROP TABLE task_status_counts;

DROP TRIGGER tasks_notify_cancel ON tasks;
DROP FUNCTION tasks_notify_cancel();
DROP TRIGGER tasks_notify_due_on_update ON tasks;
DROP FUNCTION tasks_notify_due();

DROP INDEX tasks_running_lease_idx;
DROP INDEX tasks_pending_run_at_idx;

ALTER TABLE tasks
    DROP CONSTRAINT tasks_running_is_leased,
    DROP CONSTRAINT tasks_timeout_range,
    DROP CONSTRAINT tasks_max_tokens_range,
    DROP CONSTRAINT tasks_temperature_range,
    DROP CONSTRAINT tasks_system_prompt_length,
    DROP COLUMN cancel_requested,
    DROP COLUMN lease_expires_at,
    DROP COLUMN worker_id,
    DROP COLUMN completion_tokens,
    DROP COLUMN prompt_tokens,
    DROP COLUMN timeout_seconds,
    DROP COLUMN max_tokens,
    DROP COLUMN temperature,
    DROP COLUMN system_prompt,
    DROP COLUMN run_at;
