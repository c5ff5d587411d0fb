//! Changing tasks: create (one or many), update, cancel, retry, delete. Each change is
//! announced to every process's subscribers once it has committed.

use std::collections::HashSet;

use diesel::QueryResult;
use diesel_async::AsyncConnection;

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::events::TaskEventType;
use crate::service::Connections;
use crate::tasks::store::{self, Outcome};
use crate::tasks::validation::{TaskFields, parse_task_id};
use crate::tasks::{NewTask, Task, batch};

/// Queues a new task, PENDING, and wakes the workers.
///
/// With an idempotency key its tenant used before, creates nothing and
/// returns the task that key first created.
pub async fn create_task(
    state: &AppState,
    connections: &impl Connections,
    principal: &Principal,
    fields: TaskFields,
) -> Result<Task, ApiError> {
    principal.check_may_write()?;
    let new_task = fields.into_new_task(principal.tenant())?;
    state.check_model_is_served(&new_task.model)?;
    let mut conn = connections.connection().await?;
    let (task, created) = if state
        .tenant_limits()
        .is_limited(&mut conn, &new_task.tenant)
        .await?
    {
        // One transaction, so that a limited tenant's row stays locked from
        // its quota check until its task is in.
        conn.transaction::<_, ApiError, _>(async |conn| {
            crate::tenants::admit_creates(conn, &new_task.tenant, 1).await?;
            Ok(store::insert(conn, &new_task).await?)
        })
        .await?
    } else {
        store::insert(&mut conn, &new_task).await?
    };
    drop(conn);
    if !created {
        tracing::info!(
            task.id = task.id,
            "create repeated with an idempotency key; task returned"
        );
        return Ok(task);
    }
    // Harmless for a delayed task: a worker wakes and finds nothing due.
    state.announce_due_task();
    state.publish(TaskEventType::Created, task.id);
    state.metrics().task_created(&task.model);
    tracing::info!(task.id = task.id, model = %task.model, "task created");
    Ok(task)
}

/// The most tasks one `createTasks` call may create.
pub const MAX_BATCH_TASKS: usize = 1_000;

/// Queues several new tasks at once, all or none, and returns them in the
/// order given.
///
/// Every input is checked before anything is stored; a bad one is named by
/// its index (`inputs.3.prompt`). An input whose idempotency key its tenant
/// used before returns that task in its place; a key given twice in the
/// batch makes one task, returned in both places.
pub async fn create_tasks(
    state: &AppState,
    connections: &impl Connections,
    principal: &Principal,
    inputs: Vec<TaskFields>,
) -> Result<Vec<Task>, ApiError> {
    principal.check_may_write()?;
    if inputs.is_empty() || inputs.len() > MAX_BATCH_TASKS {
        return Err(ApiError::bad_input(
            "inputs",
            format!(
                "must hold 1 to {MAX_BATCH_TASKS} tasks, got {}",
                inputs.len()
            ),
        ));
    }
    let tenant = principal.tenant();
    let mut new_tasks = Vec::with_capacity(inputs.len());
    let mut served = HashSet::new();
    for (index, fields) in inputs.into_iter().enumerate() {
        let in_batch = |error: ApiError| match error {
            ApiError::BadUserInput { field, message } => ApiError::BadUserInput {
                field: format!("inputs.{index}.{field}"),
                message,
            },
            other => other,
        };
        let new_task = fields
            .into_new_task(tenant)
            .map_err(|invalid| in_batch(invalid.into()))?;
        if !served.contains(&new_task.model) {
            state
                .check_model_is_served(&new_task.model)
                .map_err(in_batch)?;
            served.insert(new_task.model.clone());
        }
        new_tasks.push(new_task);
    }
    let mut conn = connections.connection().await?;
    let stored = conn
        .transaction(async |conn| {
            // Repeats within the batch are one task; repeats of earlier
            // creates are counted here as a single create counts them.
            let distinct = distinct_tasks(&new_tasks);
            crate::tenants::admit_creates(conn, tenant, distinct).await?;
            Ok::<_, ApiError>(batch::insert_all(conn, tenant, &new_tasks).await?)
        })
        .await?;
    drop(conn);
    let created: Vec<&Task> = stored
        .iter()
        .filter(|(_, created)| *created)
        .map(|(task, _)| task)
        .collect();
    if !created.is_empty() {
        state.announce_due_task();
        state.publish_all(TaskEventType::Created, created.iter().map(|task| task.id));
        for task in &created {
            state.metrics().task_created(&task.model);
        }
    }
    tracing::info!(
        tasks = stored.len(),
        created = created.len(),
        "tasks created in a batch"
    );
    Ok(stored.into_iter().map(|(task, _)| task).collect())
}

/// How many tasks `new_tasks` may create: inputs that share an idempotency
/// key count once.
fn distinct_tasks(new_tasks: &[NewTask]) -> i64 {
    let keys: HashSet<&str> = new_tasks
        .iter()
        .filter_map(|new_task| new_task.idempotency_key.as_deref())
        .collect();
    let unkeyed = new_tasks
        .iter()
        .filter(|new_task| new_task.idempotency_key.is_none())
        .count();
    i64::try_from(keys.len() + unkeyed).unwrap_or(i64::MAX)
}

/// Changes a task that is still PENDING; CONFLICT once a worker has taken it.
pub async fn update_task(
    state: &AppState,
    connections: &impl Connections,
    principal: &Principal,
    id: &str,
    fields: TaskFields,
) -> Result<Task, ApiError> {
    principal.check_may_write()?;
    let id = parse_task_id(id)?;
    let changes = fields.into_changes()?;
    if let Some(model) = &changes.model {
        state.check_model_is_served(model)?;
    }
    let mut conn = connections.connection().await?;
    let outcome = store::update_pending(&mut conn, &principal.scope(), id, &changes).await;
    let task = settle(id, outcome, "only PENDING tasks can be changed")?;
    state.publish(TaskEventType::Updated, id);
    Ok(task)
}

/// Cancels a task: a PENDING one at once; a RUNNING one is returned with
/// `cancel_requested` set, and its worker stops the model call and records
/// CANCELLED within moments. CONFLICT once the task has finished.
pub async fn cancel_task(
    state: &AppState,
    connections: &impl Connections,
    principal: &Principal,
    id: &str,
) -> Result<Task, ApiError> {
    principal.check_may_write()?;
    let id = parse_task_id(id)?;
    let mut conn = connections.connection().await?;
    let outcome = store::cancel(&mut conn, &principal.scope(), id).await;
    let task = settle(
        id,
        outcome,
        "only PENDING or RUNNING tasks can be cancelled",
    )?;
    state.publish(TaskEventType::Updated, id);
    Ok(task)
}

/// Queues a FAILED or CANCELLED task again as PENDING, with a fresh attempt
/// budget. CONFLICT for tasks in any other state.
pub async fn retry_task(
    state: &AppState,
    connections: &impl Connections,
    principal: &Principal,
    id: &str,
) -> Result<Task, ApiError> {
    principal.check_may_write()?;
    let id = parse_task_id(id)?;
    let mut conn = connections.connection().await?;
    let outcome = store::retry(&mut conn, &principal.scope(), id).await;
    let task = settle(id, outcome, "only FAILED or CANCELLED tasks can be retried")?;
    state.publish(TaskEventType::Updated, id);
    Ok(task)
}

/// Deletes a task and returns its id; CONFLICT while a worker is running it.
pub async fn delete_task(
    state: &AppState,
    connections: &impl Connections,
    principal: &Principal,
    id: &str,
) -> Result<i64, ApiError> {
    principal.check_may_write()?;
    let id = parse_task_id(id)?;
    let mut conn = connections.connection().await?;
    let outcome = store::delete(&mut conn, &principal.scope(), id).await;
    let deleted = settle(id, outcome, "cancel it first, or wait for it to finish")?;
    state.publish(TaskEventType::Deleted, deleted);
    Ok(deleted)
}

/// The result of a guarded change to task `id`: its value, NOT_FOUND, or
/// CONFLICT explained by `action`.
fn settle<T>(
    id: i64,
    outcome: QueryResult<Outcome<T>>,
    action: &'static str,
) -> Result<T, ApiError> {
    match outcome? {
        Outcome::Done(value) => Ok(value),
        Outcome::NotFound => Err(ApiError::NotFound(id)),
        Outcome::WrongState(status) => Err(ApiError::Conflict { id, status, action }),
        Outcome::Invalid(invalid) => Err(ApiError::from(invalid)),
    }
}
