//! Reading tasks: one by id, a page of the list, the counts by state, and the
//! models this deployment serves.

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::providers::routing::ModelInfo;
use crate::service::Connections;
use crate::tasks::listing::{FilterFields, Page, PageRequest, TaskFilter, TaskOrder};
use crate::tasks::store::{self, Stats};
use crate::tasks::validation::parse_task_id;
use crate::tasks::{Scope, Task};

/// The task with id `id`, or `None` when no task has it.
pub async fn find_task(
    connections: &impl Connections,
    principal: &Principal,
    id: &str,
) -> Result<Option<Task>, ApiError> {
    find(connections, principal, parse_task_id(id)?).await
}

/// The task with id `id`, or NOT_FOUND.
pub async fn get_task(
    connections: &impl Connections,
    principal: &Principal,
    id: &str,
) -> Result<Task, ApiError> {
    let id = parse_task_id(id)?;
    find(connections, principal, id)
        .await?
        .ok_or(ApiError::NotFound(id))
}

async fn find(
    connections: &impl Connections,
    principal: &Principal,
    id: i64,
) -> Result<Option<Task>, ApiError> {
    let mut conn = connections.connection().await?;
    Ok(store::find(&mut conn, &principal.scope(), id).await?)
}

/// What a client asks of the task list, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct ListArguments {
    pub filter: FilterFields,
    pub order: TaskOrder,
    /// Relay's paging arguments (20 tasks unless `first` or `last` says, 100 at most).
    pub first: Option<i32>,
    pub after: Option<String>,
    pub last: Option<i32>,
    pub before: Option<String>,
    /// Whether to learn if tasks lie before the page too (one more indexed
    /// probe); whether more follow it is known anyway.
    pub wants_page_info: bool,
}

/// A page of the task list, and how it was asked for (a count over the
/// whole list, or the page's cursors, need them).
#[derive(Debug, Clone)]
pub struct TaskList {
    pub page: Page,
    pub order: TaskOrder,
    pub filter: TaskFilter,
    /// Whose tasks were listed: a count over the list counts only these.
    pub scope: Scope,
}

/// One keyset page of the filtered, ordered task list.
pub async fn list_tasks(
    connections: &impl Connections,
    principal: &Principal,
    arguments: ListArguments,
) -> Result<TaskList, ApiError> {
    let ListArguments {
        filter,
        order,
        first,
        after,
        last,
        before,
        wants_page_info,
    } = arguments;
    let filter = filter.into_filter()?;
    let request = PageRequest::from_arguments(first, after, last, before, order)?;
    let scope = principal.scope();
    let mut conn = connections.connection().await?;
    let page = store::list(&mut conn, &scope, &filter, order, request, wants_page_info).await?;
    Ok(TaskList {
        page,
        order,
        filter,
        scope,
    })
}

/// How many tasks are in each state, and how long the oldest due task has
/// waited (see [`Stats::oldest_pending_age_seconds`]).
pub async fn task_stats(
    connections: &impl Connections,
    principal: &Principal,
) -> Result<Stats, ApiError> {
    let mut conn = connections.connection().await?;
    Ok(store::stats(&mut conn, &principal.scope()).await?)
}

/// The models this deployment can run, and the provider of each.
pub fn models(state: &AppState) -> Vec<ModelInfo> {
    state.router().models()
}
