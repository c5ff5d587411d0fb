-- The text so far of each running attempt, saved by its worker about once a
-- second, for Task.partialResult and for API processes that missed part of an
-- answer's stream. Kept apart from tasks: rewriting a task's row every second
-- would move its updated_at, run its triggers and bloat the table. Keyed by
-- task: only a task's current attempt matters, and a newer attempt replaces an
-- older one's text. A row whose task is no longer running that attempt is
-- ignored, and removed by the worker once the outcome is stored.
CREATE TABLE task_partial_results (
    task_id BIGINT  PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL CHECK (attempt > 0),
    text    TEXT    NOT NULL
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 100);
