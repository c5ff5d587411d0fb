//! Reading tasks: one by id, or a filtered, ordered, paged list.

use async_graphql::{Context, ID, Object};

use crate::app::AppState;
use crate::graphql::budget::RequestBudget;
use crate::graphql::connection::TaskConnection;
use crate::graphql::principal;
use crate::graphql::types::{ModelInfo, TaskFilterInput, TaskNode, TaskOrderInput, TaskStats};
use crate::service::{self, ListArguments};
use crate::tasks::listing::{DEFAULT_PAGE_SIZE, FilterFields, MAX_PAGE_SIZE, TaskOrder};

/// The queries.
#[derive(Default)]
pub struct QueryRoot;

/// Reading tasks.
#[Object(name = "Query")]
impl QueryRoot {
    /// One task by id; null when no task has that id (or the task is another
    /// tenant's).
    async fn task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task's id.")] id: ID,
    ) -> async_graphql::Result<Option<TaskNode>> {
        let task = service::find_task(&RequestBudget(ctx), principal(ctx)?, &id).await?;
        Ok(task.map(TaskNode))
    }

    /// Tasks, a page at a time (newest first unless `orderBy` says otherwise).
    ///
    /// Pages forward with `first` and `after`, backward with `last` and
    /// `before`; pages hold 20 tasks unless asked otherwise, 100 at most.
    /// Cursors are keyset positions, so paging stays exact while tasks are added,
    /// and a page deep in the list costs what the first one does.
    #[graphql(complexity = "page_complexity(first, last, child_complexity)")]
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per GraphQL argument"
    )]
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Return the first n tasks after `after` (1 to 100; default 20).")]
        first: Option<i32>,
        #[graphql(desc = "Start after this cursor (an edge's `cursor` or `pageInfo.endCursor`).")]
        after: Option<String>,
        #[graphql(desc = "Return the last n tasks before `before` (1 to 100).")] last: Option<i32>,
        #[graphql(desc = "End before this cursor (an edge's `cursor` or `pageInfo.startCursor`).")]
        before: Option<String>,
        #[graphql(desc = "Only tasks matching every condition given.")] filter: Option<
            TaskFilterInput,
        >,
        #[graphql(desc = "The ordering; newest first by default.")] order_by: Option<
            TaskOrderInput,
        >,
    ) -> async_graphql::Result<TaskConnection> {
        // The probes for rows beyond the cursors serve only these two fields.
        let page_info = ctx.look_ahead().field("pageInfo");
        let wants_page_info =
            page_info.field("hasPreviousPage").exists() || page_info.field("hasNextPage").exists();
        let arguments = ListArguments {
            filter: filter.map(FilterFields::from).unwrap_or_default(),
            order: order_by.map(TaskOrder::from).unwrap_or_default(),
            first,
            after,
            last,
            before,
            wants_page_info,
        };
        let list = service::list_tasks(&RequestBudget(ctx), principal(ctx)?, arguments).await?;
        Ok(TaskConnection::new(list))
    }

    /// How many tasks are in each state, and how long the oldest due task has
    /// waited. Cheap however many tasks there are (counters kept by triggers).
    #[graphql(complexity = "super::TASK_STATS_COST + child_complexity")]
    async fn task_stats(&self, ctx: &Context<'_>) -> async_graphql::Result<TaskStats> {
        let stats = service::task_stats(&RequestBudget(ctx), principal(ctx)?).await?;
        Ok(TaskStats::from(stats))
    }

    /// The models this deployment can run, and the provider of each.
    async fn models(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ModelInfo>> {
        let state = ctx.data::<AppState>()?;
        Ok(service::models(state)
            .into_iter()
            .map(|model| ModelInfo {
                name: model.name,
                provider: model.provider,
            })
            .collect())
    }
}

/// The cost of a page (see [`super::MAX_COMPLEXITY`]): 1 for the list
/// statement, the fields under it once per row of the page, and each
/// `totalCount` once. `child_complexity` carries the counts in its high half
/// (see [`super::TOTAL_COUNT_MARK`]) and the fields in its low half.
fn page_complexity(first: Option<i32>, last: Option<i32>, child_complexity: usize) -> usize {
    let size = first
        .or(last)
        .map_or(DEFAULT_PAGE_SIZE, i64::from)
        .clamp(1, MAX_PAGE_SIZE);
    let size = usize::try_from(size).unwrap_or(1);
    let counts = child_complexity / super::TOTAL_COUNT_MARK;
    let row_fields = child_complexity % super::TOTAL_COUNT_MARK;
    1usize
        .saturating_add(size.saturating_mul(row_fields))
        .saturating_add(counts.saturating_mul(super::TOTAL_COUNT_COST))
}
