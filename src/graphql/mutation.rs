//! Changing tasks: create, update, delete. Each resolver hands its arguments
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
