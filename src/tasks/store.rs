//! The task table's queries. Each function is one short statement (or a few)
//! on a connection the caller holds; none keeps a transaction open.

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use diesel::dsl::count_star;
use diesel::expression::{
    AppearsOnTable, BoxableExpression, Expression, SelectableExpression, ValidGrouping,
    is_aggregate,
};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{
    BigInt, Bool, Double, HasSqlType, Nullable, SingleValue, SmallInt, SqlType, Text, Timestamptz,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::db::schema::tasks;
use crate::tasks::listing::{
    Cursor, OrderDirection, Page, PageRequest, TaskFilter, TaskOrder, TaskOrderField,
};
use crate::tasks::validation::InvalidField;
use crate::tasks::{NewTask, Scope, Task, TaskChanges, TaskStatus};

/// What became of a request to change or delete a task.
#[derive(Debug)]
pub enum Outcome<T> {
    /// It was done.
    Done(T),
    /// No task has that id.
    NotFound,
    /// The task is in a state that does not allow it.
    WrongState(TaskStatus),
    /// The change breaks a rule given the task's state (a field names it).
    Invalid(InvalidField),
}

/// Stores a new task, PENDING, and returns it with whether it was created
/// now: a task with an idempotency key its tenant used before is not stored
/// again, and the task that key first created is returned instead.
///
/// Race-safe: of concurrent inserts with one key, the unique index lets one
/// in; the others wait for it to commit, insert nothing, and read its task.
pub async fn insert(conn: &mut AsyncPgConnection, new_task: &NewTask) -> QueryResult<(Task, bool)> {
    loop {
        if let Some(task) = insert_new(conn, new_task).await? {
            return Ok((task, true));
        }
        let Some(key) = &new_task.idempotency_key else {
            // Only a conflicting key makes the insert return no row.
            return Err(diesel::result::Error::NotFound);
        };
        let first = tasks::table
            .filter(tasks::tenant.eq(&new_task.tenant))
            .filter(tasks::idempotency_key.eq(key))
            .select(Task::as_select())
            .first(conn)
            .await
            .optional()?;
        // Deleted between the conflict and the read: the key is free again.
        if let Some(task) = first {
            return Ok((task, false));
        }
    }
}

/// The insert itself, skipped when the idempotency key is taken.
async fn insert_new(conn: &mut AsyncPgConnection, new_task: &NewTask) -> QueryResult<Option<Task>> {
    // Two fixed statements, each prepared once per connection.
    match new_task.run_at {
        None => diesel::insert_into(tasks::table)
            .values(new_task)
            .on_conflict((tasks::tenant, tasks::idempotency_key))
            .filter_target(tasks::idempotency_key.is_not_null())
            .do_nothing()
            .returning(Task::as_returning())
            .get_result(conn)
            .await
            .optional(),
        Some(run_at) => diesel::insert_into(tasks::table)
            .values((new_task, tasks::run_at.eq(run_at)))
            .on_conflict((tasks::tenant, tasks::idempotency_key))
            .filter_target(tasks::idempotency_key.is_not_null())
            .do_nothing()
            .returning(Task::as_returning())
            .get_result(conn)
            .await
            .optional(),
    }
}

/// The task with this id, if there is one within `scope`.
pub async fn find(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    id: i64,
) -> QueryResult<Option<Task>> {
    tasks::table
        .find(id)
        .filter(within(scope))
        .select(Task::as_select())
        .first(conn)
        .await
        .optional()
}

/// Applies `changes` to a task that is still PENDING. A new `max_attempts`
/// must stay above the attempts the task has made: a PENDING task with no
/// attempt left could never run.
pub async fn update_pending(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    id: i64,
    changes: &TaskChanges,
) -> QueryResult<Outcome<Task>> {
    // One statement shape whatever the change, so it is prepared once.
    let max_attempts = changes.max_attempts.unwrap_or(i32::MAX);
    let updated = diesel::update(tasks::table.find(id))
        .filter(within(scope))
        .filter(tasks::status.eq(TaskStatus::Pending))
        .filter(tasks::attempts.lt(max_attempts))
        .set(changes)
        .returning(Task::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    if let Some(task) = updated {
        return Ok(Outcome::Done(task));
    }
    let found: Option<(TaskStatus, i32)> = tasks::table
        .find(id)
        .filter(within(scope))
        .select((tasks::status, tasks::attempts))
        .first(conn)
        .await
        .optional()?;
    Ok(match found {
        None => Outcome::NotFound,
        Some((TaskStatus::Pending, attempts)) => Outcome::Invalid(InvalidField::new(
            "maxAttempts",
            format!(
                "must be more than the {attempts} attempts the task has already made, got {max_attempts}"
            ),
        )),
        Some((status, _)) => Outcome::WrongState(status),
    })
}

/// Deletes a task unless a worker is running it, keeping its last state a
/// while in `task_tombstones` for the subscribers its DELETED event reaches.
pub async fn delete(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    id: i64,
) -> QueryResult<Outcome<i64>> {
    #[derive(QueryableByName)]
    struct Deleted {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let deleted = diesel::sql_query(
        "WITH gone AS (
             DELETE FROM tasks
             WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) AND status <> 'running'
             RETURNING *
         )
         INSERT INTO task_tombstones SELECT * FROM gone
         ON CONFLICT (id) DO UPDATE SET deleted_at = now()
         RETURNING id",
    )
    .bind::<BigInt, _>(id)
    .bind::<Nullable<Text>, _>(scope.tenant())
    .get_result::<Deleted>(conn)
    .await
    .optional()?
    .map(|row| row.id);
    done_or_why_not(conn, scope, id, deleted).await
}

/// Cancels a task: a PENDING one at once; a RUNNING one is marked so that its
/// worker stops the model call and records CANCELLED (the returned task is
/// still RUNNING, with `cancel_requested` set).
///
/// One statement: a task that a worker claims at the same moment is found
/// RUNNING and marked, never refused. If its answer is recorded first, the
/// task has SUCCEEDED and the cancel is refused; if the cancel comes first, an
/// answer that arrives before the worker stops still wins (it is paid for).
pub async fn cancel(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    id: i64,
) -> QueryResult<Outcome<Task>> {
    let cancelled = diesel::sql_query(
        "UPDATE tasks
         SET status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,
             cancel_requested = (status = 'running'),
             error = CASE WHEN status = 'pending' THEN 'cancelled before it ran' ELSE error END,
             finished_at = CASE
                 WHEN status = 'pending' THEN greatest(now(), created_at) ELSE finished_at
             END,
             updated_at = now()
         WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) AND status IN ('pending', 'running')
         RETURNING *",
    )
    .bind::<BigInt, _>(id)
    .bind::<Nullable<Text>, _>(scope.tenant())
    .get_result(conn)
    .await
    .optional()?;
    done_or_why_not(conn, scope, id, cancelled).await
}

/// Queues a FAILED or CANCELLED task again, with a fresh attempt budget.
pub async fn retry(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    id: i64,
) -> QueryResult<Outcome<Task>> {
    let retried = diesel::update(tasks::table.find(id))
        .filter(within(scope))
        .filter(tasks::status.eq_any([TaskStatus::Failed, TaskStatus::Cancelled]))
        .set((
            tasks::status.eq(TaskStatus::Pending),
            tasks::attempts.eq(0),
            tasks::lost_attempts.eq(0),
            tasks::run_at.eq(diesel::dsl::now),
            tasks::cancel_requested.eq(false),
            tasks::error.eq(None::<String>),
            tasks::result.eq(None::<String>),
            tasks::started_at.eq(None::<chrono::DateTime<chrono::Utc>>),
            tasks::finished_at.eq(None::<chrono::DateTime<chrono::Utc>>),
            tasks::prompt_tokens.eq(None::<i32>),
            tasks::completion_tokens.eq(None::<i32>),
        ))
        .returning(Task::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    done_or_why_not(conn, scope, id, retried).await
}

/// Task counts by status, and how long the longest-waiting due task has waited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub counts: Vec<(TaskStatus, i64)>,
    /// Seconds since the longest-waiting due task fell due (by the
    /// database's clock); `None` when no task is due.
    pub oldest_due_age_seconds: Option<f64>,
}

impl Stats {
    /// How many tasks are in `status`.
    pub fn count(&self, status: TaskStatus) -> i64 {
        self.counts
            .iter()
            .filter(|(counted, _)| *counted == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// How long the longest-waiting due task has waited, as the API reports
    /// it: 0 when every pending task is delayed, `None` when none is pending.
    pub fn oldest_pending_age_seconds(&self) -> Option<f64> {
        (self.count(TaskStatus::Pending) > 0).then(|| self.oldest_due_age_seconds.unwrap_or(0.0))
    }
}

/// Counts PENDING and RUNNING tasks within `scope` on their partial indexes
/// (the queue and the work in flight, small however many tasks have
/// finished), reads the counters the triggers keep per tenant for finished
/// ones (a few rows, plus the deltas not folded yet), and finds the oldest
/// due task.
pub async fn stats(conn: &mut AsyncPgConnection, scope: &Scope) -> QueryResult<Stats> {
    #[derive(QueryableByName)]
    struct Counted {
        #[diesel(sql_type = crate::db::schema::sql_types::TaskStatus)]
        status: TaskStatus,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    #[derive(QueryableByName)]
    struct Age {
        #[diesel(sql_type = Nullable<Double>)]
        seconds: Option<f64>,
    }
    let mut counts = Vec::with_capacity(5);
    for status in [TaskStatus::Pending, TaskStatus::Running] {
        let n: i64 = tasks::table
            .filter(within(scope))
            .filter(tasks::status.eq(status))
            .count()
            .get_result(conn)
            .await?;
        counts.push((status, n));
    }
    // `sql_query` statements are planned for each execution, so the
    // `$1 IS NULL` branch is folded away before planning.
    let finished: Vec<Counted> = diesel::sql_query(
        "SELECT status, sum(n)::bigint AS n FROM (
             SELECT status, n FROM task_status_counts WHERE $1::text IS NULL OR tenant = $1
             UNION ALL
             SELECT status, delta FROM task_status_deltas WHERE $1::text IS NULL OR tenant = $1
         ) AS counted
         GROUP BY status",
    )
    .bind::<Nullable<Text>, _>(scope.tenant())
    .load(conn)
    .await?;
    let oldest: Age = diesel::sql_query(
        "SELECT extract(epoch FROM now() - min(run_at))::float8 AS seconds FROM tasks
         WHERE status = 'pending' AND run_at <= now() AND ($1::text IS NULL OR tenant = $1)",
    )
    .bind::<Nullable<Text>, _>(scope.tenant())
    .get_result(conn)
    .await?;
    counts.extend(finished.into_iter().map(|row| (row.status, row.n)));
    Ok(Stats {
        counts,
        oldest_due_age_seconds: oldest.seconds.map(|seconds| seconds.max(0.0)),
    })
}

/// The row a guarded statement returned, or why it touched none.
async fn done_or_why_not<T>(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    id: i64,
    row: Option<T>,
) -> QueryResult<Outcome<T>> {
    if let Some(row) = row {
        return Ok(Outcome::Done(row));
    }
    let status = tasks::table
        .find(id)
        .filter(within(scope))
        .select(tasks::status)
        .first(conn)
        .await
        .optional()?;
    Ok(status.map_or(Outcome::NotFound, Outcome::WrongState))
}

/// How many tasks within `scope` match the filter.
pub async fn count(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    filter: &TaskFilter,
) -> QueryResult<i64> {
    filtered(scope, filter)
        .select(count_star())
        .get_result(conn)
        .await
}

/// One keyset page of the filtered, ordered task list.
///
/// Fetches one row more than asked to learn whether the page is followed (in
/// the direction of travel); `page_info` asks whether rows lie on the other
/// side, which costs one indexed probe per bound.
pub async fn list(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    filter: &TaskFilter,
    order: TaskOrder,
    page: PageRequest,
    page_info: bool,
) -> QueryResult<Page> {
    let travel = if page.from_end {
        order.direction.reversed()
    } else {
        order.direction
    };
    let mut query = ordered(filtered(scope, filter), order.field, travel);
    if let Some(after) = page.after {
        query = query.filter(keyset(after, order.direction, Bound::After));
    }
    if let Some(before) = page.before {
        query = query.filter(keyset(before, order.direction, Bound::Before));
    }
    let mut tasks: Vec<Task> = query
        .select(Task::as_select())
        .limit(page.limit + 1)
        .load(conn)
        .await?;
    let more_in_travel = tasks.len() as i64 > page.limit;
    tasks.truncate(usize::try_from(page.limit).unwrap_or(0));
    if page.from_end {
        tasks.reverse();
    }

    let (mut has_previous_page, mut has_next_page) = if page.from_end {
        (more_in_travel, false)
    } else {
        (false, more_in_travel)
    };
    if page_info {
        if let (Some(after), false) = (page.after, has_previous_page) {
            has_previous_page = any_beyond(
                conn,
                scope,
                filter,
                after,
                order.direction,
                Bound::AtOrBefore,
            )
            .await?;
        }
        if let (Some(before), false) = (page.before, has_next_page) {
            has_next_page = any_beyond(
                conn,
                scope,
                filter,
                before,
                order.direction,
                Bound::AtOrAfter,
            )
            .await?;
        }
    }
    Ok(Page {
        tasks,
        has_previous_page,
        has_next_page,
    })
}

async fn any_beyond(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    filter: &TaskFilter,
    cursor: Cursor,
    direction: OrderDirection,
    bound: Bound,
) -> QueryResult<bool> {
    // Walk away from the cursor on the ordering's index, so the first row
    // found decides (unordered, PostgreSQL may scan from the far end).
    let walk = match bound {
        Bound::AtOrBefore | Bound::Before => direction.reversed(),
        Bound::AtOrAfter | Bound::After => direction,
    };
    let found: Option<i64> = ordered(filtered(scope, filter), cursor.field, walk)
        .filter(keyset(cursor, direction, bound))
        .select(tasks::id)
        .limit(1)
        .get_result(conn)
        .await
        .optional()?;
    Ok(found.is_some())
}

/// The side of a cursor a condition keeps, in the ordering's own direction.
#[derive(Clone, Copy)]
enum Bound {
    After,
    Before,
    AtOrBefore,
    AtOrAfter,
}

type TaskCondition = Box<dyn BoxableExpression<tasks::table, Pg, SqlType = Bool>>;

/// A row-value comparison `(key, id) op (cursor key, cursor id)`, which
/// PostgreSQL answers with a range scan on the ordering's (key, id) index.
fn keyset(cursor: Cursor, direction: OrderDirection, bound: Bound) -> TaskCondition {
    let ascending = direction == OrderDirection::Asc;
    let operator = match (bound, ascending) {
        (Bound::After, true) | (Bound::Before, false) => ">",
        (Bound::After, false) | (Bound::Before, true) => "<",
        (Bound::AtOrAfter, true) | (Bound::AtOrBefore, false) => ">=",
        (Bound::AtOrAfter, false) | (Bound::AtOrBefore, true) => "<=",
    };
    match cursor.field {
        TaskOrderField::Priority => Box::new(RowComparison::<SmallInt, i16> {
            column: "priority",
            operator,
            // A cursor's key came from a smallint; anything else matches no row.
            key: i16::try_from(cursor.key).unwrap_or(if cursor.key < 0 {
                i16::MIN
            } else {
                i16::MAX
            }),
            id: cursor.id,
            sql_type: PhantomData,
        }),
        TaskOrderField::CreatedAt | TaskOrderField::UpdatedAt => {
            Box::new(RowComparison::<Timestamptz, DateTime<Utc>> {
                column: if cursor.field == TaskOrderField::CreatedAt {
                    "created_at"
                } else {
                    "updated_at"
                },
                operator,
                key: cursor.key_as_timestamp().unwrap_or_default(),
                id: cursor.id,
                sql_type: PhantomData,
            })
        }
    }
}

/// `(column, id) operator (key, id)`. Unlike `diesel::dsl::sql`, which marks
/// any statement it is part of as not cacheable, its SQL text depends only on
/// the column and operator, so diesel prepares each list query once per
/// connection.
struct RowComparison<ST, V> {
    column: &'static str,
    operator: &'static str,
    key: V,
    id: i64,
    sql_type: PhantomData<ST>,
}

impl<ST, V> Expression for RowComparison<ST, V> {
    type SqlType = Bool;
}

impl<ST, V> QueryId for RowComparison<ST, V> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<ST, V> AppearsOnTable<tasks::table> for RowComparison<ST, V> {}
impl<ST, V> SelectableExpression<tasks::table> for RowComparison<ST, V> {}
impl<ST, V> ValidGrouping<()> for RowComparison<ST, V> {
    type IsAggregate = is_aggregate::Never;
}

impl<ST, V> QueryFragment<Pg> for RowComparison<ST, V>
where
    ST: SqlType + SingleValue,
    Pg: HasSqlType<ST>,
    V: ToSql<ST, Pg>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("(");
        out.push_identifier(self.column)?;
        out.push_sql(", id) ");
        out.push_sql(self.operator);
        out.push_sql(" (");
        out.push_bind_param::<ST, V>(&self.key)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, i64>(&self.id)?;
        out.push_sql(")");
        Ok(())
    }
}

/// The tasks within `scope`: a condition every statement on tasks for a
/// client carries. Every task has a tenant, so `All` holds for each row.
fn within(scope: &Scope) -> TaskCondition {
    match scope {
        Scope::All => Box::new(tasks::tenant.is_not_null()),
        Scope::Tenant(tenant) => Box::new(tasks::tenant.eq(tenant.clone())),
    }
}

/// The tasks within `scope` narrowed by `filter`.
fn filtered<'a>(scope: &'a Scope, filter: &'a TaskFilter) -> tasks::BoxedQuery<'a, Pg> {
    let mut query = tasks::table.into_boxed();
    if let Scope::Tenant(tenant) = scope {
        query = query.filter(tasks::tenant.eq(tenant));
    }
    if let Some(tenant) = &filter.tenant {
        query = query.filter(tasks::tenant.eq(tenant));
    }
    if let Some(statuses) = &filter.statuses {
        query = query.filter(tasks::status.eq_any(statuses));
    }
    if let Some(model) = &filter.model {
        query = query.filter(tasks::model.eq(model));
    }
    if let Some(min) = filter.min_priority {
        query = query.filter(tasks::priority.ge(min));
    }
    if let Some(max) = filter.max_priority {
        query = query.filter(tasks::priority.le(max));
    }
    if let Some(after) = filter.created_after {
        query = query.filter(tasks::created_at.gt(after));
    }
    if let Some(before) = filter.created_before {
        query = query.filter(tasks::created_at.lt(before));
    }
    query
}

/// Sorts by the ordering's key, then by id, both in `direction`.
fn ordered(
    query: tasks::BoxedQuery<'_, Pg>,
    field: TaskOrderField,
    direction: OrderDirection,
) -> tasks::BoxedQuery<'_, Pg> {
    use OrderDirection::{Asc, Desc};
    match (field, direction) {
        (TaskOrderField::CreatedAt, Asc) => query.order((tasks::created_at.asc(), tasks::id.asc())),
        (TaskOrderField::CreatedAt, Desc) => {
            query.order((tasks::created_at.desc(), tasks::id.desc()))
        }
        (TaskOrderField::UpdatedAt, Asc) => query.order((tasks::updated_at.asc(), tasks::id.asc())),
        (TaskOrderField::UpdatedAt, Desc) => {
            query.order((tasks::updated_at.desc(), tasks::id.desc()))
        }
        (TaskOrderField::Priority, Asc) => query.order((tasks::priority.asc(), tasks::id.asc())),
        (TaskOrderField::Priority, Desc) => query.order((tasks::priority.desc(), tasks::id.desc())),
    }
}
