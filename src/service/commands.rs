//! Changing tasks: create, update, cancel, retry, delete. Each change is
//! announced to every process's subscribers once it has committed.

use diesel::QueryResult;
use diesel_async::AsyncConnection;

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::events::TaskEventType;
use crate::service::Connections;
use crate::tasks::Task;
use crate::tasks::store::{self, Outcome};
use crate::tasks::validation::{TaskFields, parse_task_id};

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
    let (task, created) = if crate::tenants::is_limited(&mut conn, &new_task.tenant).await? {
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
