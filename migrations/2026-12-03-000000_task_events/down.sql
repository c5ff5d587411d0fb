DROP TABLE task_tombstones;
