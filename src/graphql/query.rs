//! Reading tasks: one by id, or a filtered, ordered, paged list.

use async_graphql::{Context, ID, Object};

use crate::app::AppState;
use crate::error::ApiError;
use crate::graphql::budget;
use crate::graphql::connection::TaskConnection;
use crate::graphql::types::{
    ModelInfo, TaskFilterInput, TaskNode, TaskOrderInput, TaskStats, is_writable_instant,
    parse_task_id,
};
use crate::tasks::listing::{
    Cursor, CursorError, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageRequest, TaskOrder, TaskOrderField,
};
use crate::tasks::{TaskStatus, store};

/// The queries.
#[derive(Default)]
pub struct QueryRoot;

/// Reading tasks.
#[Object(name = "Query")]
impl QueryRoot {
    /// One task by id; null when no task has that id.
    async fn task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task's id.")] id: ID,
    ) -> async_graphql::Result<Option<TaskNode>> {
        let id = parse_task_id(&id)?;
        let mut conn = budget::connection(ctx).await?;
        let task = store::find(&mut conn, id).await.map_err(ApiError::from)?;
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
        let order = order_by.map(TaskOrder::from).unwrap_or_default();
        let filter = filter.unwrap_or_default().into_filter()?;
        let page = page_request(first, after, last, before, order)?;

        // The probes for rows beyond the cursors serve only these two fields.
        let page_info = ctx.look_ahead().field("pageInfo");
        let wants_page_info =
            page_info.field("hasPreviousPage").exists() || page_info.field("hasNextPage").exists();
        let mut conn = budget::connection(ctx).await?;
        let page = store::list(&mut conn, &filter, order, page, wants_page_info)
            .await
            .map_err(ApiError::from)?;

        Ok(TaskConnection::new(page, order.field, filter))
    }

    /// How many tasks are in each state, and how long the oldest due task has
    /// waited. Cheap however many tasks there are (counters kept by triggers).
    #[graphql(complexity = "super::TASK_STATS_COST + child_complexity")]
    async fn task_stats(&self, ctx: &Context<'_>) -> async_graphql::Result<TaskStats> {
        let mut conn = budget::connection(ctx).await?;
        let stats = store::stats(&mut conn).await.map_err(ApiError::from)?;
        let oldest_pending_age_seconds = (stats.count(TaskStatus::Pending) > 0)
            .then(|| stats.oldest_due_age_seconds.unwrap_or(0.0));
        Ok(TaskStats {
            pending: stats.count(TaskStatus::Pending),
            running: stats.count(TaskStatus::Running),
            succeeded: stats.count(TaskStatus::Succeeded),
            failed: stats.count(TaskStatus::Failed),
            cancelled: stats.count(TaskStatus::Cancelled),
            oldest_pending_age_seconds,
        })
    }

    /// The models this deployment can run, and the provider of each.
    async fn models(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ModelInfo>> {
        let state = ctx.data::<AppState>()?;
        Ok(state
            .router()
            .models()
            .into_iter()
            .map(|model| ModelInfo {
                name: model.name,
                provider: model.provider,
            })
            .collect())
    }
}

/// Checks the paging arguments and turns them into a [`PageRequest`].
fn page_request(
    first: Option<i32>,
    after: Option<String>,
    last: Option<i32>,
    before: Option<String>,
    order: TaskOrder,
) -> Result<PageRequest, ApiError> {
    let size = |name: &str, n: i32| -> Result<i64, ApiError> {
        let n = i64::from(n);
        if !(0..=MAX_PAGE_SIZE).contains(&n) {
            return Err(ApiError::bad_input(
                name,
                format!("must be between 0 and {MAX_PAGE_SIZE}, got {n}"),
            ));
        }
        Ok(n)
    };
    let cursor = |name: &str, text: Option<String>| -> Result<Option<Cursor>, ApiError> {
        text.map(|text| {
            let cursor = Cursor::decode(&text, order.field)
                .map_err(|e| ApiError::bad_input(name, e.to_string()))?;
            // A time no task can have (forged, not issued) is refused here
            // rather than failing in the database. (A priority out of range
            // is harmless: it compares as the nearest one.)
            let in_range = match cursor.field {
                TaskOrderField::Priority => true,
                TaskOrderField::CreatedAt | TaskOrderField::UpdatedAt => {
                    cursor.key_as_timestamp().is_some_and(is_writable_instant)
                }
            };
            if in_range {
                Ok(cursor)
            } else {
                Err(ApiError::bad_input(
                    name,
                    CursorError::Malformed.to_string(),
                ))
            }
        })
        .transpose()
    };
    let (limit, from_end) = match (first, last) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_input(
                "last",
                "give `first` or `last`, not both",
            ));
        }
        (Some(first), None) => (size("first", first)?, false),
        (None, Some(last)) => (size("last", last)?, true),
        // `before` alone pages backward from it; nothing pages forward from the start.
        (None, None) => (DEFAULT_PAGE_SIZE, before.is_some() && after.is_none()),
    };
    Ok(PageRequest {
        after: cursor("after", after)?,
        before: cursor("before", before)?,
        limit,
        from_end,
    })
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
