//! Changing tasks: create (one or many), update, delete. Each resolver hands its arguments
//! to the operation in [`crate::service`] that both API surfaces share.

use async_graphql::{Context, ID, Object};

use crate::app::AppState;
use crate::graphql::budget::RequestBudget;
use crate::graphql::principal;
use crate::graphql::types::{CreateTaskInput, TaskNode, UpdateTaskInput};
use crate::service;

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
        let state = ctx.data::<AppState>()?;
        let task =
            service::create_task(state, &RequestBudget(ctx), principal(ctx)?, input.into()).await?;
        Ok(TaskNode(task))
    }

    /// Queues 1 to 1,000 new tasks at once, all or none: if any input is bad
    /// (its error names it, e.g. `inputs.3.prompt`), none is created. Returns
    /// the tasks in the order given. An input whose `idempotencyKey` was used
    /// before returns that task in its place; a key given twice in the batch
    /// makes one task, returned in both places.
    ///
    /// Each selected field counts once per input toward the request's
    /// complexity limit: 1,000 inputs leave room for four fields of each task
    /// (`id` alone is enough to follow them).
    #[graphql(complexity = "batch_complexity(inputs.len(), child_complexity)")]
    async fn create_tasks(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The tasks to create, 1 to 1,000.")] inputs: Vec<CreateTaskInput>,
    ) -> async_graphql::Result<Vec<TaskNode>> {
        let state = ctx.data::<AppState>()?;
        let fields = inputs.into_iter().map(Into::into).collect();
        let tasks =
            service::create_tasks(state, &RequestBudget(ctx), principal(ctx)?, fields).await?;
        Ok(tasks.into_iter().map(TaskNode).collect())
    }

    /// Changes a task that is still PENDING; CONFLICT once a worker has taken it.
    async fn update_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task's id.")] id: ID,
        #[graphql(desc = "The fields to change.")] input: UpdateTaskInput,
    ) -> async_graphql::Result<TaskNode> {
        let state = ctx.data::<AppState>()?;
        let task = service::update_task(
            state,
            &RequestBudget(ctx),
            principal(ctx)?,
            &id,
            input.into(),
        )
        .await?;
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
        let state = ctx.data::<AppState>()?;
        let task = service::cancel_task(state, &RequestBudget(ctx), principal(ctx)?, &id).await?;
        Ok(TaskNode(task))
    }

    /// Queues a FAILED or CANCELLED task again as PENDING, with a fresh attempt
    /// budget. CONFLICT for tasks in any other state.
    async fn retry_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task's id.")] id: ID,
    ) -> async_graphql::Result<TaskNode> {
        let state = ctx.data::<AppState>()?;
        let task = service::retry_task(state, &RequestBudget(ctx), principal(ctx)?, &id).await?;
        Ok(TaskNode(task))
    }

    /// Deletes a task and returns its id; CONFLICT while a worker is running it.
    async fn delete_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task's id.")] id: ID,
    ) -> async_graphql::Result<ID> {
        let state = ctx.data::<AppState>()?;
        let deleted =
            service::delete_task(state, &RequestBudget(ctx), principal(ctx)?, &id).await?;
        Ok(ID(deleted.to_string()))
    }
}

/// The cost of `createTasks` (see [`super::MAX_COMPLEXITY`]): 1 for the
/// statement, and the fields under it once per task returned.
///
/// Counted for at most [`service::MAX_BATCH_TASKS`] inputs: a longer list
/// creates nothing, and is better told so (BAD_USER_INPUT on `inputs`) than
/// that it is too complex.
fn batch_complexity(inputs: usize, child_complexity: usize) -> usize {
    let returned = inputs.min(service::MAX_BATCH_TASKS);
    1usize.saturating_add(returned.saturating_mul(child_complexity))
}
