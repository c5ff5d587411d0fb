//! The output's SQL: sending pieces of text on the output channel, saving
//! the text so far of running attempts, and reading it back.

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::db::schema::task_partial_results;
use crate::output::OUTPUT_CHANNEL;
use crate::queue::AttemptId;

/// Sends `payloads` on the output channel, in order, in one statement (so
/// one transaction: every listener gets them together and in this order).
pub async fn notify(conn: &mut AsyncPgConnection, payloads: &[String]) -> QueryResult<()> {
    if payloads.is_empty() {
        return Ok(());
    }
    diesel::sql_query(format!(
        "SELECT pg_notify('{OUTPUT_CHANNEL}', payload) FROM unnest($1::text[]) AS payload"
    ))
    .bind::<Array<Text>, _>(payloads)
    .execute(conn)
    .await?;
    Ok(())
}

/// In one statement: saves the text so far of running attempts (only while
/// the task is still running that attempt under `worker_id`, so a late save
/// can never write over a newer attempt's text), and removes the rows of
/// attempts in `gone` (each only if it still holds that attempt).
pub async fn save(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    rows: &[(AttemptId, String)],
    gone: &[AttemptId],
) -> QueryResult<()> {
    if rows.is_empty() && gone.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = rows.iter().map(|(a, _)| a.task_id).collect();
    let attempts: Vec<i32> = rows.iter().map(|(a, _)| a.attempt).collect();
    let texts: Vec<&str> = rows.iter().map(|(_, text)| text.as_str()).collect();
    let gone_ids: Vec<i64> = gone.iter().map(|a| a.task_id).collect();
    let gone_attempts: Vec<i32> = gone.iter().map(|a| a.attempt).collect();
    diesel::sql_query(
        "WITH removed AS (
             DELETE FROM task_partial_results AS p
             USING unnest($4::bigint[], $5::int[]) AS g(task_id, attempt)
             WHERE p.task_id = g.task_id AND p.attempt = g.attempt
         )
         INSERT INTO task_partial_results (task_id, attempt, text)
         SELECT v.task_id, v.attempt, v.text
         FROM unnest($1::bigint[], $2::int[], $3::text[]) AS v(task_id, attempt, text)
         JOIN tasks AS t ON t.id = v.task_id
         WHERE t.status = 'running' AND t.attempts = v.attempt AND t.worker_id = $6
         ON CONFLICT (task_id) DO UPDATE
             SET attempt = EXCLUDED.attempt, text = EXCLUDED.text
             WHERE task_partial_results.attempt <= EXCLUDED.attempt",
    )
    .bind::<Array<BigInt>, _>(&ids)
    .bind::<Array<Integer>, _>(&attempts)
    .bind::<Array<Text>, _>(&texts)
    .bind::<Array<BigInt>, _>(&gone_ids)
    .bind::<Array<Integer>, _>(&gone_attempts)
    .bind::<Text, _>(worker_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes the rows no running attempt owns (their worker was lost, or
/// their removal was): the task is not running that attempt any more.
pub async fn sweep(conn: &mut AsyncPgConnection) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM task_partial_results AS p
         WHERE NOT EXISTS (
             SELECT FROM tasks AS t
             WHERE t.id = p.task_id AND t.status = 'running' AND t.attempts = p.attempt
         )",
    )
    .execute(conn)
    .await
}

/// The saved text so far of a task's attempt, if its worker saved any.
pub async fn saved_text(
    conn: &mut AsyncPgConnection,
    attempt: AttemptId,
) -> QueryResult<Option<String>> {
    task_partial_results::table
        .filter(task_partial_results::task_id.eq(attempt.task_id))
        .filter(task_partial_results::attempt.eq(attempt.attempt))
        .select(task_partial_results::text)
        .first(conn)
        .await
        .optional()
}
