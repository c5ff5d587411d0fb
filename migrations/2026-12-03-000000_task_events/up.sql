-- The last state of deleted tasks, for a short while: a DELETED event names
-- only the task's id, and subscribers in every process read the task's last
-- state from here. Same columns as tasks (a migration that changes one
-- changes both), no constraints: it only keeps what was. Workers' upkeep
-- forgets rows after a few minutes.
CREATE TABLE task_tombstones (LIKE tasks);
ALTER TABLE task_tombstones
    ADD COLUMN deleted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD PRIMARY KEY (id);
CREATE INDEX task_tombstones_deleted_at_idx ON task_tombstones (deleted_at);
