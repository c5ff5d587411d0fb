DROP SEQUENCE task_claim_turn;
DROP INDEX tasks_pending_due_idx;
CREATE INDEX tasks_pending_due_idx ON tasks (priority, run_at, id) WHERE status = 'pending';
