DROP TABLE task_partial_results;
