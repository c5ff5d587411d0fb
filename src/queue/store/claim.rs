//! Taking due tasks: the batch claim on the hot path, the claim of given ids
//! (to find a row that breaks the batch), and ending a task that cannot start.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Double, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::queue::store::IdRow;
use crate::tasks::Task;
use crate::tasks::validation::PRIORITY_RANGE;

/// What a claim sets on each row it takes, up to the worker id (bound next).
const START: &str = "status = 'running',
         attempts = t.attempts + 1,
         started_at = now(),
         finished_at = NULL,
         updated_at = now(),
         worker_id = ";

/// The condition every claimed row meets: a claim only takes rows that may
/// legally become RUNNING, so no such row can make it fail.
const CLAIMABLE: &str = "status = 'pending' AND run_at <= now() AND attempts < max_attempts";

/// A claim is made only while the worker's lease is alive, so that tasks are
/// never claimed under a lease that the rescuer already counts as lost.
const LEASE_ALIVE: &str = "EXISTS (SELECT 1 FROM workers WHERE id = ";

/// Takes up to `limit` due tasks for `worker_id`: the highest priority first,
/// within a priority the one due longest, then the lowest id. Marks them
/// RUNNING and counts the attempt. Rows that other workers are claiming are
/// skipped, never waited for; so are the ids in `skip` (rows this worker
/// found it cannot start). Takes nothing unless the worker's lease is alive.
pub async fn claim_batch(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    limit: i64,
    skip: &[i64],
) -> QueryResult<Vec<Task>> {
    ClaimStatement {
        worker_id,
        limit,
        skip,
    }
    .load(conn)
    .await
}

/// The ids [`claim_batch`] would take, without taking them.
pub async fn claim_candidates(
    conn: &mut AsyncPgConnection,
    limit: i64,
    skip: &[i64],
) -> QueryResult<Vec<i64>> {
    let candidates: Vec<IdRow> = CandidatesStatement { limit, skip }.load(conn).await?;
    Ok(candidates.into_iter().map(|row| row.id).collect())
}

/// Claims the tasks with these ids that are still claimable.
pub async fn claim_ids(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    ids: &[i64],
) -> QueryResult<Vec<Task>> {
    diesel::sql_query(format!(
        "WITH due AS (
             SELECT id FROM tasks
             WHERE id = ANY($2) AND {CLAIMABLE} AND {LEASE_ALIVE}$1 AND lease_expires_at > now())
             FOR UPDATE SKIP LOCKED
         )
         UPDATE tasks AS t SET {START}$1
         FROM due WHERE t.id = due.id
         RETURNING t.*"
    ))
    .bind::<Text, _>(worker_id)
    .bind::<Array<BigInt>, _>(ids)
    .load(conn)
    .await
}

/// Ends a PENDING task that cannot be started (the database refuses to make
/// it RUNNING), FAILED with `reason`, so that it stops blocking the claim.
/// Returns whether it was ended.
pub async fn fail_unstartable(
    conn: &mut AsyncPgConnection,
    id: i64,
    reason: &str,
) -> QueryResult<bool> {
    let ended = diesel::sql_query(
        "UPDATE tasks
         SET status = 'failed', error = $2, updated_at = now(),
             finished_at = greatest(now(), created_at)
         WHERE id = $1 AND status = 'pending'",
    )
    .bind::<BigInt, _>(id)
    .bind::<Text, _>(reason)
    .execute(conn)
    .await?;
    Ok(ended > 0)
}

/// Seconds until the next claimable task falls due, by the database's clock
/// (zero or less when one is due now); `None` when none is pending.
pub async fn next_due_in(conn: &mut AsyncPgConnection, skip: &[i64]) -> QueryResult<Option<f64>> {
    #[derive(QueryableByName)]
    struct NextDue {
        #[diesel(sql_type = Nullable<Double>)]
        seconds: Option<f64>,
    }
    let next: NextDue = diesel::sql_query(
        "SELECT extract(epoch FROM min(run_at) - now())::float8 AS seconds FROM tasks
         WHERE status = 'pending' AND attempts < max_attempts AND id <> ALL($1)",
    )
    .bind::<Array<BigInt>, _>(skip)
    .get_result(conn)
    .await?;
    Ok(next.seconds)
}

/// Pushes the ids of due tasks in queue order, at most `limit`: priorities
/// from the highest, and within a priority the tenants in turn.
///
/// Per priority (one branch of a UNION ALL, so lower priorities are not read
/// once higher ones fill the batch): the tenants with pending tasks at that
/// priority are found by a skip scan of the pending index (one probe per
/// tenant, however many tasks each has); each gives its first due tasks in
/// `(run_at, id)` order, at most its share of the batch plus one; and the
/// batch takes them by their place in their tenant's line first, so a tenant
/// with 100,000 tasks waiting and one with a single task each get a task
/// into the next batch. Ties go to the tenants in an order that turns with
/// every claim (`task_claim_turn`), so a batch of one serves them in turn.
/// Each range stops at now, so tasks delayed into the future are never read.
fn push_due_ids<'b>(
    out: &mut AstPass<'_, 'b, Pg>,
    limit: &'b i64,
    skip: &'b [i64],
    lock: bool,
) -> QueryResult<()> {
    out.push_sql(
        "WITH turn AS MATERIALIZED (SELECT nextval('task_claim_turn') AS v) SELECT id FROM (",
    );
    for (n, priority) in PRIORITY_RANGE.rev().enumerate() {
        if n > 0 {
            out.push_sql(" UNION ALL ");
        }
        out.push_sql(&format!(
            "SELECT id FROM (
                WITH RECURSIVE tp AS (
                    (SELECT tenant FROM tasks WHERE status = 'pending' AND priority = {priority}
                     ORDER BY tenant LIMIT 1)
                    UNION ALL
                    SELECT (SELECT t.tenant FROM tasks AS t
                            WHERE t.status = 'pending' AND t.priority = {priority} AND t.tenant > tp.tenant
                            ORDER BY t.tenant LIMIT 1)
                    FROM tp WHERE tp.tenant IS NOT NULL
                ), tn AS (
                    SELECT tenant, row_number() OVER (ORDER BY tenant) AS i, count(*) OVER () AS n
                    FROM tp WHERE tenant IS NOT NULL
                )
                SELECT c.id FROM tn CROSS JOIN LATERAL (
                    SELECT id, run_at, row_number() OVER (ORDER BY run_at, id) AS place FROM (
                        SELECT id, run_at FROM tasks
                        WHERE priority = {priority} AND tenant = tn.tenant AND {CLAIMABLE} AND id <> ALL("
        ));
        out.push_bind_param::<Array<BigInt>, _>(skip)?;
        out.push_sql(") ORDER BY run_at, id LIMIT (");
        out.push_bind_param::<BigInt, _>(limit)?;
        out.push_sql(" + tn.n - 1) / tn.n + 1");
        if lock {
            out.push_sql(" FOR UPDATE SKIP LOCKED");
        }
        out.push_sql(
            ") AS s
                ) AS c
                ORDER BY c.place, (tn.i + (SELECT v FROM turn)) % tn.n, c.run_at, c.id
                LIMIT ",
        );
        out.push_bind_param::<BigInt, _>(limit)?;
        out.push_sql(&format!(") AS p{priority}"));
    }
    out.push_sql(") AS queue");
    Ok(())
}

// The claim is on the hot path: written as a query node with fixed SQL, so
// that diesel prepares it once per connection (`sql_query` is never cached:
// one more round trip per claim).

/// The statement of [`claim_batch`].
struct ClaimStatement<'a> {
    worker_id: &'a str,
    limit: i64,
    skip: &'a [i64],
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
        out.push_sql("WITH due AS (");
        push_due_ids(&mut out, &self.limit, self.skip, true)?;
        out.push_sql(" WHERE ");
        out.push_sql(LEASE_ALIVE);
        out.push_bind_param::<Text, _>(self.worker_id)?;
        out.push_sql(" AND lease_expires_at > now()) LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        out.push_sql(") UPDATE tasks AS t SET ");
        out.push_sql(START);
        out.push_bind_param::<Text, _>(self.worker_id)?;
        out.push_sql(" FROM due WHERE t.id = due.id RETURNING t.*");
        Ok(())
    }
}

/// The statement of [`claim_candidates`].
struct CandidatesStatement<'a> {
    limit: i64,
    skip: &'a [i64],
}

impl QueryId for CandidatesStatement<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for CandidatesStatement<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for CandidatesStatement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        push_due_ids(&mut out, &self.limit, self.skip, false)?;
        out.push_sql(" LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        Ok(())
    }
}
