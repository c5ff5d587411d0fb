//! The queue's statements on the `tasks` table. Each is one short statement in
//! its own transaction: nothing is held open while a model is thinking.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Double, Integer, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::queue::outcome::{Outcome, Verdict};
use crate::tasks::Task;

/// Takes up to `limit` due, pending tasks for `worker_id`, highest priority
/// first, then oldest, then lowest id; marks them RUNNING with a lease of
/// `lease` and counts the attempt. Rows other workers are claiming are
/// skipped, never waited for.
pub async fn claim_batch(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    limit: i64,
    lease: Duration,
) -> QueryResult<Vec<Task>> {
    ClaimStatement {
        limit,
        worker_id,
        lease_seconds: lease.as_secs_f64(),
    }
    .load(conn)
    .await
}

/// Records the outcomes of finished attempts in one statement.
///
/// Fenced: an outcome is written only while the task is still RUNNING under
/// this worker for that very attempt. A worker that lost its lease (and whose
/// task another worker may have taken since) writes nothing. Returns the ids
/// that were written.
pub async fn record_outcomes(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    outcomes: &[Outcome],
) -> QueryResult<Vec<i64>> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    #[derive(QueryableByName)]
    struct Written {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let written: Vec<Written> = RecordStatement::new(worker_id, outcomes).load(conn).await?;
    Ok(written.into_iter().map(|row| row.id).collect())
}

/// What a heartbeat learned about one of the worker's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct LeaseState {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub cancel_requested: bool,
}

/// Extends the leases of the worker's running tasks. Tasks missing from the
/// answer are no longer this worker's (their lease expired and was rescued).
pub async fn heartbeat(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    task_ids: &[i64],
    lease: Duration,
) -> QueryResult<Vec<LeaseState>> {
    if task_ids.is_empty() {
        return Ok(Vec::new());
    }
    diesel::sql_query(
        "UPDATE tasks
         SET lease_expires_at = now() + make_interval(secs => $3)
         WHERE id = ANY($2) AND status = 'running' AND worker_id = $1
         RETURNING id, cancel_requested",
    )
    .bind::<Text, _>(worker_id)
    .bind::<Array<BigInt>, _>(task_ids)
    .bind::<Double, _>(lease.as_secs_f64())
    .load(conn)
    .await
}

/// Returns the tasks whose lease expired (their worker died or stalled) to
/// PENDING, or ends them FAILED when their attempts are spent (CANCELLED when
/// cancellation was asked for). Returns how many were rescued.
pub async fn rescue_expired(conn: &mut AsyncPgConnection, limit: i64) -> QueryResult<usize> {
    diesel::sql_query(
        "WITH expired AS (
             SELECT id FROM tasks
             WHERE status = 'running' AND lease_expires_at < now()
             ORDER BY lease_expires_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         )
         UPDATE tasks AS t
         SET status = CASE
                 WHEN t.cancel_requested THEN 'cancelled'
                 WHEN t.attempts >= t.max_attempts THEN 'failed'
                 ELSE 'pending'
             END::task_status,
             error = CASE
                 WHEN t.cancel_requested THEN 'cancelled while running'
                 ELSE 'worker ' || t.worker_id || ' stopped renewing its lease (crashed or stalled)'
                      || CASE WHEN t.attempts >= t.max_attempts
                              THEN ' (all ' || t.max_attempts || ' attempts used)' ELSE '' END
             END,
             finished_at = CASE
                 WHEN t.cancel_requested OR t.attempts >= t.max_attempts THEN now()
             END,
             run_at = now(),
             worker_id = NULL,
             lease_expires_at = NULL
         FROM expired
         WHERE t.id = expired.id",
    )
    .bind::<BigInt, _>(limit)
    .execute(conn)
    .await
}

/// Gives back tasks this worker will not finish (it is shutting down): they
/// are PENDING again at once, and the interrupted attempt does not count.
pub async fn release(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    task_ids: &[i64],
) -> QueryResult<usize> {
    if task_ids.is_empty() {
        return Ok(0);
    }
    diesel::sql_query(
        "UPDATE tasks
         SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'pending' END::task_status,
             error = CASE WHEN cancel_requested THEN 'cancelled while running' ELSE error END,
             finished_at = CASE WHEN cancel_requested THEN now() END,
             attempts = greatest(attempts - 1, 0),
             run_at = now(),
             worker_id = NULL,
             lease_expires_at = NULL
         WHERE id = ANY($2) AND status = 'running' AND worker_id = $1",
    )
    .bind::<Text, _>(worker_id)
    .bind::<Array<BigInt>, _>(task_ids)
    .execute(conn)
    .await
}

/// When the next pending task falls due (now or in the past if one is due).
pub async fn next_due_at(conn: &mut AsyncPgConnection) -> QueryResult<Option<DateTime<Utc>>> {
    use crate::db::schema::tasks;
    use crate::tasks::TaskStatus;
    tasks::table
        .filter(tasks::status.eq(TaskStatus::Pending))
        .select(diesel::dsl::min(tasks::run_at))
        .get_result(conn)
        .await
}

// The two statements on the hot path are written as query nodes with fixed
// SQL, so that diesel prepares each once per connection and reuses it
// (`sql_query` is never cached: one more round trip per claim and per batch).

/// The statement of [`claim_batch`].
struct ClaimStatement<'a> {
    limit: i64,
    worker_id: &'a str,
    lease_seconds: f64,
}

impl QueryId for ClaimStatement<'_> {
    type QueryId = ClaimStatement<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for ClaimStatement<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for ClaimStatement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "WITH next AS (
                 SELECT id FROM tasks
                 WHERE status = 'pending' AND run_at <= now()
                 ORDER BY priority DESC, created_at, id
                 LIMIT ",
        );
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        out.push_sql(
            " FOR UPDATE SKIP LOCKED
             )
             UPDATE tasks AS t
             SET status = 'running',
                 attempts = t.attempts + 1,
                 worker_id = ",
        );
        out.push_bind_param::<Text, _>(self.worker_id)?;
        out.push_sql(", lease_expires_at = now() + make_interval(secs => ");
        out.push_bind_param::<Double, _>(&self.lease_seconds)?;
        out.push_sql(
            "),
                 started_at = now(),
                 finished_at = NULL
             FROM next
             WHERE t.id = next.id
             RETURNING t.*",
        );
        Ok(())
    }
}

/// The statement of [`record_outcomes`]: one row of `unnest` per outcome.
struct RecordStatement<'a> {
    worker_id: &'a str,
    ids: Vec<i64>,
    attempts: Vec<i32>,
    verdicts: Vec<&'static str>,
    results: Vec<Option<String>>,
    errors: Vec<Option<String>>,
    prompt_tokens: Vec<Option<i32>>,
    completion_tokens: Vec<Option<i32>>,
    delays: Vec<f64>,
}

impl<'a> RecordStatement<'a> {
    /// The statement for `outcomes`, as parallel arrays.
    fn new(worker_id: &'a str, outcomes: &[Outcome]) -> Self {
        let mut statement = RecordStatement {
            worker_id,
            ids: Vec::with_capacity(outcomes.len()),
            attempts: Vec::with_capacity(outcomes.len()),
            verdicts: Vec::with_capacity(outcomes.len()),
            results: Vec::with_capacity(outcomes.len()),
            errors: Vec::with_capacity(outcomes.len()),
            prompt_tokens: Vec::with_capacity(outcomes.len()),
            completion_tokens: Vec::with_capacity(outcomes.len()),
            delays: Vec::with_capacity(outcomes.len()),
        };
        for outcome in outcomes {
            let (verdict, result, error, usage, delay) = match &outcome.verdict {
                Verdict::Succeeded(completion) => (
                    "succeeded",
                    Some(completion.text.clone()),
                    None,
                    (completion.prompt_tokens, completion.completion_tokens),
                    Duration::ZERO,
                ),
                Verdict::Retry { error, delay } => {
                    ("retry", None, Some(error.clone()), (None, None), *delay)
                }
                Verdict::Failed { error } => (
                    "failed",
                    None,
                    Some(error.clone()),
                    (None, None),
                    Duration::ZERO,
                ),
                Verdict::Cancelled => (
                    "cancelled",
                    None,
                    Some("cancelled while running".to_owned()),
                    (None, None),
                    Duration::ZERO,
                ),
            };
            statement.ids.push(outcome.task_id);
            statement.attempts.push(outcome.attempt);
            statement.verdicts.push(verdict);
            statement.results.push(result);
            statement.errors.push(error);
            statement.prompt_tokens.push(usage.0);
            statement.completion_tokens.push(usage.1);
            statement.delays.push(delay.as_secs_f64());
        }
        statement
    }
}

impl QueryId for RecordStatement<'_> {
    type QueryId = RecordStatement<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for RecordStatement<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for RecordStatement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "UPDATE tasks AS t
             SET status = CASE
                     WHEN v.verdict = 'succeeded' THEN 'succeeded'
                     WHEN t.cancel_requested OR v.verdict = 'cancelled' THEN 'cancelled'
                     WHEN v.verdict = 'retry' AND t.attempts < t.max_attempts THEN 'pending'
                     ELSE 'failed'
                 END::task_status,
                 result = CASE WHEN v.verdict = 'succeeded' THEN v.result END,
                 error = CASE
                     WHEN v.verdict = 'succeeded' THEN NULL
                     WHEN t.cancel_requested AND v.verdict <> 'cancelled' THEN 'cancelled while running'
                     WHEN v.verdict = 'retry' AND t.attempts >= t.max_attempts
                         THEN v.error || ' (all ' || t.max_attempts || ' attempts used)'
                     ELSE v.error
                 END,
                 prompt_tokens = v.prompt_tokens,
                 completion_tokens = v.completion_tokens,
                 run_at = CASE
                     WHEN v.verdict = 'retry' AND NOT t.cancel_requested AND t.attempts < t.max_attempts
                         THEN now() + make_interval(secs => v.delay_seconds)
                     ELSE t.run_at
                 END,
                 finished_at = CASE
                     WHEN v.verdict = 'retry' AND NOT t.cancel_requested AND t.attempts < t.max_attempts
                         THEN NULL
                     ELSE now()
                 END,
                 worker_id = NULL,
                 lease_expires_at = NULL
             FROM unnest(",
        );
        out.push_bind_param::<Array<BigInt>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(&self.attempts)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.verdicts)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.results)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.errors)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Integer>>, _>(&self.prompt_tokens)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Integer>>, _>(&self.completion_tokens)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Double>, _>(&self.delays)?;
        out.push_sql(
            ") AS v(id, attempt, verdict, result, error, prompt_tokens, completion_tokens, delay_seconds)
             WHERE t.id = v.id
               AND t.status = 'running'
               AND t.worker_id = ",
        );
        out.push_bind_param::<Text, _>(self.worker_id)?;
        out.push_sql(" AND t.attempts = v.attempt RETURNING t.id");
        Ok(())
    }
}
