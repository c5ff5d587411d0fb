//! Live updates: a task's changes, every change, as they are heard from the
//! event backbone (`events::EventHub`). Subscriptions read rows from the pool
//! only to start; after that the hub reads each changed row once for all.

use std::sync::Arc;

use async_graphql::{Context, ID, SimpleObject, Subscription};
use futures_util::Stream;
use futures_util::stream::{self, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use crate::app::AppState;
use crate::error::ApiError;
use crate::events::{TaskEventType, TaskWatch, Watched};
use crate::graphql::principal;
use crate::graphql::types::{TaskFilterInput, TaskNode};
use crate::tasks::listing::FilterFields;
use crate::tasks::validation::parse_task_id;
use crate::tasks::{Task, store};

/// A change to a task, as `taskEvents` reports it.
#[derive(SimpleObject)]
pub struct TaskEvent {
    /// What happened.
    #[graphql(name = "type")]
    kind: TaskEventType,
    /// The task after the change; on DELETED, its last state.
    task: TaskNode,
}

/// The subscriptions on tasks' states.
#[derive(Default)]
pub struct TaskSubscriptions;

/// Whether a task has reached a state it leaves only by `retryTask`.
fn is_final(task: &Task) -> bool {
    task.status.is_final()
}

/// Where a `taskUpdated` stream is.
enum Following {
    /// The state read at the start, not yet sent.
    First(TaskWatch, Task),
    /// Sent `last`; waiting for the next change.
    Watching(TaskWatch, Task),
    Done,
}

#[Subscription]
impl TaskSubscriptions {
    /// The task as it is now, then again after every change to it. Completes
    /// after a final status (SUCCEEDED, FAILED, CANCELLED), or once the task
    /// is deleted (after sending its last state). NOT_FOUND if there is no
    /// such task (or it is another tenant's). A subscriber slower than the changes gets the latest state,
    /// not every state in between.
    async fn task_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task's id.")] id: ID,
    ) -> async_graphql::Result<impl Stream<Item = TaskNode> + use<>> {
        let id = parse_task_id(&id).map_err(ApiError::from)?;
        let scope = principal(ctx)?.scope();
        let state = ctx.data::<AppState>()?;
        // Watch before reading, so no change between the two is missed. A
        // task's tenant never changes: once the read finds it within the
        // scope, every later state of it is too.
        let watch = state.events().watch_task(id);
        let mut conn = state.db().await?;
        let task = store::find(&mut conn, &scope, id)
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::NotFound(id))?;
        drop(conn);
        Ok(stream::unfold(
            Following::First(watch, task),
            |following| async move {
                match following {
                    Following::First(watch, task) => {
                        let next = if is_final(&task) {
                            Following::Done
                        } else {
                            Following::Watching(watch, task.clone())
                        };
                        Some((TaskNode(task), next))
                    }
                    Following::Watching(mut watch, last) => loop {
                        match watch.next().await? {
                            Watched::Current(task) => {
                                // The hub may hold a state older than the
                                // one read at the start.
                                if task.updated_at < last.updated_at || *task == last {
                                    continue;
                                }
                                let task = Arc::unwrap_or_clone(task);
                                let next = if is_final(&task) {
                                    Following::Done
                                } else {
                                    Following::Watching(watch, task.clone())
                                };
                                return Some((TaskNode(task), next));
                            }
                            Watched::Deleted(task) => {
                                let task = Arc::unwrap_or_clone(task);
                                if task == last {
                                    return None;
                                }
                                return Some((TaskNode(task), Following::Done));
                            }
                        }
                    },
                    Following::Done => None,
                }
            },
        ))
    }

    /// Every change to any task that matches the filter (all tasks without
    /// one; only its own tenant's for a token that is not an admin's): created, updated (claimed, retried, finished, cancelled,
    /// changed) and deleted, for dashboards. A subscriber thousands of events
    /// behind skips the oldest it has not read.
    async fn task_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which tasks to report on.")] filter: Option<TaskFilterInput>,
    ) -> async_graphql::Result<impl Stream<Item = TaskEvent> + use<>> {
        let filter = FilterFields::from(filter.unwrap_or_default())
            .into_filter()
            .map_err(ApiError::from)?;
        let scope = principal(ctx)?.scope();
        let changes = ctx.data::<AppState>()?.events().all_changes();
        Ok(stream::unfold(changes, move |mut changes| {
            let filter = filter.clone();
            let scope = scope.clone();
            async move {
                loop {
                    match changes.recv().await {
                        Ok(event) if scope.contains(&event.task) && filter.matches(&event.task) => {
                            let event = TaskEvent {
                                kind: event.kind,
                                task: TaskNode(Arc::unwrap_or_clone(event.task)),
                            };
                            return Some((event, changes));
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(skipped)) => {
                            tracing::warn!(skipped, "a taskEvents subscriber fell behind");
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        })
        .boxed())
    }
}
