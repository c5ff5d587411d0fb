//! The queue's housekeeping, run now and then by every worker process (each
//! statement is safe to run from many at once).

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::Double;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// Forgets the last state of tasks deleted more than `age` ago (kept for the
/// subscribers their DELETED events reach). Returns how many were forgotten.
pub async fn forget_tombstones(conn: &mut AsyncPgConnection, age: Duration) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM task_tombstones WHERE deleted_at < now() - make_interval(secs => $1)",
    )
    .bind::<Double, _>(age.as_secs_f64())
    .execute(conn)
    .await
}

/// Ends FAILED the PENDING tasks that have no attempt left: the claim never
/// takes them, and only a program writing the table directly can leave one
/// (the API refuses to lower `maxAttempts` to the attempts already made).
/// Returns the tasks ended.
pub async fn sweep_exhausted(conn: &mut AsyncPgConnection) -> QueryResult<Vec<i64>> {
    diesel::sql_query(
        "UPDATE tasks AS t
         SET status = 'failed',
             error = 'no attempts left (' || t.attempts || ' of ' || t.max_attempts
                     || ' used), so it cannot run again',
             finished_at = greatest(now(), t.created_at),
             updated_at = now()
         FROM (SELECT id FROM tasks
               WHERE status = 'pending' AND attempts >= max_attempts
               LIMIT 1000 FOR UPDATE SKIP LOCKED) AS spent
         WHERE t.id = spent.id
         RETURNING t.id",
    )
    .load::<super::IdRow>(conn)
    .await
    .map(|rows| rows.into_iter().map(|row| row.id).collect())
}

/// Folds the deltas the status triggers appended into the totals, in one
/// statement (so a reader of both sees each change once). Returns how many
/// deltas were folded.
pub async fn fold_status_counts(conn: &mut AsyncPgConnection) -> QueryResult<usize> {
    // Concurrent folds do not double count: a row one fold deleted is skipped
    // by the other once the first commits. Totals are locked in (tenant, status) order,
    // so two folds cannot deadlock.
    diesel::sql_query(
        "WITH folded AS (DELETE FROM task_status_deltas RETURNING tenant, status, delta),
              totals AS (
                  INSERT INTO task_status_counts AS c (tenant, status, n)
                  SELECT tenant, status, sum(delta) FROM folded
                  GROUP BY tenant, status ORDER BY tenant, status
                  ON CONFLICT (tenant, status) DO UPDATE SET n = c.n + excluded.n
              )
         SELECT 1 FROM folded",
    )
    .execute(conn)
    .await
}

/// Forgets workers whose lease lapsed more than `after` ago and that hold no
/// task: their rows only told when they were last seen.
pub async fn forget_dead_workers(
    conn: &mut AsyncPgConnection,
    after: Duration,
) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM workers AS w
         WHERE w.lease_expires_at < now() - make_interval(secs => $1)
           AND NOT EXISTS (SELECT 1 FROM tasks AS t
                           WHERE t.status = 'running' AND t.worker_id = w.id)",
    )
    .bind::<Double, _>(after.as_secs_f64())
    .execute(conn)
    .await
}
