DROP TABLE tasks;
DROP FUNCTION tasks_touch_updated_at();
DROP TYPE task_status;
