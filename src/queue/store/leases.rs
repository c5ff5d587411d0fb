//! Leases: one row per worker process in `workers`, renewed by its heartbeat.
//! A RUNNING task is leased by its worker's row, so keeping leases never
//! rewrites a task. When a worker's lease lapses (it died, hung, or lost the
//! database), the rescuer hands its tasks back to the queue.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Double, Integer, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::db::schema::tasks;
use crate::queue::outcome::{AttemptId, Backoff};
use crate::queue::store::IdRow;
use crate::tasks::{Task, TaskStatus};

/// What a heartbeat learned about one of the tasks the database says the
/// worker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct LeaseState {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// The attempt the worker holds.
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    #[diesel(sql_type = Bool)]
    pub cancel_requested: bool,
}

impl LeaseState {
    /// The attempt this row is.
    pub fn attempt_id(&self) -> AttemptId {
        AttemptId {
            task_id: self.id,
            attempt: self.attempt,
        }
    }
}

/// Renews the worker's lease for `lease` (creating its row on first use) and
/// returns the tasks the database says it is running, with their attempt and
/// whether their cancellation was asked for. A task missing from the answer
/// is no longer this worker's.
pub async fn heartbeat(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    lease: Duration,
) -> QueryResult<Vec<LeaseState>> {
    // A data-modifying CTE runs whether or not the query reads it.
    diesel::sql_query(
        "WITH renewed AS (
             INSERT INTO workers (id, lease_expires_at)
             VALUES ($1, now() + make_interval(secs => $2))
             ON CONFLICT (id) DO UPDATE
             SET heartbeat_at = now(), lease_expires_at = excluded.lease_expires_at
         )
         SELECT id, attempts AS attempt, cancel_requested FROM tasks
         WHERE status = 'running' AND worker_id = $1",
    )
    .bind::<Text, _>(worker_id)
    .bind::<Double, _>(lease.as_secs_f64())
    .load(conn)
    .await
}

/// The task of an attempt the database says this worker holds, to adopt it
/// (its claim committed, but the answer never reached the worker).
pub async fn adopt(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    attempt: AttemptId,
) -> QueryResult<Option<Task>> {
    tasks::table
        .find(attempt.task_id)
        .filter(tasks::status.eq(TaskStatus::Running))
        .filter(tasks::worker_id.eq(worker_id))
        .filter(tasks::attempts.eq(attempt.attempt))
        .select(Task::as_select())
        .first(conn)
        .await
        .optional()
}

/// Removes the worker's row when it holds no task (a clean stop).
pub async fn unregister(conn: &mut AsyncPgConnection, worker_id: &str) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM workers
         WHERE id = $1
           AND NOT EXISTS (SELECT 1 FROM tasks WHERE status = 'running' AND worker_id = $1)",
    )
    .bind::<Text, _>(worker_id)
    .execute(conn)
    .await
}

/// A task the rescuer handed back (or ended), its status now, and its model
/// (the lost attempt is counted by model).
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct RescuedTask {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = crate::db::schema::sql_types::TaskStatus)]
    pub status: TaskStatus,
    #[diesel(sql_type = Text)]
    pub model: String,
}

/// The rescue of a lost attempt: the attempt counts and so does the loss; the
/// task backs off like any retry (a task that crashes its workers must not be
/// re-run at once, forever), or ends FAILED when its attempts are spent
/// (CANCELLED when its cancellation was asked for).
const RESCUE: &str = "UPDATE tasks AS t
     SET lost_attempts = t.lost_attempts + 1,
         status = CASE
             WHEN t.cancel_requested THEN 'cancelled'
             WHEN t.attempts >= t.max_attempts THEN 'failed'
             ELSE 'pending'
         END::task_status,
         error = CASE
             WHEN t.cancel_requested THEN 'cancelled while running'
             ELSE 'its worker was lost ' || (t.lost_attempts + 1)
                  || CASE WHEN t.lost_attempts = 0 THEN ' time' ELSE ' times' END
                  || ' (it crashed, was killed, or was cut off from the database; last: '
                  || coalesce(t.worker_id, 'unknown') || ')'
                  || CASE WHEN t.attempts >= t.max_attempts
                          THEN '; all ' || t.max_attempts || ' attempts used' ELSE '' END
         END,
         run_at = CASE
             WHEN t.cancel_requested OR t.attempts >= t.max_attempts THEN t.run_at
             ELSE now() + make_interval(secs =>
                 least($2, $1 * power(2, least(greatest(t.attempts, 1), 21) - 1))
                 * (0.5 + random() / 2))
         END,
         finished_at = CASE
             WHEN t.cancel_requested OR t.attempts >= t.max_attempts
                 THEN greatest(now(), t.created_at)
         END,
         worker_id = NULL,
         updated_at = now()
     FROM lost
     WHERE t.id = lost.id
     RETURNING t.id, t.status, t.model";

/// Running tasks whose worker's lease has lapsed (or whose worker is unknown).
const LOST: &str = "t.status = 'running'
       AND NOT EXISTS (SELECT 1 FROM workers AS w
                       WHERE w.id = t.worker_id AND w.lease_expires_at > now())";

/// Rescues up to `limit` running tasks whose worker was lost, skipping the ids
/// in `skip` (rows found unrescuable). Retries back off as `backoff` says.
pub async fn rescue_lost(
    conn: &mut AsyncPgConnection,
    limit: i64,
    skip: &[i64],
    backoff: &Backoff,
) -> QueryResult<Vec<RescuedTask>> {
    diesel::sql_query(format!(
        "WITH lost AS (
             SELECT t.id FROM tasks AS t
             WHERE {LOST} AND t.id <> ALL($4)
             LIMIT $3
             FOR UPDATE OF t SKIP LOCKED
         )
         {RESCUE}"
    ))
    .bind::<Double, _>(backoff.base.as_secs_f64())
    .bind::<Double, _>(backoff.max.as_secs_f64())
    .bind::<BigInt, _>(limit)
    .bind::<Array<BigInt>, _>(skip)
    .load(conn)
    .await
}

/// The ids [`rescue_lost`] would rescue, without rescuing them.
pub async fn lost_tasks(
    conn: &mut AsyncPgConnection,
    limit: i64,
    skip: &[i64],
) -> QueryResult<Vec<i64>> {
    let ids: Vec<IdRow> = diesel::sql_query(format!(
        "SELECT t.id FROM tasks AS t WHERE {LOST} AND t.id <> ALL($2) LIMIT $1"
    ))
    .bind::<BigInt, _>(limit)
    .bind::<Array<BigInt>, _>(skip)
    .load(conn)
    .await?;
    Ok(ids.into_iter().map(|row| row.id).collect())
}

/// Rescues these ids, if their worker is still lost.
pub async fn rescue_ids(
    conn: &mut AsyncPgConnection,
    ids: &[i64],
    backoff: &Backoff,
) -> QueryResult<Vec<RescuedTask>> {
    diesel::sql_query(format!(
        "WITH lost AS (
             SELECT t.id FROM tasks AS t
             WHERE t.id = ANY($3) AND {LOST}
             FOR UPDATE OF t SKIP LOCKED
         )
         {RESCUE}"
    ))
    .bind::<Double, _>(backoff.base.as_secs_f64())
    .bind::<Double, _>(backoff.max.as_secs_f64())
    .bind::<Array<BigInt>, _>(ids)
    .load(conn)
    .await
}

/// Gives back attempts this worker will not finish (it is shutting down):
/// their tasks are PENDING again at once, and the interrupted attempt does not
/// count (CANCELLED instead when their cancellation was asked for). Returns
/// the tasks given back.
pub async fn release(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    attempts: &[AttemptId],
) -> QueryResult<Vec<i64>> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = attempts.iter().map(|a| a.task_id).collect();
    let numbers: Vec<i32> = attempts.iter().map(|a| a.attempt).collect();
    diesel::sql_query(
        "UPDATE tasks AS t
         SET status = CASE WHEN t.cancel_requested THEN 'cancelled' ELSE 'pending' END::task_status,
             error = CASE WHEN t.cancel_requested THEN 'cancelled while running' ELSE t.error END,
             finished_at = CASE WHEN t.cancel_requested THEN greatest(now(), t.created_at) END,
             attempts = greatest(t.attempts - 1, t.lost_attempts),
             run_at = now(),
             worker_id = NULL,
             updated_at = now()
         FROM unnest($2, $3) AS r(id, attempt)
         WHERE t.id = r.id AND t.attempts = r.attempt
           AND t.status = 'running' AND t.worker_id = $1
         RETURNING t.id",
    )
    .bind::<Text, _>(worker_id)
    .bind::<Array<BigInt>, _>(ids)
    .bind::<Array<Integer>, _>(numbers)
    .load::<super::IdRow>(conn)
    .await
    .map(|rows| rows.into_iter().map(|row| row.id).collect())
}
