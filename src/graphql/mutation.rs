//! Changing tasks: create, update, delete.

use async_graphql::{Context, ID, Object};
use diesel::QueryResult;

use crate::app::AppState;
use crate::error::ApiError;
use crate::events::TaskEventType;
use crate::graphql::budget;
use crate::graphql::types::{
    CreateTaskInput, TaskNode, UpdateTaskInput, check_instant, parse_task_id,
};
use crate::tasks::store::{self, Outcome};
use crate::tasks::validation::TaskFields;

/// The mutations.
#[derive(Default)]
pub struct MutationRoot;

/// Creating, changing and deleting tasks.
#[Object(name = "Mutation")]
impl MutationRoot {
    /// Queues a new task. It starts PENDING.
    async fn create_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task to create.")] input: CreateTaskInput,
    ) -> async_graphql::Result<TaskNode> {
        if let Some(run_at) = input.run_at {
            check_instant("runAt", run_at)?;
        }
        let new_task = TaskFields::from(input)
            .into_new_task()
            .map_err(ApiError::from)?;
        let state = ctx.data::<AppState>()?;
        state.check_model_is_served(&new_task.model)?;
        let mut conn = budget::connection(ctx).await?;
        let task = store::insert(&mut conn, &new_task)
            .await
            .map_err(ApiError::from)?;
        // Harmless for a delayed task: a worker wakes and finds nothing due.
        state.announce_due_task();
        state.publish(TaskEventType::Created, task.id);
        tracing::info!(task.id = task.id, model = %task.model, "task created");
        Ok(TaskNode(task))
    }

    /// Changes a task that is still PENDING; CONFLICT once a worker has taken it.
    async fn update_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task's id.")] id: ID,
        #[graphql(desc = "The fields to change.")] input: UpdateTaskInput,
    ) -> async_graphql::Result<TaskNode> {
        let id = parse_task_id(&id)?;
        let changes = TaskFields::from(input)
            .into_changes()
            .map_err(ApiError::from)?;
        let state = ctx.data::<AppState>()?;
        if let Some(model) = &changes.model {
            state.check_model_is_served(model)?;
        }
        let mut conn = budget::connection(ctx).await?;
        let outcome = store::update_pending(&mut conn, id, &changes).await;
        let task = settle(id, outcome, "only PENDING tasks can be changed")?;
        state.publish(TaskEventType::Updated, id);
        Ok(TaskNode(task))
    }

    /// Cancels a task. A PENDING task is CANCELLED at once; a RUNNING one is
    /// returned with `cancelRequested` set, and its worker stops the model call
    /// and records CANCELLED within moments. CONFLICT once the task has finished.
    async fn cancel_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task's id.")] id: ID,
    ) -> async_graphql::Result<TaskNode> {
        let id = parse_task_id(&id)?;
        let mut conn = budget::connection(ctx).await?;
        let outcome = store::cancel(&mut conn, id).await;
        let task = settle(
            id,
            outcome,
            "only PENDING or RUNNING tasks can be cancelled",
        )?;
        ctx.data::<AppState>()?.publish(TaskEventType::Updated, id);
        Ok(TaskNode(task))
    }

    /// Queues a FAILED or CANCELLED task again as PENDING, with a fresh attempt
    /// budget. CONFLICT for tasks in any other state.
    async fn retry_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task's id.")] id: ID,
    ) -> async_graphql::Result<TaskNode> {
        let id = parse_task_id(&id)?;
        let mut conn = budget::connection(ctx).await?;
        let outcome = store::retry(&mut conn, id).await;
        let task = settle(id, outcome, "only FAILED or CANCELLED tasks can be retried")?;
        ctx.data::<AppState>()?.publish(TaskEventType::Updated, id);
        Ok(TaskNode(task))
    }

    /// Deletes a task and returns its id; CONFLICT while a worker is running it.
    async fn delete_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task's id.")] id: ID,
    ) -> async_graphql::Result<ID> {
        let id = parse_task_id(&id)?;
        let mut conn = budget::connection(ctx).await?;
        let outcome = store::delete(&mut conn, id).await;
        let deleted = settle(id, outcome, "cancel it first, or wait for it to finish")?;
        ctx.data::<AppState>()?
            .publish(TaskEventType::Deleted, deleted);
        Ok(ID(deleted.to_string()))
    }
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
