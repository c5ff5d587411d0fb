//! Recording what came of finished attempts, in batches, fenced by (worker,
//! attempt).

use std::time::Duration;

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Double, Integer, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::queue::outcome::{AttemptId, Outcome, Verdict};
use crate::queue::store::IdRow;

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
    let written: Vec<IdRow> = RecordStatement::new(worker_id, outcomes).load(conn).await?;
    Ok(written.into_iter().map(|row| row.id).collect())
}

/// Ends FAILED, with `reason`, an attempt whose outcome the database refused
/// to store, so that the task does not stay RUNNING. Fenced like an outcome.
/// Returns whether it was ended.
pub async fn fail_unrecordable(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    attempt: AttemptId,
    reason: &str,
) -> QueryResult<bool> {
    let ended = diesel::sql_query(
        "UPDATE tasks
         SET status = 'failed', error = $4, result = NULL, worker_id = NULL,
             finished_at = greatest(now(), created_at), updated_at = now()
         WHERE id = $1 AND attempts = $2 AND status = 'running' AND worker_id = $3",
    )
    .bind::<BigInt, _>(attempt.task_id)
    .bind::<Integer, _>(attempt.attempt)
    .bind::<Text, _>(worker_id)
    .bind::<Text, _>(reason)
    .execute(conn)
    .await?;
    Ok(ended > 0)
}

// The outcome write is on the hot path: a query node with fixed SQL, which
// diesel prepares once per connection.

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
                     ELSE greatest(now(), t.created_at)
                 END,
                 worker_id = NULL,
                 updated_at = now()
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
