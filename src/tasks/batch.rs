//! Storing many new tasks of one tenant at once: one statement whatever the
//! batch's size, and idempotency keys honoured as a single create honours them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Double, Integer, Nullable, SmallInt, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::db::schema::tasks;
use crate::tasks::{NewTask, Task};

/// Stores `new_tasks`, all of `tenant`, and returns for each, in the same
/// order, its task and whether it was created now.
///
/// A task with an idempotency key the tenant used before is not stored
/// again: the task that key first created takes its place. A key given twice
/// in the batch creates one task, returned in both places (the second input's
/// other fields are not used, as when a create is repeated).
///
/// Run it inside a transaction: a failure leaves the caller to roll back.
/// Concurrent batches with keys in common do not deadlock: each inserts its
/// keyed rows in key order, so they wait for one another in the same order.
pub async fn insert_all(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    new_tasks: &[NewTask],
) -> QueryResult<Vec<(Task, bool)>> {
    // Each input's place among the distinct tasks the batch names.
    let mut first_with_key: HashMap<&str, usize> = HashMap::new();
    let mut distinct: Vec<&NewTask> = Vec::with_capacity(new_tasks.len());
    let places: Vec<usize> = new_tasks
        .iter()
        .map(|new_task| {
            let fresh = distinct.len();
            let place = match &new_task.idempotency_key {
                Some(key) => *first_with_key.entry(key.as_str()).or_insert(fresh),
                None => fresh,
            };
            if place == fresh {
                distinct.push(new_task);
            }
            place
        })
        .collect();

    let mut stored: Vec<Option<(Task, bool)>> = vec![None; distinct.len()];
    let mut waiting: Vec<usize> = (0..distinct.len()).collect();
    while !waiting.is_empty() {
        let statement = InsertStatement::new(tenant, waiting.iter().map(|&i| distinct[i]));
        let inserted: Vec<InsertedRow> = statement.load(conn).await?;
        for row in inserted {
            let place = usize::try_from(row.input_order - 1)
                .ok()
                .and_then(|position| waiting.get(position))
                .copied()
                .ok_or(diesel::result::Error::NotFound)?;
            stored[place] = Some((row.task, true));
        }
        // The rest hold keys already used: read the tasks that hold them.
        waiting.retain(|&place| stored[place].is_none());
        let keys: Vec<&str> = waiting
            .iter()
            .filter_map(|&place| distinct[place].idempotency_key.as_deref())
            .collect();
        if keys.len() < waiting.len() {
            // Only a conflicting key makes the insert skip a row.
            return Err(diesel::result::Error::NotFound);
        }
        if keys.is_empty() {
            break;
        }
        let holders: Vec<Task> = tasks::table
            .filter(tasks::tenant.eq(tenant))
            .filter(tasks::idempotency_key.eq_any(&keys))
            .select(Task::as_select())
            .load(conn)
            .await?;
        let mut by_key: HashMap<String, Task> = holders
            .into_iter()
            .filter_map(|task| Some((task.idempotency_key.clone()?, task)))
            .collect();
        for &place in &waiting {
            let key = distinct[place].idempotency_key.as_deref().unwrap_or("");
            if let Some(task) = by_key.remove(key) {
                stored[place] = Some((task, false));
            }
        }
        // A key whose task was deleted between the insert and the read is
        // free again: the next round inserts it.
        waiting.retain(|&place| stored[place].is_none());
    }

    places
        .into_iter()
        .map(|place| stored[place].clone().ok_or(diesel::result::Error::NotFound))
        .collect()
}

/// A row the insert stored, with its input's position (from 1) in the statement.
#[derive(QueryableByName)]
struct InsertedRow {
    #[diesel(embed)]
    task: Task,
    #[diesel(sql_type = BigInt)]
    input_order: i64,
}

// A query node with fixed SQL, which diesel prepares once per connection
// whatever the number of rows: the rows travel as one array per column.

/// The insert of [`insert_all`]: one row of `unnest` per new task.
struct InsertStatement<'a> {
    tenant: &'a str,
    prompts: Vec<&'a str>,
    models: Vec<&'a str>,
    priorities: Vec<i16>,
    max_attempts: Vec<i32>,
    run_ats: Vec<Option<DateTime<Utc>>>,
    system_prompts: Vec<Option<&'a str>>,
    temperatures: Vec<Option<f64>>,
    max_tokens: Vec<Option<i32>>,
    timeout_seconds: Vec<Option<i32>>,
    idempotency_keys: Vec<Option<&'a str>>,
}

impl<'a> InsertStatement<'a> {
    /// The statement for `new_tasks`, as parallel arrays.
    fn new(tenant: &'a str, new_tasks: impl ExactSizeIterator<Item = &'a NewTask>) -> Self {
        let rows = new_tasks.len();
        let mut statement = InsertStatement {
            tenant,
            prompts: Vec::with_capacity(rows),
            models: Vec::with_capacity(rows),
            priorities: Vec::with_capacity(rows),
            max_attempts: Vec::with_capacity(rows),
            run_ats: Vec::with_capacity(rows),
            system_prompts: Vec::with_capacity(rows),
            temperatures: Vec::with_capacity(rows),
            max_tokens: Vec::with_capacity(rows),
            timeout_seconds: Vec::with_capacity(rows),
            idempotency_keys: Vec::with_capacity(rows),
        };
        for new_task in new_tasks {
            statement.prompts.push(&new_task.prompt);
            statement.models.push(&new_task.model);
            statement.priorities.push(new_task.priority);
            statement.max_attempts.push(new_task.max_attempts);
            statement.run_ats.push(new_task.run_at);
            statement
                .system_prompts
                .push(new_task.system_prompt.as_deref());
            statement.temperatures.push(new_task.temperature);
            statement.max_tokens.push(new_task.max_tokens);
            statement.timeout_seconds.push(new_task.timeout_seconds);
            statement
                .idempotency_keys
                .push(new_task.idempotency_key.as_deref());
        }
        statement
    }
}

impl QueryId for InsertStatement<'_> {
    type QueryId = InsertStatement<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for InsertStatement<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for InsertStatement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // Ids are drawn in input order, before the insert, so that each stored
        // row can be matched to its input by id; the insert itself goes in key
        // order (see `insert_all`). A missing `run_at` means now, by the
        // database's clock, as the column's default does.
        out.push_sql(
            "WITH input AS (
                 SELECT nextval(pg_get_serial_sequence('tasks', 'id')) AS id, i.*
                 FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.prompts)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.models)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SmallInt>, _>(&self.priorities)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(&self.max_attempts)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Timestamptz>>, _>(&self.run_ats)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.system_prompts)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Double>>, _>(&self.temperatures)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Integer>>, _>(&self.max_tokens)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Integer>>, _>(&self.timeout_seconds)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.idempotency_keys)?;
        out.push_sql(
            ") WITH ORDINALITY AS i(prompt, model, priority, max_attempts, run_at, system_prompt,
                                    temperature, max_tokens, timeout_seconds, idempotency_key,
                                    input_order)
             ),
             inserted AS (
                 INSERT INTO tasks (id, tenant, prompt, model, priority, max_attempts, run_at,
                                    system_prompt, temperature, max_tokens, timeout_seconds,
                                    idempotency_key)
                 OVERRIDING SYSTEM VALUE
                 SELECT id, ",
        );
        out.push_bind_param::<Text, _>(self.tenant)?;
        out.push_sql(
            ", prompt, model, priority, max_attempts, coalesce(run_at, now()), system_prompt,
                        temperature, max_tokens, timeout_seconds, idempotency_key
                 FROM input
                 ORDER BY idempotency_key, input_order
                 ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                 RETURNING *
             )
             SELECT inserted.*, input.input_order
             FROM inserted JOIN input USING (id)",
        );
        Ok(())
    }
}
